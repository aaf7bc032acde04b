"""The model section of a seqmix configuration, with seqmix's defaults.

A checkpoint's root attribute ``config`` is the resolved YAML, so every key is
present there; the defaults below (the same as seqmix's, see docs/config.md) fill
in a hand-written, partial config passed to :func:`seqmix_torch.build`.
"""

import math

import yaml

MIXER_TYPES = ("attention", "linear_attention", "gla", "h3", "mamba")

_MODEL_DEFAULTS = {
    "vocab_size": 8192,
    "d_model": 128,
    "n_layers": 2,
    "norm": "layernorm",
    "mlp": "none",
    "max_position_embeddings": 0,
    "tie_embeddings": True,
    "dropout": 0.0,
}

_MIXER_DEFAULTS = {
    "attention": {"num_heads": 1, "dropout": 0.0},
    "linear_attention": {"num_heads": 1, "eps": 1e-6},
    "gla": {
        "num_heads": 4,
        "expand_k": 0.5,
        "expand_v": 1.0,
        "gate_low_rank_dim": 16,
        "gate_logit_normalizer": 16.0,
        "norm_eps": 1e-5,
    },
    "h3": {"d_state": 64, "head_dim": 1},
    "mamba": {
        "d_state": 16,
        "d_conv": 4,
        "expand": 2,
        "dt_rank": "auto",
        "dt_min": 0.001,
        "dt_max": 0.1,
        "dt_init_floor": 1e-4,
    },
}


class ConfigError(ValueError):
    """A configuration the bridge cannot build a model from; the message names the key."""


def parse(config):
    """Returns the whole configuration as a dict from YAML text or a dict."""
    if isinstance(config, str):
        try:
            config = yaml.safe_load(config)
        except yaml.YAMLError as e:
            raise ConfigError(f"the config is not valid YAML: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConfigError("the config has no 'model' section")
    return config


def to_yaml(config):
    """YAML text of a config dict, in seqmix's key order where the dict keeps one."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def model_options(config):
    """The model section with defaults filled in and checked: a dict whose 'mixer'
    entry holds 'type' and that mixer's options only."""
    model = parse(config)["model"]
    out = dict(_MODEL_DEFAULTS)
    mixer = model.get("mixer", {}) or {}
    for key, value in model.items():
        if key == "mixer":
            continue
        if key not in _MODEL_DEFAULTS:
            raise ConfigError(f"model.{key} is not a model option (known: {', '.join(_MODEL_DEFAULTS)})")
        out[key] = value
    kind = mixer.get("type", "attention")
    if kind not in MIXER_TYPES:
        raise ConfigError(f"model.mixer.type '{kind}' is not one of {', '.join(MIXER_TYPES)}")
    opts = dict(_MIXER_DEFAULTS[kind])
    for key, value in mixer.items():
        if key == "type":
            continue
        if key not in opts:
            raise ConfigError(f"model.mixer.{key} is not an option of the {kind} mixer (known: {', '.join(opts)})")
        opts[key] = value
    if kind == "mamba":
        r = opts["dt_rank"]
        opts["dt_rank"] = math.ceil(out["d_model"] / 16) if r in ("auto", 0) else int(r)
    out["mixer"] = {"type": kind, **opts}
    for key in ("vocab_size", "d_model", "n_layers"):
        if int(out[key]) <= 0:
            raise ConfigError(f"model.{key} must be positive, got {out[key]}")
    if out["norm"] not in ("layernorm", "rmsnorm"):
        raise ConfigError(f"model.norm '{out['norm']}' is not one of layernorm, rmsnorm")
    if out["mlp"] not in ("none", "gelu"):
        raise ConfigError(f"model.mlp '{out['mlp']}' is not one of none, gelu")
    return out
