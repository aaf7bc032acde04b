"""Mamba's selective SSM (Gu and Dao 2023, mamba_simple; docs/mixers.md, "mamba"):

    [x, z] = in_proj(u);  xc = silu(causal depthwise conv1d(x))
    [dl, Bt, Ct] = x_proj(xc);  dt = softplus(dt_proj(dl));  A = -exp(A_log)
    h_t = exp(dt_t A) h_{t-1} + dt_t Bt_t xc_t;   y_t = h_t . Ct_t + D xc_t
    out = out_proj(y * silu(z))

The scan of the parallel form is a loop over time, as mamba's selective_scan_ref.
"""

import torch
import torch.nn.functional as F
from torch import nn


class Mamba(nn.Module):
    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank=None, **_init_options):
        super().__init__()
        E = expand * d_model
        R = dt_rank or -(-d_model // 16)  # auto = ceil(d_model / 16)
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = E, d_state, d_conv, R
        self.in_proj = nn.Linear(d_model, 2 * E, bias=False)
        self.conv1d = nn.Conv1d(E, E, d_conv, groups=E, padding=d_conv - 1)
        self.x_proj = nn.Linear(E, R + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(R, E)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(E, 1))
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, d_model, bias=False)

    def _ssm_inputs(self, xc):
        R, N = self.dt_rank, self.d_state
        dl, Bt, Ct = self.x_proj(xc).split([R, N, N], dim=-1)
        dt = F.softplus(self.dt_proj(dl))  # threshold 20, as the spec's softplus
        return dt, Bt, Ct

    def forward(self, u):
        B, L, _ = u.shape
        x, z = self.in_proj(u).chunk(2, dim=-1)
        xc = F.silu(self.conv1d(x.transpose(1, 2))[..., :L].transpose(1, 2))  # (B, L, E)
        dt, Bt, Ct = self._ssm_inputs(xc)
        A = -self.A_log.exp()  # (E, N)
        decay = (dt.unsqueeze(-1) * A).exp()  # (B, L, E, N)
        drive = (dt * xc).unsqueeze(-1) * Bt.unsqueeze(2)  # dt_t Bt_t xc_t, (B, L, E, N)
        h = u.new_zeros(B, self.d_inner, self.d_state)
        ys = []
        for t in range(L):
            h = decay[:, t] * h + drive[:, t]
            ys.append((h * Ct[:, t].unsqueeze(1)).sum(dim=-1))
        y = torch.stack(ys, dim=1) + self.D * xc
        return self.out_proj(y * F.silu(z))

    def init_state(self, batch):
        w = self.in_proj.weight
        return {
            "conv": torch.zeros(batch, self.d_conv - 1, self.d_inner, dtype=w.dtype, device=w.device),  # oldest first
            "ssm": torch.zeros(batch, self.d_inner, self.d_state, dtype=w.dtype, device=w.device),
        }

    def step(self, state, u):
        x, z = self.in_proj(u).chunk(2, dim=-1)  # (B, E)
        window = torch.cat([state["conv"], x.unsqueeze(1)], dim=1)  # (B, d_conv, E), oldest first
        state["conv"] = window[:, 1:]
        xc = F.silu(self.conv1d.bias + (window * self.conv1d.weight[:, 0].t()).sum(dim=1))
        dt, Bt, Ct = self._ssm_inputs(xc)
        A = -self.A_log.exp()
        state["ssm"] = (dt.unsqueeze(-1) * A).exp() * state["ssm"] + (dt * xc).unsqueeze(-1) * Bt.unsqueeze(1)
        y = (state["ssm"] * Ct.unsqueeze(1)).sum(dim=-1) + self.D * xc
        return self.out_proj(y * F.silu(z))
