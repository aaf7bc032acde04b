"""The command line of `seqmix plot` (also `python3 -m seqmix_plot`).

Exit codes: 0 figures written, 2 bad input (the message says what and where),
3 matplotlib missing.
"""
import argparse
import json
import os
import sys

from seqmix_plot.common import MissingMatplotlib, PlotError

FORMATS = ("png", "svg", "pdf")


def parser():
    p = argparse.ArgumentParser(
        prog="seqmix plot",
        description="Figures from a sweep directory (results.csv) or from run directories (metrics.jsonl).",
        epilog="A sweep gives two figures: the metric against --x with a panel per --panel value and a line per "
               "--line value, each point the best over the other grid keys (defaults: Zoology's layout, "
               "x = d_model, panels = seq_len, lines = mixer type, best over the learning rates); and the metric "
               "against recurrent state size in bytes, log axis (the Based paper's layout). One run directory "
               "gives its loss and accuracy curves against step and wall time; several give one comparison figure.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="a sweep directory or results.csv, or run directories")
    p.add_argument("--out", help="output directory (default: PATH/plots for one path, ./plots for several runs)")
    p.add_argument("--format", default="png,svg", help="comma-separated: png, svg, pdf (default: png,svg)")
    p.add_argument("--x", help="sweep: the key on the x axis (default model.d_model); a short name works (d_model)")
    p.add_argument("--panel", help="sweep: a panel per value of this key (default data.seq_len; 'none': one panel)")
    p.add_argument("--line", help="sweep: a line per value of this key (default model.mixer.type; 'none')")
    p.add_argument("--metric", default="best_valid_accuracy",
                   help="sweep: the results.csv column on the y axis (default best_valid_accuracy)")
    p.add_argument("--curves", action="store_true",
                   help="sweep: instead of the sweep figures, compare the learning curves of its runs "
                        "(those that have metrics.jsonl, narrowed by --where)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="sweep: only runs whose KEY column equals VALUE (repeatable; a short key works)")
    p.add_argument("--title", help="figure title")
    p.add_argument("--data", action="store_true",
                   help="also write NAME.json next to each figure: the numbers it was drawn from")
    return p


def formats_of(text):
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise PlotError(f"--format {text}: choose from {', '.join(FORMATS)}")
    return formats


def write_data(paths, data):
    base = os.path.splitext(paths[0])[0] + ".json"
    with open(base, "w") as f:
        json.dump(data, f, indent=1)
    return base


def run(args, out=sys.stdout):
    from seqmix_plot import runs, sweep

    formats = formats_of(args.format)
    for p in args.paths:
        if not os.path.exists(p):
            raise PlotError(f"{p}: no such file or directory")
    is_sweep = [os.path.isfile(p) and p.endswith(".csv") or os.path.isfile(os.path.join(p, "results.csv"))
                for p in args.paths]
    written = []
    if any(is_sweep):
        if len(args.paths) != 1:
            raise PlotError("give one sweep directory at a time (several paths are compared as run directories)")
        results = sweep.read_results(args.paths[0])
        out_dir = args.out or os.path.join(os.path.dirname(results.path), "plots")
        if args.curves:
            rows = sweep.select_rows(results, args.where)
            run_dirs = [os.path.join(os.path.dirname(results.path), r["run"]) for r in rows]
            run_dirs = [d for d in run_dirs if os.path.isfile(os.path.join(d, "metrics.jsonl"))]
            if not run_dirs:
                raise PlotError(f"{results.path}: no run{' matching ' + ' '.join(args.where) if args.where else ''} "
                                "has a metrics.jsonl")
            name = "curves" + "".join("_" + w.replace("=", "-") for w in args.where)
            paths, data = runs.plot_runs(run_dirs, out_dir, formats, title=args.title, name=name)
            written += paths
            if args.data:
                written.append(write_data(paths, data))
            for w in written:
                out.write(f"wrote {w}\n")
            return 0
        kw = dict(metric=args.metric, x=args.x, panel=args.panel, line=args.line, out_dir=out_dir, formats=formats,
                  title=args.title)
        paths, data = sweep.plot_sweep(results, **kw)
        sweep.report_skipped(results, out)
        written += paths
        table = sweep.markdown_table(data)
        table_path = os.path.join(out_dir, os.path.splitext(os.path.basename(paths[0]))[0] + ".md")
        with open(table_path, "w") as f:
            f.write(table + "\n")
        written.append(table_path)
        out.write(table + "\n")
        if args.data:
            written.append(write_data(paths, data))
        if "state_bytes" in results.columns or "state_size" in results.columns:
            kw["title"] = None
            paths, data = sweep.plot_state(results, **kw)
            written += paths
            if args.data:
                written.append(write_data(paths, data))
    else:
        if args.curves or args.where:
            raise PlotError("--curves and --where apply to a sweep directory (one with results.csv)")
        if len(args.paths) == 1:
            out_dir = args.out or os.path.join(args.paths[0], "plots")
        else:
            out_dir = args.out or "plots"
        paths, data = runs.plot_runs(args.paths, out_dir, formats, title=args.title)
        written += paths
        if args.data:
            written.append(write_data(paths, data))
    for w in written:
        out.write(f"wrote {w}\n")
    return 0


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return run(args)
    except PlotError as e:
        sys.stderr.write(f"seqmix plot: {e}\n")
        return 2
    except MissingMatplotlib as e:
        sys.stderr.write(f"seqmix plot: matplotlib is not available to {sys.executable} ({e}); "
                         "on Debian: apt-get install python3-matplotlib\n")
        return 3
