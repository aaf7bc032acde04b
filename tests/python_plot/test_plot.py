"""Tests of python/seqmix_plot: figures from sweeps and runs, and its errors.

Run by ctest (tests/python_plot in CMakeLists.txt) as
    PYTHONPATH=python /usr/bin/python3 -m unittest discover -s tests/python_plot
The sweeps here are written by hand in the format `seqmix sweep` writes (the C++ test
tests/test_sweep.cpp plots a real one), so that every expected value is known.
"""
import csv
import io
import json
import math
import os
import re
import shutil
import tempfile
import unittest

from seqmix_plot import cli, runs, sweep
from seqmix_plot.common import PlotError

MIXERS = ["attention", "linear_attention", "gla", "h3", "mamba"]
LK = [(64, 4), (128, 8), (256, 16)]
WIDTHS = [32, 64, 128]
LRS = ["0.001", "0.003"]
RESULT_COLUMNS = ["status", "best_valid_accuracy", "final_train_loss", "final_valid_loss", "parameters",
                  "state_size", "wall_s", "state_bytes", "steps", "final_valid_accuracy", "early_stopped"]


def accuracy(m, L, d, lr):
    """A made-up but distinct accuracy per run: recall falls with L, rises with d; lr 0.003 wins at small d."""
    base = {"attention": 0.95, "linear_attention": 0.3, "gla": 0.5, "h3": 0.4, "mamba": 0.6}[m]
    a = base * (d / 128) ** 0.3 * (64 / L) ** (0.0 if m == "attention" else 0.5)
    return round(min(1.0, a + (0.01 if (lr == "0.003") == (d < 100) else 0.0)), 4)


