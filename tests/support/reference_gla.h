// Slow plain-loop reference for gated linear attention (docs/mixers.md#gla), in double, for the
// tests only: the recurrence step by step (forward and its reverse-mode backward,
// keeping every state), the output gate, and the whole layer from its parameters
// without oneDNN. Inputs may be float32 or float64; results are float64.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"
#include "layers/options.h"
#include "tests/support/reference_twin.h"

namespace seqmix::testing {

// q, k, u: (B, L, H*dk); v: (B, L, H*dv) -> o: (B, L, H*dv).
// log a_t = logsigmoid(u_t)/normalizer, S_t = diag(a_t) S_{t-1} + k_t v_t^T, o_t = (scale q_t)^T S_t.
Tensor reference_gla_core(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u, int64_t heads,
                          double scale, double normalizer);

// Gradients {dq, dk, dv, du} of sum(o * dO) for the recurrence above, by the
// reverse-mode recurrence:
//   dS += (scale q_t) dO_t^T;  dq_t = scale S_t dO_t;  dk_t = dS v_t;  dv_t = dS^T k_t;
//   d log a_t = a_t * rowsum(dS * S_{t-1});  dS = diag(a_t) dS.
std::vector<Tensor> reference_gla_core_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u,
                                                const Tensor& dO, int64_t heads, double scale, double normalizer);

// y = rmsnorm over each head's dv channels * weight * swish(g); o, g: (..., H*dv), weight (dv).
Tensor reference_gla_norm_gate(const Tensor& o, const Tensor& g, const Tensor& weight, int64_t heads, double eps);

// The whole layer (the API of tests/support/reference_twin.h):
// y = o_proj(norm_gate(core(q_proj x, k_proj x, v_proj x, gk_proj.1(gk_proj.0 x)), g_proj x)).
Tensor reference_gla_forward(const NamedTensors& params, const GlaOptions& opt, const Tensor& x);
ReferenceGrads reference_gla_backward(const NamedTensors& params, const GlaOptions& opt, const Tensor& x,
                                      const Tensor& dy);

}  // namespace seqmix::testing
