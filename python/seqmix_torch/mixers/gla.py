"""Gated linear attention, Yang et al. 2023, as flash-linear-attention's GLA layer
(docs/mixers.md, "gla"). Per head, with a_t in (0, 1)^dk:

    log a_t = logsigmoid(gk_proj(x_t)) / gate_logit_normalizer
    S_t     = diag(a_t) S_{t-1} + k_t v_t^T          (decay, then add)
    o_t     = (q_t / sqrt(dk))^T S_t
    out     = o_proj(rmsnorm_per_head(o) * g_norm.weight * swish(g_proj(x)))

The parallel form runs in chunks of 64 tokens: inside a chunk the pairwise decays
exp(G_t - G_s) (G the cumulative log-gate, s <= t, so every exponent is <= 0),
across chunks the state S carried from one chunk to the next.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

CHUNK = 64


class GNorm(nn.Module):
    """rmsnorm over each head's dv channels with one weight shared by the heads,
    times swish(g)."""

    def __init__(self, dv, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dv))

    def forward(self, o, g):  # o, g: (..., H, dv)
        r = torch.rsqrt(o.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return o * r * self.weight * (g * torch.sigmoid(g))


class GLA(nn.Module):
    def __init__(self, d_model, num_heads=4, expand_k=0.5, expand_v=1.0, gate_low_rank_dim=16,
                 gate_logit_normalizer=16.0, norm_eps=1e-5):
        super().__init__()
        # As fla (and seqmix): int(d_model * expand), split evenly over the heads.
        key_dim, value_dim = int(d_model * expand_k), int(d_model * expand_v)
        for what, w in (("key dim", key_dim), ("value dim", value_dim)):
            if w <= 0 or num_heads <= 0 or w % num_heads:
                raise ValueError(f"gla: {what} {w} must be a positive multiple of num_heads {num_heads}")
        self.num_heads, self.key_dim, self.value_dim = num_heads, key_dim, value_dim
        self.gate_logit_normalizer = gate_logit_normalizer
        self.q_proj = nn.Linear(d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, value_dim, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, key_dim))
        self.g_norm = GNorm(value_dim // num_heads, norm_eps)
        self.o_proj = nn.Linear(value_dim, d_model, bias=False)

    def _inputs(self, x):
        """q (scaled), k, v, g, log a with heads split: (..., H, d)."""
        H = self.num_heads
        split = lambda t: t.view(*t.shape[:-1], H, -1)  # noqa: E731
        q = split(self.q_proj(x)) * (1.0 / math.sqrt(self.key_dim // H))
        log_a = split(F.logsigmoid(self.gk_proj(x)) / self.gate_logit_normalizer)
        return q, split(self.k_proj(x)), split(self.v_proj(x)), split(self.g_proj(x)), log_a

    def _output(self, o, g):  # o, g: (..., H, dv)
        y = self.g_norm(o, g)
        return self.o_proj(y.reshape(*y.shape[:-2], self.value_dim))

    def forward(self, x):
        B, L, _ = x.shape
        q, k, v, g, log_a = (t.transpose(1, 2) for t in self._inputs(x))  # (B, H, L, d)
        H, dk, dv = self.num_heads, self.key_dim // self.num_heads, self.value_dim // self.num_heads
        S = x.new_zeros(B, H, dk, dv)
        outs = []
        for c0 in range(0, L, CHUNK):
            qc, kc, vc = q[:, :, c0:c0 + CHUNK], k[:, :, c0:c0 + CHUNK], v[:, :, c0:c0 + CHUNK]
            G = log_a[:, :, c0:c0 + CHUNK].cumsum(dim=2)  # (B, H, c, dk), log of prod_{r <= t} a_r
            c = G.shape[2]
            inter = (qc * G.exp()) @ S
            causal = torch.ones(c, c, dtype=torch.bool, device=x.device).tril().unsqueeze(-1)
            diff = (G.unsqueeze(3) - G.unsqueeze(2)).masked_fill(~causal, float("-inf"))  # (B, H, t, s, dk)
            scores = torch.einsum("bhtx,bhsx,bhtsx->bhts", qc, kc, diff.exp())
            outs.append(inter + scores @ vc)
            G_end = G[:, :, -1:]
            S = G_end.transpose(-1, -2).exp() * S + (kc * (G_end - G).exp()).transpose(-1, -2) @ vc
        o = torch.cat(outs, dim=2).transpose(1, 2)  # (B, L, H, dv)
        return self._output(o, g.transpose(1, 2))

    def init_state(self, batch):
        H = self.num_heads
        w = self.q_proj.weight
        return {"S": torch.zeros(batch, H, self.key_dim // H, self.value_dim // H, dtype=w.dtype, device=w.device)}

    def step(self, state, x):
        q, k, v, g, log_a = self._inputs(x)  # (B, H, d)
        state["S"] = log_a.exp().unsqueeze(-1) * state["S"] + k.unsqueeze(-1) * v.unsqueeze(-2)
        return self._output(torch.einsum("bhx,bhxv->bhv", q, state["S"]), g)