def state_floats(m, L, d):
    return {"attention": 2 * d * L, "linear_attention": d * d + d, "gla": 4 * (d // 8) * (d // 4),
            "h3": d * 63 + d * 64, "mamba": 2 * d * 3 + 2 * d * 16}[m] * 2


def write_sweep(dir, fail=lambda m, L, d, lr: False, mixers=MIXERS):
    """results.csv as `seqmix sweep` writes it for the Zoology grid; returns the rows."""
    os.makedirs(dir, exist_ok=True)
    keys = ["model.mixer.type", "model.max_position_embeddings", "data.seq_len", "data.num_kv_pairs",
            "model.d_model", "optimizer.lr"]
    rows = []
    for m in mixers:
        for L, K in LK:
            for d in WIDTHS:
                for lr in LRS:
                    pos = 256 if m == "attention" else 0
                    name = f"type={m},max_position_embeddings={pos},seq_len={L},num_kv_pairs={K},d_model={d},lr={lr}"
                    grid = [m, str(pos), str(L), str(K), str(d), lr]
                    if fail(m, L, d, lr):
                        rows.append([name] + grid + ["failed"] + [""] * 10)
                    else:
                        s = state_floats(m, L, d)
                        a = accuracy(m, L, d, lr)
                        rows.append([name] + grid + ["done", str(a), "1.5", "1.7", "100000", str(s), "12.5",
                                                     str(4 * s), "3000", str(a), "0"])
    with open(os.path.join(dir, "results.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["run"] + keys + RESULT_COLUMNS)
        w.writerows(rows)
    return rows


def series_ids(svg_path):
    with open(svg_path) as f:
        return re.findall(r'id="(series:[^"]*)"', f.read())


def run_cli(argv):
    out = io.StringIO()
    code = cli.run(cli.parser().parse_args(argv), out=out)
    return code, out.getvalue()


class SweepFigures(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="seqmix_plot_test_")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def assert_figure(self, path):
        self.assertTrue(os.path.isfile(path), path)
        self.assertGreater(os.path.getsize(path), 1000, path)
        if path.endswith(".png"):
            with open(path, "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

    def test_zoology_layout_best_over_learning_rates(self):
        write_sweep(self.dir)
        code, out = run_cli([self.dir, "--data"])
        self.assertEqual(code, 0)
        plots = os.path.join(self.dir, "plots")
        for name in ("best_valid_accuracy_vs_d_model", "best_valid_accuracy_vs_state_bytes"):
            for ext in ("png", "svg"):
                self.assert_figure(os.path.join(plots, f"{name}.{ext}"))
            # A line per mixer in a panel per L: 15 series, found in the SVG.
            ids = series_ids(os.path.join(plots, f"{name}.svg"))
            self.assertEqual(len(ids), 15, ids)
            self.assertEqual(len(set(ids)), 15)
        with open(os.path.join(plots, "best_valid_accuracy_vs_d_model.json")) as f:
            data = json.load(f)
        self.assertEqual((data["x"], data["panel"], data["line"]), ("model.d_model", "data.seq_len", "model.mixer.type"))
        # K moves with L, max_position_embeddings with the mixer: only lr is "best over".
        self.assertEqual(data["best_over"], ["optimizer.lr"])
        for s in data["series"]:
            L = int(s["panel"])
            self.assertEqual([p["x"] for p in s["points"]], ["32", "64", "128"])
            for p in s["points"]:
                d = int(p["x"])
                self.assertEqual(p["y"], max(accuracy(s["line"], L, d, lr) for lr in LRS))
                self.assertEqual(p["optimizer.lr"], "0.003" if d < 100 else "0.001")
        # The table printed and written beside the figure has the same numbers.
        self.assertIn("L = 256", out)
        self.assertIn(f"| H3 | {accuracy('h3', 64, 32, '0.003'):.3f} (lr 0.003) |", out)

    def test_state_figure_points_are_widths_sorted_by_bytes(self):
        write_sweep(self.dir)
        paths, data = sweep.plot_state(sweep.read_results(self.dir), out_dir=os.path.join(self.dir, "p"))
        self.assertEqual(len(data["series"]), 15)
        for s in data["series"]:
            xs = [p["state_bytes"] for p in s["points"]]
            self.assertEqual(xs, sorted(xs))
            self.assertEqual(len(xs), 3)
            L = int(s["panel"])
            self.assertEqual(xs, [4 * state_floats(s["line"], L, d) for d in WIDTHS])

    def test_failed_runs_are_skipped_and_the_rest_plotted(self):
        # Every H3 run at L=256 failed, and one attention lr: 14 series; attention's cell
        # is its other learning rate.
        write_sweep(self.dir, fail=lambda m, L, d, lr: (m == "h3" and L == 256) or
                    (m == "attention" and L == 64 and d == 32 and lr == "0.003"))
        code, out = run_cli([self.dir, "--data"])
        self.assertEqual(code, 0)
        self.assertIn("7 of 90 runs failed, not plotted", out)
        plots = os.path.join(self.dir, "plots")
        self.assertEqual(len(series_ids(os.path.join(plots, "best_valid_accuracy_vs_d_model.svg"))), 14)
        self.assertEqual(len(series_ids(os.path.join(plots, "best_valid_accuracy_vs_state_bytes.svg"))), 14)
        with open(os.path.join(plots, "best_valid_accuracy_vs_d_model.json")) as f:
            data = json.load(f)
        att = next(s for s in data["series"] if s["line"] == "attention" and s["panel"] == "64")
        self.assertEqual(att["points"][0]["optimizer.lr"], "0.001")
        with open(os.path.join(plots, "best_valid_accuracy_vs_d_model.md")) as f:
            table = f.read()
        # The L=256 table has no H3 row; the L=64 one has it.
        self.assertNotIn("| H3 |", table.split("L = 256")[1])
        self.assertIn("| H3 |", table.split("L = 128")[0])

    def test_other_keys_and_metric(self):
        write_sweep(self.dir, mixers=["gla", "mamba"])
        code, _ = run_cli([self.dir, "--x", "lr", "--panel", "none", "--line", "type", "--metric",
                           "final_valid_loss", "--format", "svg", "--out", os.path.join(self.dir, "o")])
        self.assertEqual(code, 0)
        o = os.path.join(self.dir, "o")
        self.assertEqual(sorted(f for f in os.listdir(o) if not f.endswith(".md")),
                         ["final_valid_loss_vs_lr.svg", "final_valid_loss_vs_state_bytes.svg"])
        self.assertEqual(len(series_ids(os.path.join(o, "final_valid_loss_vs_lr.svg"))), 2)


    def test_categorical_x_tasks(self):
        # The recall-tasks sweep: x = task (categories), a point per mixer and task.
        with open(os.path.join(self.dir, "results.csv"), "w") as f:
            f.write("run,model.mixer.type,data.task,optimizer.lr," + ",".join(RESULT_COLUMNS) + "\n")
            for m in MIXERS:
                for t in ("associative_recall", "induction_heads", "selective_copying"):
                    for lr in LRS:
                        a = 0.5 + 0.1 * MIXERS.index(m) / 4 + (0.01 if lr == "0.001" else 0)
                        f.write(f"\"type={m},task={t},lr={lr}\",{m},{t},{lr},done,{a},1,1,1000,64,1,256,10,{a},0\n")
        paths, data = sweep.plot_sweep(sweep.read_results(self.dir), x="task", panel="none",
                                       out_dir=os.path.join(self.dir, "p"))
        self.assertEqual(len(series_ids(paths[1])), 5)
        self.assertEqual(data["best_over"], ["optimizer.lr"])
        self.assertTrue(all(p["optimizer.lr"] == "0.001" for s in data["series"] for p in s["points"]))
        with open(paths[1]) as f:
            self.assertIn("recall tasks", f.read())


class SweepErrors(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="seqmix_plot_test_")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def error(self, argv):
        with self.assertRaises(PlotError) as e:
            run_cli(argv)
        return str(e.exception)

    def test_no_results_csv(self):
        msg = self.error([os.path.join(self.dir, "results.csv")])
        self.assertIn("no such file or directory", msg)
        os.makedirs(os.path.join(self.dir, "empty"))
        msg = self.error([os.path.join(self.dir, "empty")])
        self.assertIn("no metrics.jsonl", msg)
        self.assertIn("a sweep directory has results.csv", msg)

    def test_column_that_does_not_exist(self):
        write_sweep(self.dir)
        msg = self.error([self.dir, "--x", "d_state"])
        self.assertIn("--x 'd_state' is not a column", msg)
        self.assertIn("the grid keys are model.mixer.type, model.max_position_embeddings, data.seq_len", msg)
        msg = self.error([self.dir, "--metric", "accuracy"])
        self.assertIn("--metric 'accuracy' is not a column", msg)
        msg = self.error([self.dir, "--x", "seq_len"])
        self.assertIn("--x, --panel and --line must be different keys", msg)

    def test_empty_sweep_and_all_failed(self):
        with open(os.path.join(self.dir, "results.csv"), "w") as f:
            f.write("run,model.d_model," + ",".join(RESULT_COLUMNS) + "\n")
        self.assertIn("the sweep has no runs", self.error([self.dir]))
        write_sweep(self.dir, fail=lambda *a: True)
        self.assertIn("no run finished (statuses: failed); nothing to plot", self.error([self.dir]))

    def test_not_a_results_file_and_bad_format(self):
        path = os.path.join(self.dir, "x.csv")
        with open(path, "w") as f:
            f.write("a,b\n1,2\n")
        self.assertIn("not a seqmix results.csv", self.error([path]))
        write_sweep(self.dir)
        self.assertIn("--format gif: choose from png, svg, pdf", self.error([self.dir, "--format", "gif"]))

    def test_exit_code_and_message_from_main(self):
        err = io.StringIO()
        import sys
        saved, sys.stderr = sys.stderr, err
        try:
            code = cli.main([os.path.join(self.dir, "nothing")])
        finally:
            sys.stderr = saved
        self.assertEqual(code, 2)
        self.assertRegex(err.getvalue(), r"^seqmix plot: .*nothing: no such file or directory")


def write_run(dir, steps=300, eval_every=100, bad_line=None, cut_last=False):
    os.makedirs(dir, exist_ok=True)
    lines = []
    for step in range(10, steps + 1, 10):
        p = {"step": step, "epoch": step / 100, "lr": 1e-3, "train_loss": 5.0 / math.sqrt(step),
             "train_accuracy": min(1.0, step / steps), "tokens_per_s": 1e5, "elapsed_s": step * 0.5}
        if step % eval_every == 0:
            p["valid_loss"] = 5.5 / math.sqrt(step)
            p["valid_accuracy"] = min(1.0, 0.9 * step / steps)
        lines.append(json.dumps(p))
    if bad_line is not None:
        lines[bad_line] = "{not json"
    text = "\n".join(lines) + "\n"
    if cut_last:
        text = text[:-20]
    with open(os.path.join(dir, "metrics.jsonl"), "w") as f:
        f.write(text)


class RunCurves(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="seqmix_plot_test_")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_one_run(self):
        run = os.path.join(self.dir, "run")
        write_run(run, cut_last=True)  # a run killed mid-write still plots
        code, out = run_cli([run, "--data"])
        self.assertEqual(code, 0)
        svg = os.path.join(run, "plots", "curves.svg")
        self.assertGreater(os.path.getsize(os.path.join(run, "plots", "curves.png")), 1000)
        # train and valid x loss and accuracy x step and wall time
        self.assertEqual(len(series_ids(svg)), 8)
        with open(os.path.join(run, "plots", "curves.json")) as f:
            data = json.load(f)
        n = {(s["split"], s["metric"], s["x"]): s["n"] for s in data["series"]}
        self.assertEqual(n[("train", "loss", "step")], 29)  # 30 points, the cut one dropped
        self.assertEqual(n[("valid", "accuracy", "elapsed_s")], 2)  # steps 100, 200
        with open(svg) as f:
            text = f.read()
        self.assertIn("wall time (min)", text)  # 145 s of run: minutes
        self.assertIn("training step", text)

    def test_several_runs_compare_on_one_figure(self):
        a, b, c = (os.path.join(self.dir, "sw", f"type={m},d_model=64,lr=0.001") for m in ("gla", "h3", "mamba"))
        for r in (a, b, c):
            write_run(r)
        out_dir = os.path.join(self.dir, "cmp")
        code, _ = run_cli([a, b, c, "--out", out_dir])
        self.assertEqual(code, 0)
        ids = series_ids(os.path.join(out_dir, "comparison.svg"))
        self.assertEqual(len(ids), 24)
        # Labels drop the parts the runs share.
        self.assertIn("series:type=h3:valid:accuracy:step", ids)
        self.assertEqual(runs.run_labels([a, b]), ["type=gla", "type=h3"])

    def test_curves_of_a_sweeps_runs(self):
        rows = write_sweep(self.dir, mixers=["gla", "h3"])
        for r in rows:
            write_run(os.path.join(self.dir, r[0]), steps=100, eval_every=50)
        code, out = run_cli([self.dir, "--curves", "--where", "seq_len=64", "--where", "optimizer.lr=1e-3"])
        self.assertEqual(code, 0)
        svg = os.path.join(self.dir, "plots", "curves_seq_len-64_optimizer.lr-1e-3.svg")
        # 2 mixers x 3 widths, 8 series each; lr 1e-3 matches the csv's 0.001 as a number.
        ids = series_ids(svg)
        self.assertEqual(len(ids), 48)
        self.assertIn("series:type=h3_d_model=128:valid:loss:elapsed_s", ids)
        with self.assertRaises(PlotError) as e:
            run_cli([self.dir, "--curves", "--where", "type=mamba"])
        self.assertIn("no run matching type=mamba has a metrics.jsonl", str(e.exception))
        with self.assertRaises(PlotError) as e:
            run_cli([self.dir, "--curves", "--where", "d_model"])
        self.assertIn("--where d_model: expected KEY=VALUE", str(e.exception))

    def test_bad_metrics(self):
        run = os.path.join(self.dir, "run")
        write_run(run, bad_line=3)
        with self.assertRaises(PlotError) as e:
            run_cli([run])
        self.assertIn("metrics.jsonl:4: not JSON", str(e.exception))
        open(os.path.join(run, "metrics.jsonl"), "w").close()
        with self.assertRaises(PlotError) as e:
            run_cli([run])
        self.assertIn("no log points yet", str(e.exception))


if __name__ == "__main__":
    unittest.main()
