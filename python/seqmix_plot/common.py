"""What every figure shares: the error type, axis labels with units, mixer colours, saving."""
import os
import re


class PlotError(Exception):
    """Bad input; the message names the file or option and the problem."""


# Axis labels for the keys and columns seqmix writes; other keys are shown as they are.
LABELS = {
    "model.d_model": "model width d_model",
    "data.seq_len": "sequence length L (tokens)",
    "data.num_kv_pairs": "key-value pairs K",
    "optimizer.lr": "peak learning rate",
    "model.mixer.type": "mixer",
    "data.task": "task",
    "model.n_layers": "layers",
    "best_valid_accuracy": "valid accuracy (best during training)",
    "final_valid_accuracy": "valid accuracy (end of training)",
    "final_valid_loss": "valid loss (nats per token)",
    "final_train_loss": "train loss (nats per token)",
    "parameters": "parameters",
    "state_bytes": "recurrent state (bytes per sequence, all layers, float32)",
    "state_size": "recurrent state (floats per sequence, all layers)",
    "wall_s": "wall time (s)",
}

# Short names used in panel titles: "L = 64".
SHORT = {"data.seq_len": "L", "data.num_kv_pairs": "K", "model.d_model": "d_model", "optimizer.lr": "lr"}

MIXER_NAMES = {"attention": "attention", "linear_attention": "linear attention", "gla": "GLA", "h3": "H3",
               "mamba": "Mamba"}
# The same mixer has the same colour in every figure (tab10 colours).
MIXER_COLOURS = {"attention": "#1f77b4", "linear_attention": "#ff7f0e", "gla": "#2ca02c", "h3": "#d62728",
                 "mamba": "#9467bd"}
OTHER_COLOURS = ["#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#1f77b4", "#ff7f0e", "#2ca02c",
                 "#d62728", "#9467bd"]


def label(key):
    return LABELS.get(key, key)


def short(key):
    return SHORT.get(key, key.rsplit(".", 1)[-1])


def value_name(key, value):
    """How a value is shown in a legend: mixer types by their usual names."""
    if key == "model.mixer.type":
        return MIXER_NAMES.get(value, value)
    return value


def colours_for(key, values):
    """A colour per value: fixed colours for mixer types, otherwise in order."""
    out, k = {}, 0
    for v in values:
        if key == "model.mixer.type" and v in MIXER_COLOURS:
            out[v] = MIXER_COLOURS[v]
        else:
            out[v] = OTHER_COLOURS[k % len(OTHER_COLOURS)]
            k += 1
    return out


def series_id(*parts):
    """An SVG id for a plotted line ("series:..."), so tests and scripts can find the series."""
    return "series:" + ":".join(re.sub(r"[^A-Za-z0-9._=-]", "_", str(p)) for p in parts)


def setup_matplotlib():
    """Imports matplotlib with a file-only backend; a clear error if it is not installed."""
    try:
        import matplotlib
    except ImportError as e:
        raise MissingMatplotlib(str(e)) from e
    matplotlib.use("Agg")
    # Same input, same SVG bytes: fixed ids instead of random ones, no date stamp.
    matplotlib.rcParams["svg.hashsalt"] = "seqmix"
    matplotlib.rcParams["font.size"] = 10
    import matplotlib.pyplot as plt
    return plt


class MissingMatplotlib(Exception):
    pass


def save(fig, out_dir, name, formats):
    """Writes name.<fmt> for each format into out_dir; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fmt in formats:
        path = os.path.join(out_dir, f"{name}.{fmt}")
        meta = {"Date": None} if fmt in ("svg", "pdf") else {}
        fig.savefig(path, dpi=150 if fmt == "png" else None, metadata=meta, bbox_inches="tight")
        paths.append(path)
    return paths
