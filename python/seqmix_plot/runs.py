"""Learning curves from run directories (metrics.jsonl, written by `seqmix train`).

Each line of metrics.jsonl is one log point: step, elapsed_s, train_loss and
train_accuracy (means over the steps since the previous line), and at evaluation points
valid_loss and valid_accuracy. One run: train and valid in two colours. Several runs:
a colour per run, train dashed, valid solid with markers.
"""
import json
import os

from seqmix_plot.common import PlotError, save, series_id, setup_matplotlib


def read_metrics(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise PlotError(f"{run_dir}: no metrics.jsonl (a run directory of `seqmix train` has one, "
                        "a sweep directory has results.csv)")
    points = []
    with open(path) as f:
        lines = f.read().splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError as e:
            if n == len(lines):
                continue  # the last line of a run killed mid-write
            raise PlotError(f"{path}:{n}: not JSON ({e.msg})") from None
    points = [p for p in points if "step" in p]
    if not points:
        raise PlotError(f"{path}: no log points yet (the run has not logged a step)")
    return points


def time_unit(seconds):
    if seconds >= 2 * 3600:
        return 3600.0, "h"
    if seconds >= 2 * 60:
        return 60.0, "min"
    return 1.0, "s"


def run_labels(run_dirs):
    """Directory names, without the key=value parts that all of them share (sweep runs are named
    "type=gla,d_model=64,lr=0.001"), or the longer paths where names repeat."""
    names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    if len(names) > 1 and all("=" in n for n in names):
        parts = [n.split(",") for n in names]
        common = set(parts[0]).intersection(*parts[1:])
        short = [",".join(p for p in ps if p not in common) or n for ps, n in zip(parts, names)]
        if len(set(short)) == len(short):
            return short
    if len(set(names)) == len(names):
        return names
    return [os.path.normpath(d) for d in run_dirs]


def plot_runs(run_dirs, out_dir, formats=("png", "svg"), title=None, name=None):
    """Loss and accuracy against step (top) and wall time (bottom); returns (paths, plotted data)."""
    runs = [(d, read_metrics(d)) for d in run_dirs]
    labels = run_labels(run_dirs)
    plt = setup_matplotlib()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    t_max = max(p.get("elapsed_s", 0.0) for _, pts in runs for p in pts)
    scale, unit = time_unit(t_max)
    single = len(runs) == 1
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    data = {"runs": [], "series": []}
    for k, ((run_dir, pts), lab) in enumerate(zip(runs, labels)):
        data["runs"].append(run_dir)
        for split in ("train", "valid"):
            for what, row in (("loss", 0), ("accuracy", 1)):
                col = f"{split}_{what}"
                sel = [p for p in pts if col in p]
                if not sel:
                    continue
                for xcol, ax in (("step", axes[0][row]), ("elapsed_s", axes[1][row])):
                    xs = [p.get(xcol, 0.0) / (scale if xcol == "elapsed_s" else 1) for p in sel]
                    ys = [p[col] for p in sel]
                    if single:
                        colour = palette[0] if split == "train" else palette[1]
                        legend = split
                    else:
                        colour = palette[k % len(palette)]
                        legend = f"{lab} ({split})"
                    style = dict(linestyle="--", linewidth=1.0, alpha=0.8) if split == "train" and not single else \
                        dict(linestyle="-", linewidth=1.5, marker="o" if split == "valid" else None, markersize=3)
                    ax.plot(xs, ys, color=colour, label=legend, gid=series_id(lab, split, what, xcol), **style)
                    data["series"].append({"run": run_dir, "split": split, "metric": what, "x": xcol, "n": len(xs)})
    for row, what in ((0, "loss"), (1, "accuracy")):
        for r, xlabel in ((0, "training step"), (1, f"wall time ({unit})")):
            ax = axes[r][row]
            ax.set_xlabel(xlabel)
            ax.set_ylabel("cross-entropy loss (nats per token)" if what == "loss" else
                          "accuracy (fraction of labelled tokens)")
            ax.grid(True, alpha=0.3)
            if what == "accuracy":
                ax.set_ylim(-0.02, 1.02)
    handles, legends = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, legends, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2 if single else 1,
                   frameon=False)
    fig.suptitle(title or (f"{labels[0]}: training curves" if single else f"{len(runs)} runs: training curves"))
    fig.tight_layout()
    paths = save(fig, out_dir, name or ("curves" if single else "comparison"), formats)
    plt.close(fig)
    return paths, data
