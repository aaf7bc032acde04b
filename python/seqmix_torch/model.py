"""The language model around the mixers (docs/model.md):

    x = E[tokens] (+ P[positions]);  x = dropout(x)
    per layer: x += dropout(mixer(norm1(x)));  x += dropout(mlp(norm2(x)))  (with an mlp)
    logits = norm_f(x) E^T  (tied)  or  lm_head(norm_f(x))  (untied)

Parameter names are the checkpoint's dataset names, so model.state_dict() and a
checkpoint's /params hold the same keys.
"""

import torch
import torch.nn.functional as F
from torch import nn

from . import config as config_mod
from .generate import generate
from .mixers import make_mixer

NORM_EPS = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + NORM_EPS) * self.weight


def make_norm(kind, d):
    return nn.LayerNorm(d, eps=NORM_EPS) if kind == "layernorm" else RMSNorm(d)


class Mlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, opt):
        super().__init__()
        D = opt["d_model"]
        self.norm1 = make_norm(opt["norm"], D)
        self.mixer = make_mixer(D, opt["mixer"])
        if opt["mlp"] == "gelu":
            self.norm2 = make_norm(opt["norm"], D)
            self.mlp = Mlp(D)
        else:
            self.mlp = None
        self.dropout = opt["dropout"]

    def forward(self, x):
        x = x + F.dropout(self.mixer(self.norm1(x)), self.dropout, self.training)
        if self.mlp is not None:
            x = x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)
        return x

    def step(self, state, x):
        x = x + self.mixer.step(state, self.norm1(x))
        if self.mlp is not None:
            x = x + self.mlp(self.norm2(x))
        return x


class Embeddings(nn.Module):
    def __init__(self, vocab_size, d_model, max_positions):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, d_model)
        if max_positions > 0:
            self.position_embeddings = nn.Embedding(max_positions, d_model)
        else:
            self.position_embeddings = None

    def forward(self, tokens, offset=0):
        x = self.word_embeddings(tokens)
        if self.position_embeddings is not None:
            L, P = tokens.shape[-1], self.position_embeddings.num_embeddings
            if offset + L > P:
                raise ValueError(f"a sequence of {offset + L} tokens is longer than max_position_embeddings = {P}")
            x = x + self.position_embeddings(torch.arange(offset, offset + L, device=tokens.device))
        return x


class LanguageModel(nn.Module):
    """A seqmix language model. ``model(tokens)`` maps int token ids (B, L) or (L,)
    to float32 logits (B, L, V) or (L, V). The recurrent form: ``state =
    model.init_state(batch)``, then ``model.step(state, tokens_t)`` maps (B,) ids
    to (B, V) logits, one token at a time; ``model.generate`` decodes through it.

    ``config`` is the configuration (dict) the model was built from, ``tokenizer``
    the checkpoint's tokenizer (text models) or None."""

    def __init__(self, config, tokenizer=None):
        super().__init__()
        self.config = config_mod.parse(config)
        # The YAML as given, so that save() writes a loaded checkpoint's config back
        # byte for byte while model.config is left unchanged.
        self.config_text = config if isinstance(config, str) else None
        self.options = opt = config_mod.model_options(self.config)
        self.tokenizer = tokenizer
        V, D = opt["vocab_size"], opt["d_model"]
        self.embeddings = Embeddings(V, D, opt["max_position_embeddings"])
        self.layers = nn.ModuleList(Block(opt) for _ in range(opt["n_layers"]))
        self.norm_f = make_norm(opt["norm"], D)
        self.lm_head = None if opt["tie_embeddings"] else nn.Linear(D, V, bias=False)
        self.dropout = opt["dropout"]

    def _check_tokens(self, tokens):
        tokens = torch.as_tensor(tokens, device=self.embeddings.word_embeddings.weight.device)
        if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"tokens must be integer ids, got {tokens.dtype}")
        V = self.options["vocab_size"]
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= V):
            bad = tokens[(tokens < 0) | (tokens >= V)][0]
            raise ValueError(f"token id {int(bad)} is outside the vocabulary [0, {V})")
        return tokens.long()

    def head(self, h):
        w = self.embeddings.word_embeddings.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(self.norm_f(h), w)

    def forward(self, tokens):
        tokens = self._check_tokens(tokens)
        single = tokens.dim() == 1
        if single:
            tokens = tokens.unsqueeze(0)
        x = F.dropout(self.embeddings(tokens), self.dropout, self.training)
        for layer in self.layers:
            x = layer(x)
        logits = self.head(x)
        return logits[0] if single else logits

    def init_state(self, batch=1):
        """The recurrent state of `batch` sequences before their first token."""
        return {"t": 0, "layers": [layer.mixer.init_state(batch) for layer in self.layers]}

    def step(self, state, tokens):
        """tokens (B,) -> logits (B, V) of the next token; advances the state.
        Dropout is off in the recurrent form."""
        tokens = self._check_tokens(tokens)
        x = self.embeddings(tokens.unsqueeze(1), offset=state["t"])[:, 0]
        for layer, s in zip(self.layers, state["layers"]):
            x = layer.step(s, x)
        state["t"] += 1
        return self.head(x)

    generate = generate
