// Fused differentiable ops of the mamba mixer (docs/mixers.md#mamba), each with a hand-written
// CPU backward: the conv and the column linear in layers/mamba_conv.cpp, the selective
// scan in layers/mamba_scan.cpp (each with its recurrent step beside it). Reference twin
// (plain loops, the tests' oracle): tests/support/reference_mamba.h, the whole layer as
// reference_mamba_forward / reference_mamba_backward and these ops as ref_conv_forward /
// ref_conv_backward and ref_scan_forward / ref_scan_backward.
//
// The mixer's projections produce wide tensors whose parts feed different ops:
// in_proj gives xz = [x | z] (B, L, 2E) and x_proj gives x_dbl = [dl | Bt | Ct]
// (B, L, R+2N). Rather than copying the parts out (three extra passes over the
// activations and three extra tensors kept for the backward), the ops below read
// their operands in place from column ranges of those tensors, and their backward
// accumulates (+=) into the same columns of the source's gradient buffer. Two ops
// may therefore share one source tensor (the conv reads x from xz, the scan reads
// z from it); each adds only into its own columns.
//
// Backward accumulates (+=) into gradient buffers (the tape zeroes them once per
// step) and skips inputs that do not require a gradient.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace seqmix {

// Columns [col, col + width) of the last axis of a (B, L, C) tensor ((B, C) in the
// recurrent steps), read in place.
struct ColumnSlice {
  Tensor src;       // (B, L, C) or (B, C)
  int64_t col = 0;  // first column; the width is implied by the op
};

// Causal depthwise conv1d + bias + silu over x = src[..., col : col+E]:
//   xc[b,t,e] = silu(bias[e] + sum_{j<K} w[e,0,j] * x[b, t-K+1+j, e])   (x[<0] = 0)
// w: (E, 1, K), bias: (E) -> xc (B, L, E) contiguous.
Tensor mamba_conv1d_silu(const ColumnSlice& x, const Tensor& w, const Tensor& bias);

// y = x W^T + bias with x = src[..., col : col+K] read in place; w: (O, K), bias: (O)
// or undefined -> (..., O). (mamba's dt_proj applied to the dl columns of x_dbl.)
Tensor mamba_linear_columns(const ColumnSlice& x, const Tensor& w, const Tensor& bias);

// The fused selective scan with its gate (docs/mixers.md#mamba; selective_scan_fn of
// mamba_ssm with delta_softplus and z):
//   delta = softplus(delta_raw), A = -exp(A_log),
//   h_t[e,n] = exp(delta[t,e] A[e,n]) h_{t-1}[e,n] + delta[t,e] Bt[t,n] u[t,e],   h_{-1} = 0
//   y[t,e]   = sum_n h_t[e,n] Ct[t,n] + D[e] u[t,e]
//   out      = y * silu(z)
// u, delta_raw: (B, L, E); A_log: (E, N); D: (E); Bt = bc.src[..., bc.col : +N];
// Ct = cc.src[..., cc.col : +N]; z = z.src[..., z.col : +E] -> out (B, L, E).
// The forward keeps h only at the starts of chunks of `chunk` steps (B * ceil(L/chunk)
// * E * N values); the backward recomputes h inside each chunk and sweeps it in reverse.
Tensor selective_scan(const Tensor& u, const Tensor& delta_raw, const Tensor& A_log, const ColumnSlice& bc,
                      const ColumnSlice& cc, const Tensor& D, const ColumnSlice& z, int64_t chunk = 64);

// One recurrent step of the same computation (no tape), for decoding. Updates
// h: (B, E, N) in place and returns out (B, E). u, delta_raw, z: (B, E); Bt, Ct:
// (B, N) read from columns of bc.src / cc.src of shape (B, C). as_cache: (E, N),
// the decay coefficients -exp(A_log) * ScanDecay::kScale; computed into it when
// undefined, so that a decode state pays the E*N exponentials once, not per token.
Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta_raw, const Tensor& A_log,
                           const ColumnSlice& bc, const ColumnSlice& cc, const Tensor& D, const ColumnSlice& z,
                           Tensor& as_cache);

// One recurrent step of mamba_conv1d_silu (no tape). conv_state: (B, K-1, E), the
// last K-1 inputs, oldest first, updated in place; x = src[..., col : +E] of a (B, C)
// tensor -> xc (B, E).
Tensor mamba_conv1d_silu_step(Tensor& conv_state, const ColumnSlice& x, const Tensor& w, const Tensor& bias);

}  // namespace seqmix
