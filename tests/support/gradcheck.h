// Finite-difference gradient checks in float64.
//
// gradcheck(f, inputs) builds loss = sum(f(inputs) * R) for a fixed random R
// (so every output element matters), runs the tape backward, and compares every
// input's analytic gradient with central differences
//   (loss(x + eps e_i) - loss(x - eps e_i)) / (2 eps)
// element by element. Inputs must be float64; those with requires_grad are checked.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace seqmix::testing {

struct GradCheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  uint64_t seed = 1234;
  // 0: check every element. Otherwise a seeded random subset of at most this many
  // elements per input (for whole-model checks, whose layers are checked in full
  // elsewhere).
  int64_t max_elements_per_input = 0;
};

using GradFn = std::function<Tensor(const std::vector<Tensor>&)>;

::testing::AssertionResult gradcheck(const GradFn& f, const std::vector<Tensor>& inputs,
                                     const GradCheckOptions& opt = {});

// Random float64 tensor with entries ~ U(lo, hi), requiring a gradient.
Tensor rand_f64(const Shape& shape, Generator& gen, double lo = -1.0, double hi = 1.0, bool requires_grad = true);
// Same for float32 (no gradient by default).
Tensor rand_f32(const Shape& shape, Generator& gen, double lo = -1.0, double hi = 1.0, bool requires_grad = false);

// max |a - b| / (atol + rtol |b|) <= 1 elementwise, with the worst index reported.
::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, double rtol, double atol);

}  // namespace seqmix::testing
