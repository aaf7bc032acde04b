// Plain-loop oracle for causal linear attention (docs/mixers.md#linear_attention), for tests only.
//
// Everything is computed in double and returned as float64 tensors. The forward
// runs the recurrence S_t = S_{t-1} + phi(k_t) v_t^T, z_t = z_{t-1} + phi(k_t)
// token by token; the backward is written from the quadratic form
// o_t = sum_{s <= t} a_ts v_s / (sum_{s <= t} a_ts + eps), a_ts = phi(q_t) . phi(k_s),
// independent of the chunked derivation of the fused kernel.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "layers/options.h"
#include "tests/support/reference_twin.h"

namespace seqmix::testing {

// q, k, v: (B, L, D) before the feature map -> o: (B, L, D).
Tensor reference_linear_attention_core(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads,
                                       double eps);

struct LinearAttentionGrads {
  Tensor dq, dk, dv;  // (B, L, D) each
};

// Gradients of sum(o * dout) with respect to q, k and v.
LinearAttentionGrads reference_linear_attention_core_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                                              const Tensor& dout, int64_t num_heads, double eps);

// The whole layer (the API of tests/support/reference_twin.h):
// y = out_proj(core(q_proj x, k_proj x, v_proj x)).
Tensor reference_linear_attention_forward(const NamedTensors& params, const LinearAttentionOptions& opt,
                                          const Tensor& x);
ReferenceGrads reference_linear_attention_backward(const NamedTensors& params, const LinearAttentionOptions& opt,
                                                   const Tensor& x, const Tensor& dy);

}  // namespace seqmix::testing
