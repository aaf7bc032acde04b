// Plain-loop oracle for causal multi-head attention (docs/mixers.md#attention), for tests only.
//
// Everything is computed in double from the given tensors (any float dtype) and
// returned as float64 tensors. The full (L, L) probability matrix is formed, the
// softmax normalises with the row maximum, and the backward is written from the
// textbook softmax Jacobian (dS = P * (dP - rowsum(P * dP))), not from the
// delta = rowsum(O * dO) identity the fused kernel uses.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "layers/options.h"
#include "tests/support/reference_twin.h"

namespace seqmix::testing {

// Dropout as the fused kernel defines it: element (b, h, i, j) is kept iff
// u64_to_unit(hash_counter(seed, start + ((b*H + h)*L + i)*L + j)) >= p, and kept
// probabilities are scaled by 1/(1-p). p = 0: no dropout.
struct RefAttentionDropout {
  double p = 0.0;
  uint64_t seed = 0, start = 0;
};

// qkv: (B, L, 3D) -> o: (B, L, D).
Tensor reference_attention_core(const Tensor& qkv, int64_t num_heads, const RefAttentionDropout& dropout = {});

// The gradient of sum(o * dout) with respect to qkv: (B, L, 3D).
Tensor reference_attention_core_backward(const Tensor& qkv, const Tensor& dout, int64_t num_heads,
                                         const RefAttentionDropout& dropout = {});

// The whole layer (the API of tests/support/reference_twin.h): y = out_proj(core(Wqkv x + b)),
// with the dropout mask above when training with dropout.
Tensor reference_attention_forward(const NamedTensors& params, const AttentionOptions& opt, const Tensor& x,
                                   const RefAttentionDropout& dropout = {});
ReferenceGrads reference_attention_backward(const NamedTensors& params, const AttentionOptions& opt, const Tensor& x,
                                            const Tensor& dy);

}  // namespace seqmix::testing
