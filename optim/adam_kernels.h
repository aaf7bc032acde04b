// The elementwise kernels of the optimizer step: the Adam(W) update of one block of
// a tensor, the sum of squares of one block of a gradient, and their plain twins
// (the double-precision loops the optimizer used before; tests and bench/bench_optim
// compare against them). optim/adamw.cpp splits every tensor into fixed blocks and
// runs these over the blocks in parallel.
#pragma once

#include <cstdint>

#include "optim/adamw.h"

namespace seqmix {

// What one step computes once per tensor instead of once per element.
struct AdamStepConstants {
  double grad_scale;    // clip coefficient folded into the update (1: none)
  double decay_factor;  // AdamW: 1 - lr * wd; Adam: 1
  double l2;            // Adam: wd folded into the gradient; AdamW: 0
  double beta1, beta2;
  double bc2_sqrt;      // sqrt(1 - beta2^t)
  double step_size;     // lr / (1 - beta1^t)
  double eps;
  bool decoupled;
};

AdamStepConstants adam_step_constants(double lr, const AdamOptions& o, bool decay, int64_t t, double grad_scale);

// One block, arithmetic in T (float32 parameters: float32 throughout, as PyTorch):
//   g <- g * grad_scale;  AdamW: p <- p * decay_factor;  Adam: g <- g + l2 * p
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2   (moments stored as float32)
//   p <- p - step_size * m / (sqrt(v) / bc2_sqrt + eps)
// Each element depends only on its own inputs; the float32 path is AVX-512 with a
// scalar tail of the same operations (fused multiply-adds in both). Returns whether
// every stored p, m and v is finite: the check rides on the pass that writes them,
// where a separate scan of the whole model state cost a pass over memory per step.
template <class T>
bool adam_update_block(T* p, float* m, float* v, const T* g, int64_t n, const AdamStepConstants& c);

// The reference twin: the per-element double loop (double sqrt and divide), serial.
template <class T>
void adam_update_reference(T* p, float* m, float* v, const T* g, int64_t n, double lr, const AdamOptions& o,
                           bool decay, int64_t t);

// Sum of squares of x[0..n) in double with 8 interleaved accumulators (element i goes to
// accumulator i mod 8, combined pairwise at the end): a fixed order, so the result depends
// only on the data and n, never on which thread runs the block.
template <class T>
double sum_squares_block(const T* x, int64_t n);

// The reference twin of grad_norm: one sequential double sum over every element in order.
double grad_norm_reference(const NamedTensors& params);

}  // namespace seqmix
