"""H3, Hungry Hungry Hippos (Fu, Dao et al. 2022), as seqmix writes it
(docs/mixers.md, "h3"): with H = D / head_dim heads,

    kt  = SSM_shift(k)       per channel, a causal filter of length N
                             f_d[l] = sum_m B[d,m] C[d,m+l], plus D[d] at lag 0
    kv[t,h,d1,d2] = kt[t, h*dh+d1] * v[t, h*dh+d2]
    y   = SSM_diag(kv)       per head, N/2 complex modes, bilinear discretisation:
                             K_h[l] = 2 Re(sum_n Ct_n Abar_n^l), y = K_h * kv + D[h] kv
    o[t, h*dh+d2] = sum_d1 q[t, h*dh+d1] * y[t,h,d1,d2];   out = out_proj(o)

Output channels are ordered h*dh + d2 (the reference H3 code orders them d2*H + h;
out_proj absorbs the permutation, so weights from one do not load into the other).
The parallel form convolves with the kernel K through an FFT; the kernel and the
filter are built in float64 from the float32 parameters. The recurrent form keeps
the last N-1 values of k and the complex diagonal state.
"""

import torch
import torch.nn.functional as F
from torch import nn


class ShiftSSM(nn.Module):
    def __init__(self, d_model, d_state):
        super().__init__()
        self.B = nn.Parameter(torch.zeros(d_model, d_state))
        self.C = nn.Parameter(torch.zeros(d_model, d_state))
        self.D = nn.Parameter(torch.zeros(d_model))

    def filter(self):
        """f (D, N): f[d, l] = sum_m B[d, m] C[d, m + l] (terms past N are 0)."""
        B, C = self.B.double(), self.C.double()
        N = B.shape[1]
        return torch.stack([(B[:, :N - l] * C[:, l:]).sum(dim=1) for l in range(N)], dim=1)

    def forward(self, k):  # (B, L, D) -> (B, L, D)
        f = self.filter().to(k.dtype)
        N = f.shape[1]
        # conv1d correlates: flipping the taps makes out[t] = sum_l f[l] k[t - l].
        kt = F.conv1d(F.pad(k.transpose(1, 2), (N - 1, 0)), f.flip(1).unsqueeze(1), groups=f.shape[0])
        return kt.transpose(1, 2) + self.D * k


class DiagSSM(nn.Module):
    def __init__(self, num_heads, d_state):
        super().__init__()
        Nh = d_state // 2
        self.log_dt = nn.Parameter(torch.zeros(num_heads))
        self.inv_A_real = nn.Parameter(torch.zeros(num_heads, Nh))
        self.A_imag = nn.Parameter(torch.zeros(num_heads, Nh))
        self.B = nn.Parameter(torch.zeros(num_heads, Nh, 2))  # (re, im)
        self.C = nn.Parameter(torch.zeros(num_heads, Nh, 2))
        self.D = nn.Parameter(torch.zeros(num_heads))

    def discretised(self):
        """Abar, Bbar (the input weight dt B / (1 - dtA/2)) and C, complex128 (H, Nh)."""
        dt = self.log_dt.double().exp().unsqueeze(1)
        A = torch.complex(-self.inv_A_real.double().exp(), self.A_imag.double())
        den = 1 - dt * A / 2
        Abar = (1 + dt * A / 2) / den
        Bbar = torch.view_as_complex(self.B.double()) * dt / den
        return Abar, Bbar, torch.view_as_complex(self.C.double())

    def kernel(self, L):
        """K (H, L) float64: K_h[l] = 2 Re(sum_n C_n Bbar_n Abar_n^l)."""
        Abar, Bbar, C = self.discretised()
        lags = torch.arange(L, dtype=torch.float64, device=Abar.device)
        powers = torch.exp(Abar.log().unsqueeze(-1) * lags)  # Abar^l, (H, Nh, L)
        return 2 * ((C * Bbar).unsqueeze(-1) * powers).sum(dim=1).real

    def forward(self, q, kt, v, head_dim):  # (B, L, D) each -> o (B, L, D)
        Bsz, L, D = q.shape
        H, dh = D // head_dim, head_dim
        kv = kt.view(Bsz, L, H, dh, 1) * v.view(Bsz, L, H, 1, dh)  # (B, L, H, d1, d2)
        u = kv.permute(0, 2, 3, 4, 1)  # time last
        n = 2 * L  # zero padding to 2L makes the FFT's circular convolution a causal one
        K = self.kernel(L).to(q.dtype)
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n).view(H, 1, 1, -1), n=n)[..., :L]
        y = y + self.D.view(H, 1, 1, 1) * u
        o = torch.einsum("blhi,bhijl->blhj", q.view(Bsz, L, H, dh), y)
        return o.reshape(Bsz, L, D)


class H3(nn.Module):
    def __init__(self, d_model, d_state=64, head_dim=1):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"h3: d_state must be even and >= 2, got {d_state}")
        if head_dim < 1 or d_model % head_dim:
            raise ValueError(f"h3: head_dim {head_dim} must divide d_model {d_model}")
        self.d_model, self.d_state, self.head_dim = d_model, d_state, head_dim
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.ssm_shift = ShiftSSM(d_model, d_state)
        self.ssm_diag = DiagSSM(d_model // head_dim, d_state)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x):
        kt = self.ssm_shift(self.k_proj(x))
        return self.out_proj(self.ssm_diag(self.q_proj(x), kt, self.v_proj(x), self.head_dim))

    def init_state(self, batch):
        D, N, dh = self.d_model, self.d_state, self.head_dim
        w = self.q_proj.weight
        return {
            "k": torch.zeros(batch, N - 1, D, dtype=w.dtype, device=w.device),  # k_{t-1-i} in row i
            "x": torch.zeros(batch, D // dh, N // 2, dh, dh, dtype=torch.complex128, device=w.device),
        }

    def step(self, state, x):
        Bsz, D = x.shape
        H, dh = D // self.head_dim, self.head_dim
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        f = self.ssm_shift.filter().to(k.dtype)  # (D, N)
        kt = (f[:, 0] + self.ssm_shift.D) * k + (f[:, 1:].t() * state["k"]).sum(dim=1)
        state["k"] = torch.cat([k.unsqueeze(1), state["k"][:, :-1]], dim=1)
        u = kt.view(Bsz, H, dh, 1) * v.view(Bsz, H, 1, dh)  # (B, H, d1, d2)
        Abar, Bbar, C = self.ssm_diag.discretised()
        mode = lambda c: c.view(1, H, -1, 1, 1)  # noqa: E731
        state["x"] = mode(Abar) * state["x"] + mode(Bbar) * u.unsqueeze(2).to(torch.complex128)
        y = 2 * (mode(C) * state["x"]).sum(dim=2).real + self.ssm_diag.D.double().view(1, H, 1, 1) * u.double()
        o = torch.einsum("bhi,bhij->bhj", q.view(Bsz, H, dh).double(), y)
        return self.out_proj(o.reshape(Bsz, D).to(x.dtype))
