// The fused core of causal multi-head softmax attention (docs/mixers.md#attention), one
// differentiable op with a hand-written FlashAttention-style backward. Reference twin
// (plain loops, the tests' oracle): tests/support/reference_attention.h, the whole layer as
// reference_attention_forward / reference_attention_backward and this op as
// reference_attention_core / reference_attention_core_backward.
#pragma once

#include <cstdint>

#include "core/random.h"
#include "core/tensor.h"

namespace seqmix {

// How the backward finds dK and dV without atomics. Both give bit-identical
// results (same blocks, same summation order); they differ only in how the work
// is split over threads. automatic picks per_head when B*H alone keeps every
// thread busy, two_pass otherwise.
enum class AttentionBackwardAlgo {
  automatic,
  per_head,  // one thread owns a whole (b, h): dQ, dK, dV in one sweep
  two_pass,  // a pass over key blocks for dK, dV, then one over query blocks for dQ
};

// qkv: (B, L, 3D), the output of Wqkv: columns [0, D) are q, [D, 2D) k, [2D, 3D) v;
// head h owns columns [h*dh, (h+1)*dh) of each, dh = D / num_heads.
// Returns o: (B, L, D), heads concatenated:
//   o_i = sum_{j <= i} softmax_j(q_i . k_j / sqrt(dh)) v_j
// Dropout on the probabilities (inverted: kept ones scaled by 1/(1-p)) when
// dropout_p > 0; it then reserves B*H*L*L counters of gen, and the mask of
// element (b, h, i, j) is drawn from counter start + ((b*H + h)*L + i)*L + j, so
// the backward regenerates it and it does not depend on the thread count.
// dropout_p == 0 touches neither gen nor any mask code.
// Keeps for backward only qkv, the output and the per-row log-sum-exp (B, H, L):
// never an (L, L) probability matrix.
Tensor causal_attention(const Tensor& qkv, int64_t num_heads, double dropout_p, Generator& gen,
                        AttentionBackwardAlgo algo = AttentionBackwardAlgo::automatic);

// The rows of a query (and key) block of the kernel, for benchmarks and tests that aim at
// its block boundaries.
int64_t attention_block_rows();

}  // namespace seqmix
