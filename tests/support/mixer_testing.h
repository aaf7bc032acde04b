// Helpers shared by the mixer tests.
#pragma once

#include <omp.h>

#include <vector>

#include "core/random.h"
#include "layers/module.h"

namespace seqmix::testing {

// loss = sum(y * r) (summed in double) through a tape node of its own, so that a backward
// drives y with the output gradient r; y and r may differ in dtype.
Tensor weighted_sum(const Tensor& y, const Tensor& r);
// backward(weighted_sum(y, r)).
void backward_weighted(const Tensor& y, const Tensor& r);

bool bit_equal(const Tensor& a, const Tensor& b);

// Gradient checks and decoding steps run on one thread: they evaluate thousands
// of tiny ops, where forking a team per op costs more than the work; the
// threaded paths are covered by the float32 tests.
struct SingleThread {
  int saved = omp_get_max_threads();
  SingleThread() { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(saved); }
};

NamedTensors params_of(const Mixer& m);

// Overwrites every parameter with U(lo, hi) values: the default init (std 0.02)
// keeps pre-activations near 0, which would hide errors in softmax or feature maps.
void randomise(const Mixer& m, Generator& gen, double lo = -0.5, double hi = 0.5);

// Causality: changing input t0 (float64 x of shape (B, L, D)) leaves every output
// before t0 bit-identical and changes output t0.
void expect_causal(Mixer& layer, const Tensor& x, const std::vector<int64_t>& changed_positions);

// Copies the parameter values of `from` into `to` (converting the dtype).
void copy_params(const Mixer& from, const Mixer& to);

}  // namespace seqmix::testing
