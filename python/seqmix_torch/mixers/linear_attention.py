"""Linear attention of Katharopoulos et al. 2020 (docs/mixers.md, "linear_attention").

Feature map phi(x) = elu(x) + 1, no 1/sqrt(d) scaling, per head:
    S_t = S_{t-1} + phi(k_t) v_t^T,  z_t = z_{t-1} + phi(k_t),
    o_t = phi(q_t)^T S_t / (phi(q_t) . z_t + eps)          (inclusive of t)
The parallel form below is the equivalent masked (L, L) product.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _phi(x):
    return F.elu(x) + 1.0


class LinearAttention(nn.Module):
    def __init__(self, d_model, num_heads=1, eps=1e-6):
        super().__init__()
        if num_heads < 1 or d_model % num_heads:
            raise ValueError(f"linear_attention: num_heads {num_heads} must divide d_model {d_model}")
        self.d_model, self.num_heads, self.eps = d_model, num_heads, eps
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _heads(self, t):  # (B, L, D) -> (B, H, L, d)
        B, L, _ = t.shape
        return t.view(B, L, self.num_heads, -1).transpose(1, 2)

    def forward(self, x):
        B, L, D = x.shape
        q, k = _phi(self._heads(self.q_proj(x))), _phi(self._heads(self.k_proj(x)))
        v = self._heads(self.v_proj(x))
        a = (q @ k.transpose(-1, -2)).tril()  # (B, H, L, L): phi(q_t) . phi(k_s) for s <= t
        o = (a @ v) / (a.sum(dim=-1, keepdim=True) + self.eps)
        return self.out_proj(o.transpose(1, 2).reshape(B, L, D))

    def init_state(self, batch):
        d = self.d_model // self.num_heads
        w = self.q_proj.weight
        return {
            "S": torch.zeros(batch, self.num_heads, d, d, dtype=w.dtype, device=w.device),
            "z": torch.zeros(batch, self.num_heads, d, dtype=w.dtype, device=w.device),
        }

    def step(self, state, x):
        B, D = x.shape
        H = self.num_heads
        q = _phi(self.q_proj(x)).view(B, H, -1)
        k = _phi(self.k_proj(x)).view(B, H, -1)
        v = self.v_proj(x).view(B, H, -1)
        state["S"] = state["S"] + k.unsqueeze(-1) * v.unsqueeze(-2)
        state["z"] = state["z"] + k
        num = torch.einsum("bhi,bhij->bhj", q, state["S"])
        den = (q * state["z"]).sum(dim=-1, keepdim=True) + self.eps
        return self.out_proj((num / den).reshape(B, D))
