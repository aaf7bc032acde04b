"""seqmix checkpoints (HDF5, docs/checkpoints.md) read into and written from PyTorch.

    /                 attributes format = "seqmix", format_version = 1, config (YAML)
    /params/<name>    float32, one dataset per parameter, PyTorch shapes
    /optimizer/...    Adam state (read by seqmix only; save() writes step 0 and no moments)
    /tokenizer        text models: the vocabulary, attribute kind
    /train/...        seqmix's resumption state (not read here; save() writes none)
"""

import os

import h5py
import numpy as np
import torch

from . import config as config_mod
from .model import LanguageModel
from .tokenizer import Tokenizer

FORMAT = "seqmix"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a usable seqmix checkpoint; the message names the file and the problem."""


def checkpoint_path(path):
    """A run directory holds checkpoint.h5; accept either."""
    path = os.fspath(path)
    return os.path.join(path, "checkpoint.h5") if os.path.isdir(path) else path


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read(path):
    """The parts of a checkpoint the bridge uses: a dict with 'config' (YAML text),
    'params' (name -> float32 numpy array, in file order), 'tokenizer' (Tokenizer or
    None) and 'step' (training steps behind the weights)."""
    path = checkpoint_path(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise CheckpointError(f"{path}: not an HDF5 file, or truncated or corrupted ({e})") from None
    with f:
        if "format" not in f.attrs:
            raise CheckpointError(f"{path}: not a seqmix checkpoint (no 'format' attribute)")
        if _text(f.attrs["format"]) != FORMAT:
            raise CheckpointError(f"{path}: format is '{_text(f.attrs['format'])}', expected '{FORMAT}'")
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{path}: format_version {version} is newer than this bridge reads "
                                  f"({FORMAT_VERSION}); update seqmix_torch")
        if version < 1:
            raise CheckpointError(f"{path}: format_version is missing or not valid")
        if "config" not in f.attrs:
            raise CheckpointError(f"{path}: attribute 'config' is missing")
        if not isinstance(f.get("params"), h5py.Group):
            raise CheckpointError(f"{path}: group /params is missing")
        params = {}
        for name, d in f["params"].items():
            if not isinstance(d, h5py.Dataset) or d.dtype != np.float32:
                raise CheckpointError(f"{path}: /params/{name} is not a float32 dataset")
            try:
                params[name] = d[()]
            except OSError as e:
                raise CheckpointError(f"{path}: cannot read /params/{name}: the file is truncated or corrupted "
                                      f"({e})") from None
        tokenizer = None
        if "tokenizer" in f:
            d = f["tokenizer"]
            try:
                tokenizer = Tokenizer(_text(d.attrs["kind"]), _text(d[()]))
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"{path}: /tokenizer is invalid: {e}") from None
        step = 0
        if "train/step" in f:
            step = int(f["train/step"][()])
        elif "optimizer/step" in f:
            step = int(f["optimizer/step"][()])
        return {"config": _text(f.attrs["config"]), "params": params, "tokenizer": tokenizer, "step": step}


def _check_names_and_shapes(expected, given, where, what):
    """expected, given: name -> shape. Raises naming the first tensor that differs."""
    for name, shape in expected.items():
        if name not in given:
            raise CheckpointError(f"{where}: tensor {name} {tuple(shape)} is missing from {what}")
        if tuple(given[name]) != tuple(shape):
            raise CheckpointError(f"{where}: tensor {name} has shape {tuple(given[name])} in {what}, "
                                  f"the config's model expects {tuple(shape)}")
    for name in given:
        if name not in expected:
            raise CheckpointError(f"{where}: tensor {name} of {what} does not belong to the config's model")


def load(path, device=None):
    """The language model of a seqmix checkpoint (a file or a run directory), as a
    torch.nn.Module in eval mode with float32 weights, named as in the checkpoint.
    Its .config is the checkpoint's configuration (dict), .tokenizer the stored
    tokenizer (None for recall-task models), .step the training steps behind it."""
    path = checkpoint_path(path)
    ck = read(path)
    try:
        model = LanguageModel(ck["config"], tokenizer=ck["tokenizer"])
    except (config_mod.ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: the config attribute does not describe a model: {e}") from None
    own = model.state_dict()
    _check_names_and_shapes({k: v.shape for k, v in own.items()}, {k: v.shape for k, v in ck["params"].items()},
                            path, "/params")
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(torch.from_numpy(ck["params"][name]))
    model.step_count = ck["step"]
    model.checkpoint_path = path
    if device is not None:
        model.to(device)
    return model.eval()


def save(model, path, config=None, tokenizer=None):
    """Writes the weights of `model` as a seqmix checkpoint that `seqmix eval`,
    `seqmix sample`, `seqmix logits` and `seqmix train CONFIG --init-from PATH` read.

    config: YAML text or a dict (default: model.config) describing the model; the
    model's parameter names and shapes must be those of the config's model, or
    CheckpointError names the first tensor that differs. tokenizer: default
    model.tokenizer (if any). The weights are stored as float32; there is no
    optimizer state (step 0) and no resumption state, so seqmix can start a run
    from the file but not --resume it."""
    path = os.fspath(path)
    if config is None:
        config = getattr(model, "config", None)
        if config is None:
            raise ValueError("save: the model carries no config; pass config=")
        text = getattr(model, "config_text", None)
        if text is not None and config_mod.parse(text) == config:
            config = text
    config_text = config if isinstance(config, str) else config_mod.to_yaml(config)
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    try:
        reference = LanguageModel(config_text)
    except (config_mod.ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: the config does not describe a model: {e}") from None
    state = model.state_dict()
    _check_names_and_shapes({k: v.shape for k, v in reference.state_dict().items()},
                            {k: v.shape for k, v in state.items()}, path, "the model to save")
    if tokenizer is not None and tokenizer.vocab_size > reference.options["vocab_size"]:
        raise CheckpointError(f"{path}: the tokenizer's {tokenizer.vocab_size} tokens do not fit model.vocab_size = "
                              f"{reference.options['vocab_size']}")
    # Written beside the target and renamed over it: a crash leaves the old file or the new one.
    tmp = path + ".tmp"
    with h5py.File(tmp, "w", libver=("v110", "latest")) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        f.attrs["config"] = config_text
        params = f.create_group("params")
        for name in reference.state_dict():
            a = np.ascontiguousarray(state[name].detach().to("cpu", torch.float32).numpy())
            if a.size:
                # One chunk with a Fletcher-32 checksum, as seqmix writes its tensors.
                params.create_dataset(name, data=a, chunks=a.shape, fletcher32=True)
            else:
                params.create_dataset(name, data=a)
        opt = f.create_group("optimizer")
        opt.create_dataset("step", data=np.int64(0))
        opt.create_group("m")
        opt.create_group("v")
        f.create_group("train")
        if tokenizer is not None:
            d = f.create_dataset("tokenizer", data=tokenizer.vocabulary, dtype=h5py.string_dtype("utf-8"))
            d.attrs["kind"] = tokenizer.kind
    os.replace(tmp, path)
