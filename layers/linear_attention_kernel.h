// The fused core of causal linear attention (docs/mixers.md#linear_attention), one differentiable op
// with a hand-written chunked backward. Reference twin (plain loops, the tests' oracle):
// tests/support/reference_linear_attention.h, the whole layer as
// reference_linear_attention_forward / reference_linear_attention_backward and this op as
// reference_linear_attention_core / reference_linear_attention_core_backward.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace seqmix {

// q, k, v: (B, L, D), the projections before the feature map; head h owns
// columns [h*d, (h+1)*d), d = D / num_heads. With phi(x) = elu(x) + 1, per head
//   o_t = phi(q_t)^T S_t / (phi(q_t) . z_t + eps),
//   S_t = sum_{s <= t} phi(k_s) v_s^T,  z_t = sum_{s <= t} phi(k_s)
// Returns o: (B, L, D), heads concatenated. No 1/sqrt(d) scaling.
// Computed in chunks of kLinearAttentionChunk tokens, one (b, h) per task; keeps
// for backward the feature maps, v and the normalisers (B, H, L). The backward
// rebuilds the chunk-boundary states in a forward sweep (for dq) and a reverse
// sweep (for dk, dv): S_t is never stored for every t, nor for every chunk.
Tensor causal_linear_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads, double eps);

inline constexpr int64_t kLinearAttentionChunk = 64;

}  // namespace seqmix
