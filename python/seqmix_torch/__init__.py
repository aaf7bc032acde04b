"""seqmix_torch: seqmix checkpoints as PyTorch modules, and PyTorch weights back
into seqmix checkpoints.

    import seqmix_torch
    model = seqmix_torch.load("runs/mqar_mamba")        # torch.nn.Module, float32
    logits = model(torch.tensor([[1, 2, 3]]))            # (1, 3, vocab_size)
    new_ids = model.generate([1, 2, 3], 10, temperature=0)
    seqmix_torch.save(model, "edited.h5")                # seqmix reads it back

Parameter names are the checkpoint's (layers.0.mixer.Wqkv.weight, ...). Every
mixer has a parallel form (forward) and a recurrent form (init_state/step) that
agree to float32 rounding. See docs/checkpoints.md for the file layout.
"""

from .checkpoint import CheckpointError, checkpoint_path, load, read, save
from .config import ConfigError
from .generate import pick_token
from .model import LanguageModel
from .tokenizer import Tokenizer


def build(config, tokenizer=None):
    """A model with fresh (PyTorch-default) weights from a config (YAML text or dict)."""
    return LanguageModel(config, tokenizer=tokenizer)


__all__ = ["CheckpointError", "ConfigError", "LanguageModel", "Tokenizer", "build", "checkpoint_path", "load",
           "pick_token", "read", "save"]
