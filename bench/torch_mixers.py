#!/usr/bin/env python3
"""PyTorch CPU comparison benchmark for the five seqmix mixers (see docs/model.md and docs/mixers.md).

This is the "straightforward PyTorch CPU implementation" that seqmix is compared against.
Each mixer is written the way its standard pure-PyTorch reference is written:
  attention         q k^T, causal mask, softmax, @ v (plus F.scaled_dot_product_attention
                    when this torch has it, i.e. torch >= 2.0)
  linear_attention  elu+1 features, causal sums in chunked cumulative form (per-chunk phi(k)^T v
                    summed with torch.cumsum over chunks, masked quadratic form inside a chunk)
  gla               fla's naive recurrent reference (Python loop over L), plus the chunked
                    parallel form of the GLA paper (chunks of 64)
  h3                FFT convolution (rfft/irfft of length 2L) with the shift and diagonal kernels
  mamba             mamba_simple's slow path with selective_scan_ref (Python loop over L)
Decoding uses each mixer's recurrent form (attention: a preallocated KV cache).

Not used by the build or the tests. Run by hand, on an otherwise idle machine, e.g.
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 /usr/bin/python3 \
      bench/torch_mixers.py [--json out.json] [--quick] [--plain-malloc]
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def linear(i, o, bias=True, std=0.02):
    lin = nn.Linear(i, o, bias=bias)
    nn.init.normal_(lin.weight, std=std)
    if bias:
        nn.init.zeros_(lin.bias)
    return lin


# ---------------------------------------------------------------- 2.1 attention
class Attention(nn.Module):
    def __init__(self, d, num_heads=1, use_sdpa=False):
        super().__init__()
        self.h, self.dh, self.use_sdpa = num_heads, d // num_heads, use_sdpa
        self.Wqkv, self.out_proj = linear(d, 3 * d), linear(d, d)

    def forward(self, x):
        b, l, d = x.shape
        q, k, v = self.Wqkv(x).view(b, l, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        if self.use_sdpa:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = (q @ k.transpose(-1, -2)) / math.sqrt(self.dh)
            mask = torch.ones(l, l, dtype=torch.bool).triu(1)
            o = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
        return self.out_proj(o.transpose(1, 2).reshape(b, l, d))

    def init_state(self, ctx, max_len):  # KV cache holding ctx random tokens
        k = torch.zeros(1, self.h, max_len, self.dh)
        v = torch.zeros(1, self.h, max_len, self.dh)
        k[:, :, :ctx].normal_(), v[:, :, :ctx].normal_()
        return {"k": k, "v": v, "t": ctx}

    def step(self, st, x):  # x: (1, D)
        q, k, v = self.Wqkv(x).view(3, self.h, 1, self.dh)
        t = st["t"]
        st["k"][0, :, t], st["v"][0, :, t] = k[:, 0], v[:, 0]
        st["t"] = t + 1
        kc, vc = st["k"][0, :, : t + 1], st["v"][0, :, : t + 1]
        p = torch.softmax((q @ kc.transpose(-1, -2)) / math.sqrt(self.dh), dim=-1)
        return self.out_proj((p @ vc).reshape(1, -1))


# ---------------------------------------------------------------- 2.2 linear attention
def phi(x):
    return F.elu(x) + 1


class LinearAttention(nn.Module):
    # chunk: fwd+bwd at B=8 L=1024 D=256 H=1 on the 2-core test machine took 0.36 s (64),
    # 0.23 s (128), 0.24 s (256), 0.32 s (1024, the plain masked quadratic form)
    def __init__(self, d, num_heads=1, eps=1e-6, chunk=256):
        super().__init__()
        self.h, self.dh, self.eps, self.chunk = num_heads, d // num_heads, eps, chunk
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (linear(d, d) for _ in range(4))

    def forward(self, x):
        b, l, d = x.shape
        c = min(self.chunk, l)
        n = l // c
        heads = lambda t: t.view(b, n, c, self.h, self.dh).permute(0, 3, 1, 2, 4)  # b h n c d
        q, k, v = phi(heads(self.q_proj(x))), phi(heads(self.k_proj(x))), heads(self.v_proj(x))
        # state and normaliser after each chunk, exclusive prefix over chunks via cumsum
        kv = torch.einsum("bhncd,bhnce->bhnde", k, v).cumsum(2)
        kv = F.pad(kv, (0, 0, 0, 0, 1, 0))[:, :, :n]
        z = F.pad(k.sum(3).cumsum(2), (0, 0, 1, 0))[:, :, :n]  # b h n d
        a = (q @ k.transpose(-1, -2)).tril()  # inclusive of t inside the chunk
        num = q @ kv + a @ v
        den = (q * z.unsqueeze(3)).sum(-1, keepdim=True) + a.sum(-1, keepdim=True)
        o = num / (den + self.eps)
        return self.out_proj(o.permute(0, 2, 3, 1, 4).reshape(b, l, d))

    def init_state(self, ctx, max_len):
        return {"S": torch.rand(self.h, self.dh, self.dh), "z": torch.rand(self.h, self.dh) * ctx}

    def step(self, st, x):
        q = phi(self.q_proj(x).view(self.h, self.dh))
        k = phi(self.k_proj(x).view(self.h, self.dh))
        v = self.v_proj(x).view(self.h, self.dh)
        st["S"] += k.unsqueeze(-1) * v.unsqueeze(-2)
        st["z"] += k
        num = (q.unsqueeze(1) @ st["S"]).squeeze(1)
        den = (q * st["z"]).sum(-1, keepdim=True) + self.eps
        return self.out_proj((num / den).reshape(1, -1))


# ---------------------------------------------------------------- 2.3 GLA
class GLA(nn.Module):
    def __init__(self, d, num_heads=4, expand_k=0.5, expand_v=1.0, low_rank=16, normalizer=16,
                 eps=1e-5, mode="recurrent", chunk=64):
        super().__init__()
        dk, dv = int(d * expand_k), int(d * expand_v)
        self.h, self.dk, self.dv = num_heads, dk // num_heads, dv // num_heads
        self.normalizer, self.eps, self.mode, self.chunk = normalizer, eps, mode, chunk
        self.q_proj, self.k_proj = linear(d, dk, False), linear(d, dk, False)
        self.v_proj, self.g_proj = linear(d, dv, False), linear(d, dv, False)
        self.gk_proj = nn.Sequential(linear(d, low_rank, False), linear(low_rank, dk))
        self.g_norm = nn.Parameter(torch.ones(self.dv))
        self.o_proj = linear(dv, d, False)

    def heads(self, t, dh):
        return t.view(*t.shape[:-1], self.h, dh).transpose(-3, -2)  # b h l d

    def forward(self, x):
        b, l, d = x.shape
        q = self.heads(self.q_proj(x), self.dk) / math.sqrt(self.dk)
        k, v = self.heads(self.k_proj(x), self.dk), self.heads(self.v_proj(x), self.dv)
        gk = self.heads(F.logsigmoid(self.gk_proj(x)) / self.normalizer, self.dk)
        o = self.recurrent(q, k, v, gk) if self.mode == "recurrent" else self.chunked(q, k, v, gk)
        return self.gate_out(o.transpose(1, 2), self.g_proj(x))

    def gate_out(self, o, g):  # o: (..., H, dv) -> per-head rmsnorm, swish gate, o_proj
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + self.eps) * self.g_norm
        return self.o_proj(o.flatten(-2) * F.silu(g))

    def recurrent(self, q, k, v, gk):  # fla naive_recurrent_gla (unbind: see selective_scan_ref)
        b, h, l, _ = q.shape
        s = q.new_zeros(b, h, self.dk, self.dv)
        o = []
        for qt, kt, vt, gt in zip(*(t.unbind(2) for t in (q, k, v, gk))):
            s = s * gt.exp().unsqueeze(-1) + kt.unsqueeze(-1) * vt.unsqueeze(-2)
            o.append((qt.unsqueeze(-1) * s).sum(-2))
        return torch.stack(o, 2)

    def chunked(self, q, k, v, gk):  # GLA paper's chunk form; gates cumulated inside a chunk
        b, h, l, _ = q.shape
        c = min(self.chunk, l)
        q, k, v, gk = (t.reshape(b, h, l // c, c, t.shape[-1]) for t in (q, k, v, gk))
        g = gk.cumsum(3)  # <= 0; |g| stays small for the default normaliser (16)
        qg, kg = q * g.exp(), k * (-g).exp()
        kl = k * (g[:, :, :, -1:] - g).exp()  # decay from each position to the chunk end
        a = (qg @ kg.transpose(-1, -2)).tril()
        o_intra = a @ v
        s = q.new_zeros(b, h, self.dk, self.dv)
        o_inter = []
        for i in range(l // c):
            o_inter.append(qg[:, :, i] @ s)
            s = s * g[:, :, i, -1].exp().unsqueeze(-1) + kl[:, :, i].transpose(-1, -2) @ v[:, :, i]
        return (o_intra + torch.stack(o_inter, 2)).reshape(b, h, l, self.dv)

    def init_state(self, ctx, max_len):
        return {"S": torch.randn(self.h, self.dk, self.dv)}

    def step(self, st, x):
        q = self.q_proj(x).view(self.h, self.dk) / math.sqrt(self.dk)
        k, v = self.k_proj(x).view(self.h, self.dk), self.v_proj(x).view(self.h, self.dv)
        gk = (F.logsigmoid(self.gk_proj(x)) / self.normalizer).view(self.h, self.dk)
        st["S"] = st["S"] * gk.exp().unsqueeze(-1) + k.unsqueeze(-1) * v.unsqueeze(-2)
        o = (q.unsqueeze(1) @ st["S"]).squeeze(1)
        return self.gate_out(o.unsqueeze(0), self.g_proj(x))


# ---------------------------------------------------------------- 2.4 H3
def fftconv(u, k, dskip):  # u: (b, c, l), k: (c, l), causal, as H3's fftconv_ref
    l = u.shape[-1]
    y = torch.fft.irfft(torch.fft.rfft(u, n=2 * l) * torch.fft.rfft(k, n=2 * l), n=2 * l)[..., :l]
    return y + u * dskip.unsqueeze(-1)


class H3(nn.Module):  # head_dim 1: out = out_proj(q * SSM_diag(SSM_shift(k) * v))
    def __init__(self, d, d_state=64):
        super().__init__()
        n, self.n = d_state, d_state
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (linear(d, d) for _ in range(4))
        self.shift_B = nn.Parameter(F.one_hot(torch.zeros(d, dtype=torch.long), n).float())
        self.shift_C = nn.Parameter(torch.empty(d, n).uniform_(-n ** -0.5, n ** -0.5))
        self.shift_D = nn.Parameter(torch.randn(d))
        self.log_dt = nn.Parameter(torch.empty(d).uniform_(math.log(1e-3), math.log(1e-1)))
        self.inv_A_real = nn.Parameter(torch.full((d, n // 2), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(n // 2).float().repeat(d, 1))
        self.diag_B = nn.Parameter(torch.stack([torch.ones(d, n // 2), torch.zeros(d, n // 2)], -1))
        self.diag_C = nn.Parameter(torch.randn(d, n // 2, 2) * 0.5 ** 0.5)
        self.diag_D = nn.Parameter(torch.randn(d))

    def shift_kernel(self):  # f[d, l] = sum_m B[d, m] C[d, m + l]
        cw = F.pad(self.shift_C, (0, self.n)).unfold(1, self.n, 1)[:, : self.n]  # d l m
        return torch.einsum("dm,dlm->dl", self.shift_B, cw)

    def diag_params(self):  # bilinear discretisation: Abar, Ct = C*Bbar, Bbar = B dt/(1-dtA/2)
        dt = self.log_dt.exp().unsqueeze(-1)
        dta = dt * torch.complex(-self.inv_A_real.exp(), self.A_imag)
        bbar = torch.view_as_complex(self.diag_B) * dt / (1 - dta / 2)
        return (1 + dta / 2) / (1 - dta / 2), bbar, torch.view_as_complex(self.diag_C)

    def diag_kernel(self, l):  # K[h, l] = 2 Re(sum_n Ct_n Abar_n^l)
        abar, bbar, c = self.diag_params()
        vand = torch.exp(abar.log().unsqueeze(-1) * torch.arange(l))
        return 2 * torch.einsum("hn,hnl->hl", c * bbar, vand).real

    def forward(self, x):
        l = x.shape[1]
        q, k, v = (p(x).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        ks = fftconv(k, self.shift_kernel(), self.shift_D)
        y = fftconv(ks * v, self.diag_kernel(l), self.diag_D)
        return self.out_proj((q * y).transpose(1, 2))

    def init_state(self, ctx, max_len):
        d = self.shift_D.shape[0]
        with torch.no_grad():
            abar, bbar, c = self.diag_params()
            f = self.shift_kernel()
        return {"kbuf": torch.randn(d, self.n), "f": f.flip(-1), "abar": abar, "bbar": bbar,
                "c": c, "x": torch.randn(d, self.n // 2, dtype=torch.cfloat)}

    def step(self, st, x):
        q, k, v = self.q_proj(x)[0], self.k_proj(x)[0], self.v_proj(x)[0]
        st["kbuf"] = torch.cat([st["kbuf"][:, 1:], k.unsqueeze(-1)], -1)  # last N inputs of k
        ks = (st["kbuf"] * st["f"]).sum(-1) + self.shift_D * k
        u = ks * v
        st["x"] = st["abar"] * st["x"] + st["bbar"] * u.unsqueeze(-1)
        y = 2 * (st["c"] * st["x"]).sum(-1).real + self.diag_D * u
        return self.out_proj((q * y).unsqueeze(0))


# ---------------------------------------------------------------- 2.5 Mamba
class Mamba(nn.Module):
    def __init__(self, d, d_state=16, d_conv=4, expand=2, dt_min=1e-3, dt_max=0.1, floor=1e-4):
        super().__init__()
        e, r = expand * d, math.ceil(d / 16)
        self.e, self.n, self.r = e, d_state, r
        self.in_proj = linear(d, 2 * e, False)
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1)  # default init: U(+-1/sqrt(4))
        self.x_proj = linear(e, r + 2 * d_state, False)
        self.dt_proj = nn.Linear(r, e)
        nn.init.uniform_(self.dt_proj.weight, -r ** -0.5, r ** -0.5)
        dt = torch.exp(torch.rand(e) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1).float()).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = linear(e, d, False)

    def forward(self, u):  # mamba_simple slow path
        b, l, _ = u.shape
        x, z = self.in_proj(u).transpose(1, 2).chunk(2, dim=1)  # b e l
        x = F.silu(self.conv1d(x)[..., :l])
        dl, bm, cm = self.x_proj(x.transpose(1, 2)).split([self.r, self.n, self.n], dim=-1)
        dt = (dl @ self.dt_proj.weight.t()).transpose(1, 2)  # b e l
        y = selective_scan_ref(x, dt, -self.A_log.exp(), bm.transpose(1, 2), cm.transpose(1, 2),
                               self.D, z, self.dt_proj.bias)
        return self.out_proj(y.transpose(1, 2))

    def init_state(self, ctx, max_len):
        return {"conv": torch.randn(self.e, self.conv1d.kernel_size[0]), "ssm": torch.randn(self.e, self.n)}

    def step(self, st, u):  # mamba_simple.step
        x, z = self.in_proj(u)[0].chunk(2)
        st["conv"] = torch.roll(st["conv"], -1, -1)
        st["conv"][:, -1] = x
        x = F.silu((st["conv"] * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)
        dl, bm, cm = self.x_proj(x).split([self.r, self.n, self.n])
        dt = F.softplus(self.dt_proj(dl))
        a = -self.A_log.exp()
        st["ssm"] = st["ssm"] * torch.exp(dt.unsqueeze(-1) * a) + (dt * x).unsqueeze(-1) * bm
        y = st["ssm"] @ cm + self.D * x
        return self.out_proj((y * F.silu(z)).unsqueeze(0))


def selective_scan_ref(u, delta, a, bm, cm, dskip, z, delta_bias):  # mamba's reference scan
    # One CPU fix, same math: the reference indexes delta_a[:, :, i] in the loop, and in the
    # backward every such index materialises a full-size (b, d, l, n) zero tensor (O(L^2) memory
    # traffic: > 5 min per layer here), so the time slices are taken once with unbind.
    delta = F.softplus(delta + delta_bias.unsqueeze(-1))
    delta_a = torch.exp(torch.einsum("bdl,dn->bdln", delta, a))
    delta_b_u = torch.einsum("bdl,bnl,bdl->bdln", delta, bm, u)
    x = u.new_zeros(u.shape[0], u.shape[1], a.shape[1])
    ys = []
    for da, dbu, c in zip(delta_a.unbind(2), delta_b_u.unbind(2), cm.unbind(2)):
        x = da * x + dbu
        ys.append(torch.einsum("bdn,bn->bd", x, c))
    y = torch.stack(ys, dim=2) + u * dskip.unsqueeze(-1)
    return y * F.silu(z)


# ---------------------------------------------------------------- the MQAR language model
class LM(nn.Module):
    def __init__(self, v, d, n_layers=2):
        super().__init__()
        self.emb = nn.Embedding(v, d)
        nn.init.normal_(self.emb.weight, std=0.02)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(n_layers))
        self.mixers = nn.ModuleList(Attention(d, 1) for _ in range(n_layers))
        for m in self.mixers:
            nn.init.normal_(m.out_proj.weight, std=0.02 / math.sqrt(2 * n_layers))
        self.norm_f = nn.LayerNorm(d)

    def forward(self, tokens, labels):
        x = self.emb(tokens)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x))
        logits = self.norm_f(x) @ self.emb.weight.t()
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


# ---------------------------------------------------------------- timing
def median_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench_layer(layer, x, warmup, repeats):
    def fwd_bwd():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(x).sum().backward()
    return median_ms(fwd_bwd, warmup, repeats)


def bench_train_step(warmup, repeats, b=64, l=256, d=128, v=8192):
    torch.manual_seed(0)
    model = LM(v, d)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    tokens = torch.randint(0, v, (b, l))
    labels = torch.where(torch.rand(b, l) < 1 / 8, torch.randint(0, v, (b, l)), torch.full((b, l), -100))

    def step():
        opt.zero_grad(set_to_none=True)
        model(tokens, labels).backward()
        opt.step()
    return median_ms(step, warmup, repeats)


@torch.no_grad()
def bench_decode(layer, ctx, steps, d, windows):
    rates = []
    for _ in range(windows):  # a fresh state of ctx tokens per window; median tokens/s
        st = layer.init_state(ctx, ctx + steps + 1)
        xs = torch.randn(steps + 1, 1, d)
        layer.step(st, xs[-1])  # warm-up
        t0 = time.perf_counter()
        for i in range(steps):
            layer.step(st, xs[i])
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def keep_freed_memory():
    """Make glibc malloc keep freed memory in the process instead of returning it to the OS.

    PyTorch's CPU allocator is plain malloc; by default tensors above glibc's (dynamic) mmap
    threshold are mmap'ed and unmapped on free, so every fresh large tensor pays first-touch page
    faults (~200 ms per 64 MB in the test VM), and how many do depends on what ran before (H3
    measured 0.35 s or 1.4 s for the same code). Caching allocators (jemalloc, tcmalloc, as the
    PyTorch CPU tuning guides advise) avoid this; this is the same effect without a preload.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
    # no mmap'ed chunks, never trim the heap (-1), grow it in steps of 256 MB
    return bool(libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, -1)
                and libc.mallopt(m_top_pad, 256 << 20))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", help="write the results to this file")
    ap.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    ap.add_argument("--plain-malloc", action="store_true",
                    help="leave glibc malloc at its defaults (see keep_freed_memory)")
    ap.add_argument("--only", help="comma-separated layers to run (default: all), e.g. attention,h3")
    ap.add_argument("--heads", type=int, default=1,
                    help="heads of attention and linear attention (default 1; seqmix's benches use 4)")
    ap.add_argument("--no-train", action="store_true", help="skip the MQAR training step")
    ap.add_argument("--no-layers", action="store_true", help="skip the layer forward+backward timings")
    ap.add_argument("--decode-ctx", default="1024,8192", help="decode context lengths (default 1024,8192)")
    ap.add_argument("--repeats", type=int, help="timed repeats of the vectorised forms")
    args = ap.parse_args()
    tuned = False if args.plain_malloc else keep_freed_memory()
    threads = int(os.environ.get("OMP_NUM_THREADS", 2))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    b, l, d = 8, 1024, 256
    fast = (1, 2) if args.quick else (2, args.repeats or 7)   # (warm-up, repeats) for vectorised forms
    slow = (0, 1) if args.quick else (1, 3)   # for the Python loops over L
    dec_steps, dec_windows = (32, 1) if args.quick else (128, 3)
    has_sdpa = hasattr(F, "scaled_dot_product_attention")

    layers = {  # name: (module, reps, decode-able)
        "attention": (Attention(d, args.heads), fast, True),
        "attention_sdpa": (Attention(d, args.heads, use_sdpa=True), fast, False),
        "linear_attention": (LinearAttention(d, args.heads), fast, True),
        "gla": (GLA(d, mode="recurrent"), slow, True),
        "gla_chunk": (GLA(d, mode="chunk"), fast, False),
        "h3": (H3(d), fast, True),
        "mamba": (Mamba(d), slow, True),
    }
    if args.only:
        keep = args.only.split(",")
        unknown = [k for k in keep if k not in layers]
        if unknown:
            ap.error(f"--only: unknown layer(s) {unknown}; known: {list(layers)}")
        layers = {k: v for k, v in layers.items() if k in keep}
    contexts = [int(c) for c in args.decode_ctx.split(",") if c]
    load = round(os.getloadavg()[0], 2)  # other work on the machine distorts OpenMP timings badly
    print(f"torch {torch.__version__}, {threads} threads, load average {load}, "
          f"malloc {'keeps freed memory' if tuned else 'default'}; "
          f"layer fwd+bwd at B={b} L={l} D={d} float32, attention heads {args.heads}")
    res = {"threads": threads, "torch": torch.__version__, "load_average": load,
           "malloc_keeps_freed_memory": tuned, "layers": {}, "decode": {}}
    x = torch.randn(b, l, d, requires_grad=True)
    for name, (layer, (w, r), _) in layers.items():
        if args.no_layers:
            break
        if name == "attention_sdpa" and not has_sdpa:
            print(f"  {name:18s} n/a (torch < 2.0 has no scaled_dot_product_attention)")
            continue
        ms = bench_layer(layer, x, w, r)
        res["layers"][name] = {"ms": round(ms, 2), "tokens_per_s": round(b * l / ms * 1e3, 1)}
        print(f"  {name:18s} {ms:10.1f} ms  {b * l / ms * 1e3:12.0f} tokens/s", flush=True)

    if not args.no_train:
        w, r = (1, 2) if args.quick else (2, 5)
        res["train_step_ms"] = round(bench_train_step(w, r), 2)
        print(f"MQAR train step (2 attention layers, B=64 L=256 D=128 V=8192, AdamW): "
              f"{res['train_step_ms']:.1f} ms", flush=True)

    if contexts and any(dec for _, _, dec in layers.values()):
        print(f"decode, batch 1, D={d}, median of {dec_windows} x {dec_steps} single-token steps (tokens/s):")
        print(f"  {'':18s}" + "".join(f" {f'{n // 1024}k ctx':>12s}" for n in contexts))
    for name, (layer, _, decodes) in layers.items():
        if not decodes or not contexts:
            continue
        r = {f"{n // 1024}k": round(bench_decode(layer, n, dec_steps, d, dec_windows), 1) for n in contexts}
        res["decode"][name] = r
        print(f"  {name:18s}" + "".join(f" {v:12.0f}" for v in r.values()), flush=True)
    res["load_average_end"] = round(os.getloadavg()[0], 2)
    print(f"load average at the end {res['load_average_end']} (this run alone adds about 2; with "
          f"2 threads, any other busy process makes the small OpenMP ops of the loops wait)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
