// Slow plain-loop reference of H3 (docs/mixers.md#h3) in double, for tests only.
//
// It takes the kernel route the fused ops avoid: the shift filter f and the
// diagonal SSM's convolution kernel K_h[l] = 2 Re(sum_n Ct_n Abar_n^l) are built
// explicitly (Abar^l by std::pow), then both SSMs are direct causal
// convolutions, O(L^2). The backward goes through dK[h][l] = sum dy[t] u[t-l]
// and the derivative of K in its parameters, so it shares no loop with the
// recurrence-based backward of layers/h3_shift.cpp and h3_diag.cpp. Inputs may be
// float32 or float64; every result is float64.
#pragma once

#include <string>

#include "core/tensor.h"
#include "layers/h3_kernel.h"
#include "layers/module.h"
#include "layers/options.h"
#include "tests/support/reference_twin.h"

namespace seqmix::testing {

// f (D, N): f_d[l] = sum_m B[d,m] C[d,m+l] (without ssm_shift.D).
Tensor ref_h3_shift_filter(const H3SsmParams& p);
// K (H, L).
Tensor ref_h3_diag_kernel(const H3SsmParams& p, int64_t L);

// kt = SSM_shift(k): k (B, L, D) -> (B, L, D).
Tensor ref_h3_shift_forward(const Tensor& k, const H3SsmParams& p);
// o[t, h*dh+d2] = sum_d1 q[t,h*dh+d1] (K_h * kv + D_h kv)[t,h,d1,d2].
Tensor ref_h3_diag_forward(const Tensor& q, const Tensor& kt, const Tensor& v, const H3SsmParams& p);

struct RefH3Grads {
  Tensor dk;                                       // from the shift backward
  Tensor d_shift_B, d_shift_C, d_shift_D;          // from the shift backward
  Tensor dq, dkt, dv;                              // from the diagonal backward
  Tensor d_log_dt, d_inv_A_real, d_A_imag, d_diag_B, d_diag_C, d_diag_D;
};
// Gradients of sum(kt * dkt) in k and the shift parameters.
void ref_h3_shift_backward(const Tensor& dkt, const Tensor& k, const H3SsmParams& p, RefH3Grads& g);
// Gradients of sum(o * dout) in q, kt, v and the diagonal parameters.
void ref_h3_diag_backward(const Tensor& dout, const Tensor& q, const Tensor& kt, const Tensor& v,
                          const H3SsmParams& p, RefH3Grads& g);

// The whole layer (the API of tests/support/reference_twin.h):
// y = out_proj(diag(q_proj x, shift(k_proj x), v_proj x)).
Tensor reference_h3_forward(const NamedTensors& params, const H3Options& opt, const Tensor& x);
ReferenceGrads reference_h3_backward(const NamedTensors& params, const H3Options& opt, const Tensor& x,
                                     const Tensor& dy);

}  // namespace seqmix::testing
