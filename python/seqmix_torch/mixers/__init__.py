"""The five seqmix mixers as torch modules. Each maps (B, L, D) to (B, L, D) in
forward() (the parallel form) and has a recurrent form: init_state(batch) returns
a dict of tensors, step(state, x_t) maps (B, D) to (B, D) and updates the state."""

from .attention import Attention
from .gla import GLA
from .h3 import H3
from .linear_attention import LinearAttention
from .mamba import Mamba

_CLASSES = {
    "attention": Attention,
    "linear_attention": LinearAttention,
    "gla": GLA,
    "h3": H3,
    "mamba": Mamba,
}


def make_mixer(d_model, options):
    """options: the 'mixer' dict of config.model_options (type plus that mixer's keys)."""
    opts = dict(options)
    return _CLASSES[opts.pop("type")](d_model, **opts)


__all__ = ["Attention", "LinearAttention", "GLA", "H3", "Mamba", "make_mixer"]
