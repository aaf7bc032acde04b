"""Figures from a sweep's results.csv (written by `seqmix sweep`).

results.csv has a row per run: `run`, one column per grid key, `status`, then the
results (best_valid_accuracy, ..., state_bytes). Only rows with status `done` are
plotted; the others (failed, or not yet run in a sweep still going) are listed.

Zoology's layout (the defaults): x = model.d_model, one panel per data.seq_len, one line
per model.mixer.type, and each point the best over the remaining grid keys (the
learning rates), as Zoology's Figure 2 reports the best learning rate per cell.
The Based paper's layout: accuracy against recurrent state size in bytes, log x axis,
one curve per mixer (its points are the widths), one panel per seq_len.
"""
import csv
import math
import os
import textwrap

from seqmix_plot.common import (PlotError, colours_for, label, save, series_id, setup_matplotlib, short,
                                value_name)

DEFAULT_X = "model.d_model"
DEFAULT_PANEL = "data.seq_len"
DEFAULT_LINE = "model.mixer.type"


class Results:
    def __init__(self, path, columns, grid_keys, rows):
        self.path = path
        self.columns = columns
        self.grid_keys = grid_keys
        self.rows = rows  # list of dict column -> str

    def done(self):
        return [r for r in self.rows if r.get("status") == "done"]


