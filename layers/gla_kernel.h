// The fused ops of gated linear attention (docs/mixers.md#gla): the chunked recurrence
// (layers/gla_kernel.cpp) and the per-head rmsnorm * swish output gate (layers/gla_gate.cpp),
// each one differentiable op with a hand-written backward. Reference twin (plain loops, the
// tests' oracle): tests/support/reference_gla.h, the whole layer as reference_gla_forward /
// reference_gla_backward and these ops as reference_gla_core / reference_gla_core_backward
// and reference_gla_norm_gate.
#pragma once

#include <cstdint>

#include "core/tensor.h"

namespace seqmix {

// Chunk length of the parallel form (docs/mixers.md#gla) and the sub-chunk length inside it:
// scores between sub-chunks factor through a reference position, scores inside a
// diagonal sub-chunk are computed pairwise (every exponent stays <= 0).
inline constexpr int64_t kGlaChunk = 64;
inline constexpr int64_t kGlaSubChunk = 16;

// How gla_chunk_attention computes the recurrence (layers/gla_kernel.cpp): step by step
// across all heads of a sequence (kRecurrent), or in chunks of kGlaChunk positions
// (kChunked). kAuto takes the recurrent form for heads with dk * dv <= 4096, the chunked
// one above; the tests run both forms on every shape.
enum class GlaForm { kAuto, kChunked, kRecurrent };

// The fused recurrence. q, k, gate_logits: (B, L, H*dk); v: (B, L, H*dv), heads
// side by side in the last axis. Returns o: (B, L, H*dv) with
//   log a_t = logsigmoid(gate_logits_t) / gate_logit_normalizer,
//   S_t = diag(a_t) S_{t-1} + k_t v_t^T,  o_t = (q_t * scale)^T S_t.
// Differentiable in q, k, v and gate_logits (exact gate gradient).
Tensor gla_chunk_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate_logits,
                           int64_t num_heads, double scale, double gate_logit_normalizer,
                           GlaForm form = GlaForm::kAuto);

// y = o * rsqrt(mean_head(o^2) + eps) * weight * swish(g), the mean over each head's
// dv channels. o, g: (..., H*dv); weight: (dv), shared by the heads.
Tensor gla_norm_gate(const Tensor& o, const Tensor& g, const Tensor& weight, int64_t num_heads, double eps);

}  // namespace seqmix
