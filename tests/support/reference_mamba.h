// Slow plain-loop twin of the mamba mixer (docs/mixers.md#mamba), in double, for tests only.
//
// Everything is std::vector<double> in row-major order, computed straight from the
// documented formulas: the scan keeps h for every step (no chunking), the projections
// are triple loops, and the backward is the chain rule written out step by step.
// It is the oracle of the fused float32 kernels (layers/mamba_conv.cpp, mamba_scan.cpp) and of
// the whole layer (layers/mamba.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"
#include "layers/options.h"
#include "tests/support/reference_twin.h"

namespace seqmix::testing {

using Vec = std::vector<double>;

// ---- the selective scan with gate -------------------------------------------
struct RefScanInputs {
  int64_t B = 0, L = 0, E = 0, N = 0;
  Vec u, dr;  // (B, L, E); dr is delta before softplus
  Vec A_log;  // (E, N)
  Vec Bt, Ct; // (B, L, N)
  Vec D;      // (E)
  Vec z;      // (B, L, E)
};
struct RefScanGrads {
  Vec u, dr, A_log, Bt, Ct, D, z;
};
Vec ref_scan_forward(const RefScanInputs& in);
RefScanGrads ref_scan_backward(const RefScanInputs& in, const Vec& dout);

// ---- causal depthwise conv1d + bias + silu ------------------------------------
// x: (B, L, E), w: (E, K), bias: (E) -> (B, L, E)
Vec ref_conv_forward(const Vec& x, const Vec& w, const Vec& bias, int64_t B, int64_t L, int64_t E, int64_t K);
struct RefConvGrads {
  Vec x, w, bias;
};
RefConvGrads ref_conv_backward(const Vec& x, const Vec& w, const Vec& bias, int64_t B, int64_t L, int64_t E,
                               int64_t K, const Vec& dout);

// ---- the whole layer ----------------------------------------------------------
struct RefMambaParams {
  int64_t Dm = 0, E = 0, N = 0, R = 0, K = 0;
  // In the order of MambaMixer::named_parameters.
  Vec in_w, conv_w, conv_b, x_w, dt_w, dt_b, A_log, D, out_w;
};
// From the layer's named parameters (the sizes are read from their shapes).
RefMambaParams ref_params_from(const NamedTensors& params);
// x: (B, L, Dm) -> (B, L, Dm)
Vec ref_mamba_forward(const RefMambaParams& p, const Vec& x, int64_t B, int64_t L);
struct RefMambaGrads {
  Vec x;
  std::vector<Vec> params;  // in the order of named_parameters
};
RefMambaGrads ref_mamba_backward(const RefMambaParams& p, const Vec& x, int64_t B, int64_t L, const Vec& dout);

// The whole layer on Tensors (the API of tests/support/reference_twin.h).
Tensor reference_mamba_forward(const NamedTensors& params, const MambaOptions& opt, const Tensor& x);
ReferenceGrads reference_mamba_backward(const NamedTensors& params, const MambaOptions& opt, const Tensor& x,
                                        const Tensor& dy);

}  // namespace seqmix::testing
