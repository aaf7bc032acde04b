// Differentiable ops. Each op's forward and hand-written backward live side by
// side in one core/ops_*.cpp file; every op works in float32 and float64 (the
// gradient checks run in float64) and records a tape node only when grad mode is
// on and an input requires a gradient. Shapes are checked at entry: a mismatch
// throws ShapeError naming the op and the shapes.
//
// Broadcasting is of a trailing shape only: in add/sub, b's shape must
// equal a trailing suffix of a's shape (b of shape (D) against a of (B, L, D)),
// or the two shapes are equal.
#pragma once

#include <cstdint>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace seqmix {

// ---- matmul.cpp (oneDNN for float32, a plain loop for float64) ----
// a: (..., M, K), or (..., K, M) with trans_a; b: (..., K, N), or (..., N, K) with
// trans_b. Batch dimensions of b equal a's, or b is 2-D and shared by every batch.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// y = x W^T + bias; x: (..., in), w: (out, in), bias: (out) or undefined.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// ---- ops_elementwise.cpp ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, double s);

// ---- ops_unary.cpp ----
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);        // exact: x * Phi(x) with erf
Tensor softplus(const Tensor& x);    // x > 20 ? x : log1p(exp(x))
Tensor elu(const Tensor& x);         // alpha = 1
Tensor logsigmoid(const Tensor& x);  // stable: min(x,0) - log1p(exp(-|x|))

// ---- ops_reduce.cpp ----
Tensor sum(const Tensor& x);       // all elements -> shape {}
Tensor mean(const Tensor& x);      // all elements -> shape {}

// ---- ops_norm.cpp ----
Tensor softmax(const Tensor& x);  // over the last axis
// x: (..., D), weight and bias: (D); biased variance; bias may be undefined.
Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
// y = x * rsqrt(mean(x^2) + eps) * weight
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps = 1e-5);

// ---- ops_embedding.cpp ----
// ids: int32 of any shape with values in [0, V); weight: (V, D) -> (..., D).
Tensor embedding(const Tensor& ids, const Tensor& weight);

// ---- ops_loss.cpp ----
// Fused log-softmax + cross-entropy. logits: (..., V); labels: int32 (...);
// label == -100 is ignored. Returns the mean over non-ignored positions, shape {}
// (0 when every label is ignored).
inline constexpr int32_t kIgnoreLabel = -100;
Tensor cross_entropy(const Tensor& logits, const Tensor& labels);
// The number of rows whose prediction, the first index of a largest logit, is the
// label; ignored rows do not count. A NaN logit is never predicted, except that a
// NaN in a row's first place predicts index 0. No gradient.
int64_t count_correct(const Tensor& logits, const Tensor& labels);

// ---- ops_shape.cpp ----
// One dimension may be -1. Shares the buffer.
Tensor reshape(const Tensor& x, const Shape& shape);
std::vector<Tensor> split(const Tensor& x, int64_t axis, const std::vector<int64_t>& sizes);
// x: (N, D), index: int32 (M) with values in [0, N) -> (M, D). Repeated indices
// accumulate in the backward.
Tensor gather_rows(const Tensor& x, const Tensor& index);

// ---- ops_dropout.cpp ----
// Inverted dropout: kept units scaled by 1/(1-p). Identity when !training or p == 0.
// Draws numel counters from gen, one per element, so the mask does not depend on
// the thread count.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

}  // namespace seqmix
