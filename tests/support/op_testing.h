// Helpers shared by every test of ops and layers: the one way to drive a backward with a
// chosen output gradient, the one bit-for-bit comparison, the one thread-count guard.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <string>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace seqmix::testing {

// loss = sum(y * r) (summed in double) through a tape node of its own, so that the seed
// of a backward depends on no op under test; y and r may differ in float dtype.
Tensor weighted_sum(const Tensor& y, const Tensor& r);
// backward(weighted_sum(y, r)): drives y with the output gradient r.
void backward_weighted(const Tensor& y, const Tensor& r);
// The same for several outputs at once (the outputs of one op): ys[k] is driven by rs[k];
// an undefined rs[k] sends nothing into ys[k].
void backward_weighted(const std::vector<Tensor>& ys, const std::vector<Tensor>& rs);

// max |t_i| (0 for an empty tensor): the scale of a tensor in relative tolerances.
double max_abs(const Tensor& t);

// Small awkward shapes for the op tests: a single element, an odd length, and shapes whose
// last axis is not a multiple of any vector width.
inline const std::vector<Shape> kAwkwardShapes = {{1}, {7}, {3, 5}, {2, 3, 17}};

// Bit-for-bit equality of two tensors (shape, dtype and every value), naming the first
// difference.
::testing::AssertionResult same_values(const Tensor& a, const Tensor& b);
// The same for named tensors (parameters, checkpoints): names, shapes and values.
::testing::AssertionResult same_values(const NamedTensors& a, const NamedTensors& b);

// Sets the OpenMP thread count for a scope and restores it after (also when a test
// fails out of the scope). Gradient checks and decoding steps run on ThreadCount(1): they
// evaluate thousands of tiny ops, where forking a team per op costs more than the work.
class ThreadCount {
 public:
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;
  int saved() const { return saved_; }  // the count before the scope

 private:
  int saved_ = omp_get_max_threads();
};

// Runs f and expects a ShapeError whose message contains every one of parts.
template <class F>
void expect_shape_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected a ShapeError";
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

}  // namespace seqmix::testing
