"""Causal multi-head softmax attention (docs/mixers.md, "attention").

Wqkv rows [0, D) give q, [D, 2D) k, [2D, 3D) v; head h owns columns
[h*dh, (h+1)*dh) of each. Recurrent form: a KV cache.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, d_model, num_heads=1, dropout=0.0):
        super().__init__()
        if num_heads < 1 or d_model % num_heads:
            raise ValueError(f"attention: num_heads {num_heads} must divide d_model {d_model}")
        self.d_model, self.num_heads, self.dropout = d_model, num_heads, dropout
        self.Wqkv = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, t):  # (B, L, D) -> (B, H, L, dh)
        B, L, _ = t.shape
        return t.view(B, L, self.num_heads, -1).transpose(1, 2)

    def forward(self, x):
        B, L, D = x.shape
        q, k, v = (self._heads(t) for t in self.Wqkv(x).split(D, dim=-1))
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(D // self.num_heads))
        causal = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        p = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        p = F.dropout(p, self.dropout, self.training)
        o = (p @ v).transpose(1, 2).reshape(B, L, D)
        return self.out_proj(o)

    def init_state(self, batch):
        return {"k": None, "v": None}

    def step(self, state, x):
        """x: (B, D) -> (B, D); appends this token's key and value to the cache."""
        B, D = x.shape
        q, k, v = (t.view(B, self.num_heads, 1, -1) for t in self.Wqkv(x).split(D, dim=-1))
        state["k"] = k if state["k"] is None else torch.cat([state["k"], k], dim=2)
        state["v"] = v if state["v"] is None else torch.cat([state["v"], v], dim=2)
        p = ((q @ state["k"].transpose(-1, -2)) * (1.0 / math.sqrt(D // self.num_heads))).softmax(dim=-1)
        return self.out_proj((p @ state["v"]).reshape(B, D))
