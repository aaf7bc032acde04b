// Helpers shared by the op tests.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/tensor.h"

namespace seqmix::testing {

// Backpropagates loss = sum(y * gy) through a tiny tape node of its own, so the
// seed does not depend on any op under test. gy may be of another float dtype.
void backprop_with(const Tensor& y, const Tensor& gy);

// Bit-for-bit equality of two tensors' values.
::testing::AssertionResult same_values(const Tensor& a, const Tensor& b);

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