def read_results(path):
    """Reads results.csv (or the sweep directory holding it)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.csv")
    if not os.path.isfile(path):
        raise PlotError(f"{path}: no such file (a sweep directory holds the results.csv that `seqmix sweep` writes)")
    with open(path, newline="") as f:
        reader = csv.reader(f)
        try:
            columns = next(reader)
        except StopIteration:
            raise PlotError(f"{path}: the file is empty") from None
        if "status" not in columns or columns[:1] != ["run"]:
            raise PlotError(f"{path}: not a seqmix results.csv (expected the columns run, <grid keys>, status, ...; "
                            f"found {', '.join(columns)})")
        rows = []
        for line_no, values in enumerate(reader, start=2):
            if not values:
                continue
            if len(values) != len(columns):
                raise PlotError(f"{path}:{line_no}: {len(values)} fields, the header has {len(columns)}")
            rows.append(dict(zip(columns, values)))
    if not rows:
        raise PlotError(f"{path}: the sweep has no runs")
    return Results(path, columns, columns[1:columns.index("status")], rows)


def resolve_key(results, name, option):
    """A column by its full name (model.d_model) or its last part (d_model)."""
    if name in results.columns:
        return name
    matches = [c for c in results.columns if c.endswith("." + name)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise PlotError(f"{results.path}: {option} '{name}' matches several columns ({', '.join(matches)}); "
                        "give the full key")
    raise PlotError(f"{results.path}: {option} '{name}' is not a column; the grid keys are "
                    f"{', '.join(results.grid_keys) or '(none)'} and the results are "
                    f"{', '.join(results.columns[results.columns.index('status') + 1:])}")


def select_rows(results, where):
    """The rows whose columns equal the given values ("d_model=64"; numbers compare as numbers)."""
    rows = results.rows
    for w in where:
        if "=" not in w:
            raise PlotError(f"--where {w}: expected KEY=VALUE, e.g. --where d_model=64")
        key, value = w.split("=", 1)
        col = resolve_key(results, key, "--where")
        num = as_number(value)
        rows = [r for r in rows if r[col] == value or (num is not None and as_number(r[col]) == num)]
    return rows


def as_number(s):
    try:
        return float(s)
    except ValueError:
        return None


def ordered_values(rows, key):
    """The values of key in first-seen order, numbers sorted numerically."""
    seen = []
    for r in rows:
        if r[key] not in seen:
            seen.append(r[key])
    if all(as_number(v) is not None for v in seen):
        seen.sort(key=as_number)
    return seen


def determined(rows, key, by_keys):
    """True when key has one value per combination of by_keys (a key that moves with them, like
    max_position_embeddings tied to the mixer type, or K tied to L)."""
    seen = {}
    for r in rows:
        cell = tuple(r[k] for k in by_keys if k)
        if seen.setdefault(cell, r[key]) != r[key]:
            return False
    return True


def choose_keys(results, x=None, panel=None, line=None):
    """The keys of the layout: given ones must exist; defaults fall back when the sweep lacks them."""
    def pick(given, default, option):
        if given is not None:
            return None if given == "none" else resolve_key(results, given, option)
        return default if default in results.grid_keys else None

    x_key = pick(x, DEFAULT_X, "--x")
    panel_key = pick(panel, DEFAULT_PANEL, "--panel")
    line_key = pick(line, DEFAULT_LINE, "--line")
    if x_key is None:
        # Another sweep: the first grid key with more than one value that is not already used.
        done = results.done() or results.rows
        for k in results.grid_keys:
            if k not in (panel_key, line_key) and len(ordered_values(done, k)) > 1 and not determined(
                    done, k, (panel_key, line_key)):
                x_key = k
                break
        if x_key is None:
            x_key = next((k for k in results.grid_keys if k not in (panel_key, line_key)), results.grid_keys[0])
    used = [k for k in (x_key, panel_key, line_key) if k is not None]
    if len(set(used)) != len(used):
        raise PlotError(f"{results.path}: --x, --panel and --line must be different keys (got {', '.join(used)})")
    return x_key, panel_key, line_key


def best_cells(rows, metric, keys):
    """Per combination of keys: the row with the best metric (highest, or lowest for a loss)."""
    lower_is_better = "loss" in metric
    best = {}
    for r in rows:
        v = as_number(r[metric])
        if v is None or math.isnan(v):
            continue
        cell = tuple(r[k] if k else "" for k in keys)
        if cell not in best or (v < as_number(best[cell][metric]) if lower_is_better else v > as_number(best[cell][metric])):
            best[cell] = r
    return best


def task_name(results):
    """The task of the sweep's runs, from the first finished run's config.yaml (for titles)."""
    if "data.task" in results.grid_keys and len(ordered_values(results.rows, "data.task")) > 1:
        return "recall tasks"
    try:
        import yaml
    except ImportError:
        return None
    for r in results.done():
        cfg = os.path.join(os.path.dirname(results.path), r["run"], "config.yaml")
        if os.path.isfile(cfg):
            try:
                with open(cfg) as f:
                    data = yaml.safe_load(f).get("data", {})
                return data.get("task") if data.get("kind", "recall") == "recall" else "text"
            except Exception:
                return None
    return None


def report_skipped(results, out):
    skipped = [r for r in results.rows if r.get("status") != "done"]
    if skipped:
        by = {}
        for r in skipped:
            by.setdefault(r.get("status") or "unknown", []).append(r["run"])
        for status, runs in by.items():
            out.write(f"{len(runs)} of {len(results.rows)} runs {status}, not plotted: {', '.join(runs[:5])}"
                      f"{' ...' if len(runs) > 5 else ''}\n")


def panel_grid(plt, n, panel_width=4.2):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel_width * cols, 3.6 * rows), sharey=True, squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    return fig, flat[:n]


def set_x_axis(ax, key, values, log_base=None):
    """Ticks at the swept values (a sweep has few), on a log axis when they span a wide range."""
    nums = [as_number(v) for v in values]
    if log_base:
        ax.set_xscale("log", base=log_base)
        ax.minorticks_off()
    if len(values) <= 12:
        ax.set_xticks(nums)
        ax.set_xticklabels(values)
    ax.set_xlabel(label(key))


def plot_sweep(results, metric="best_valid_accuracy", x=None, panel=None, line=None, out_dir=None,
               formats=("png", "svg"), title=None, log=None):
    """Accuracy (or another result column) against a grid key; returns (paths, plotted data)."""
    metric = resolve_key(results, metric, "--metric")
    x_key, panel_key, line_key = choose_keys(results, x, panel, line)
    rows = results.done()
    if not rows:
        raise PlotError(f"{results.path}: no run finished (statuses: "
                        f"{', '.join(sorted(set(r['status'] for r in results.rows)))}); nothing to plot")
    # The keys a point is the best over; those tied to the layout's keys (K to L) have one value per point.
    over = [k for k in results.grid_keys
            if k not in (x_key, panel_key, line_key) and not determined(rows, k, (x_key, panel_key, line_key))]
    cells = best_cells(rows, metric, (panel_key, line_key, x_key))
    panels = ordered_values(rows, panel_key) if panel_key else [""]
    lines = ordered_values(rows, line_key) if line_key else [""]
    xs = ordered_values(rows, x_key)
    numeric_x = all(as_number(v) is not None for v in xs)
    if log is None:
        log = numeric_x and min(as_number(v) for v in xs) > 0 and max(as_number(v) for v in xs) >= 4 * min(
            as_number(v) for v in xs)

    plt = setup_matplotlib()
    fig, axes = panel_grid(plt, len(panels), 4.2 if numeric_x else max(4.2, 1.6 * len(xs)))
    colours = colours_for(line_key, lines)
    data = {"x": x_key, "panel": panel_key, "line": line_key, "metric": metric, "best_over": over, "series": []}
    handles = {}
    for ax, pv in zip(axes, panels):
        for lv in lines:
            pts = [(xv, cells[(pv, lv, xv)]) for xv in xs if (pv, lv, xv) in cells]
            if not pts:
                continue
            py = [as_number(r[metric]) for _, r in pts]
            name = value_name(line_key, lv) if line_key else metric
            if numeric_x:
                px = [as_number(xv) for xv, _ in pts]
                style = dict(marker="o")
            else:
                # Categories (tasks, say) are not a continuum: points side by side, no lines.
                dodge = (lines.index(lv) - (len(lines) - 1) / 2) * min(0.12, 0.6 / len(lines))
                px = [xs.index(xv) + dodge for xv, _ in pts]
                style = dict(marker="o", linestyle="none", markersize=7)
            (h,) = ax.plot(px, py, color=colours[lv], label=name, gid=series_id(panel_key, pv, line_key, lv), **style)
            handles[lv] = h
            data["series"].append({"panel": pv, "line": lv, "points": [
                {"x": xv, "y": as_number(r[metric]), "run": r["run"], **{k: r[k] for k in over}} for xv, r in pts]})
        if panel_key:
            ax.set_title(f"{short(panel_key)} = {pv}")
        if numeric_x:
            set_x_axis(ax, x_key, xs, 2 if log else None)
        else:
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels([value_name(x_key, v) for v in xs], rotation=15 if max(map(len, xs)) > 12 else 0)
            ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_xlabel(label(x_key))
        if "accuracy" in metric:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(label(metric))
    if line_key:
        fig.legend([handles[v] for v in lines if v in handles], [value_name(line_key, v) for v in lines if v in handles],
                   title=label(line_key), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    task = task_name(results)
    fig.suptitle(wrap(title or (f"{task.upper() if task == 'mqar' else task or 'sweep'}: {short(metric).replace('_', ' ')} "
                                f"vs {short(x_key)}" + (f" (best over {', '.join(short(k) for k in over)})" if over else "")),
                      len(panels)))
    fig.tight_layout()
    paths = save(fig, out_dir, f"{metric}_vs_{short(x_key)}", formats)
    plt.close(fig)
    return paths, data


def wrap(title, n_panels):
    """A title no wider than its panels (about 55 characters a panel)."""
    return textwrap.fill(title, width=55 * min(n_panels, 3))


def state_bytes(row):
    v = as_number(row.get("state_bytes", ""))
    if v is None:  # results.csv of an older seqmix: state_size floats of 4 bytes
        s = as_number(row.get("state_size", ""))
        v = None if s is None else 4 * s
    return v


def plot_state(results, metric="best_valid_accuracy", x=None, panel=None, line=None, out_dir=None,
               formats=("png", "svg"), title=None):
    """Accuracy against recurrent state size (bytes, log axis), a curve per mixer, a panel per seq_len."""
    metric = resolve_key(results, metric, "--metric")
    if "state_bytes" not in results.columns and "state_size" not in results.columns:
        raise PlotError(f"{results.path}: no state_bytes or state_size column, so no state-size figure")
    x_key, panel_key, line_key = choose_keys(results, x, panel, line)
    rows = [r for r in results.done() if state_bytes(r) is not None]
    if not rows:
        raise PlotError(f"{results.path}: no finished run has a state size; nothing to plot")
    # A point per (panel, line, x) cell, best over the rest: its state is that cell's.
    cells = best_cells(rows, metric, (panel_key, line_key, x_key))
    panels = ordered_values(rows, panel_key) if panel_key else [""]
    lines = ordered_values(rows, line_key) if line_key else [""]
    plt = setup_matplotlib()
    fig, axes = panel_grid(plt, len(panels))
    colours = colours_for(line_key, lines)
    data = {"x": "state_bytes", "panel": panel_key, "line": line_key, "metric": metric, "series": []}
    handles = {}
    for ax, pv in zip(axes, panels):
        for lv in lines:
            pts = sorted(((state_bytes(r), r) for (p, l, _), r in cells.items() if p == pv and l == lv),
                         key=lambda t: t[0])
            if not pts:
                continue
            # A curve joins widths of one mixer; points of different categories (tasks) stay unjoined.
            joined = all(as_number(r[x_key]) is not None for _, r in pts)
            (h,) = ax.plot([b for b, _ in pts], [as_number(r[metric]) for _, r in pts], marker="o",
                           linestyle="-" if joined else "none", color=colours[lv],
                           gid=series_id("state", panel_key, pv, line_key, lv))
            handles[lv] = h
            data["series"].append({"panel": pv, "line": lv, "points": [
                {"state_bytes": b, "y": as_number(r[metric]), "run": r["run"], x_key: r[x_key]} for b, r in pts]})
        ax.set_xscale("log")
        ax.set_xlabel("recurrent state (bytes per sequence)")
        if panel_key:
            ax.set_title(f"{short(panel_key)} = {pv}")
        if "accuracy" in metric:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(label(metric))
    if line_key:
        fig.legend([handles[v] for v in lines if v in handles], [value_name(line_key, v) for v in lines if v in handles],
                   title=label(line_key), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    task = task_name(results)
    fig.suptitle(wrap(title or (f"{task.upper() if task == 'mqar' else task or 'sweep'}: {short(metric).replace('_', ' ')} "
                                f"vs recurrent state size (float32, all layers; points: {short(x_key)})"), len(panels)))
    fig.tight_layout()
    paths = save(fig, out_dir, f"{metric}_vs_state_bytes", formats)
    plt.close(fig)
    return paths, data


def markdown_table(data):
    """The plotted cells as a table per panel: a row per line, a column per x, best-over values noted."""
    out = []
    xs = []
    for s in data["series"]:
        for p in s["points"]:
            if p["x"] not in xs:
                xs.append(p["x"])
    if all(as_number(v) is not None for v in xs):
        xs.sort(key=as_number)
    panels = []
    for s in data["series"]:
        if s["panel"] not in panels:
            panels.append(s["panel"])
    for pv in panels:
        if data["panel"]:
            out.append(f"{short(data['panel'])} = {pv}\n")
        out.append(f"| {short(data['line']) if data['line'] else ''} | " +
                   " | ".join(f"{short(data['x'])}={x}" for x in xs) + " |")
        out.append("|---|" + "---|" * len(xs))
        for s in data["series"]:
            if s["panel"] != pv:
                continue
            by_x = {p["x"]: p for p in s["points"]}
            cells = []
            for x in xs:
                p = by_x.get(x)
                if p is None:
                    cells.append("-")
                else:
                    note = ", ".join(f"{short(k)} {p[k]}" for k in data["best_over"])
                    cells.append(f"{p['y']:.3f}" + (f" ({note})" if note else ""))
            out.append(f"| {value_name(data['line'], s['line']) if data['line'] else data['metric']} | " +
                       " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
