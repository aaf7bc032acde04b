// Internal to the mamba kernels (mamba_conv.cpp, mamba_scan.cpp): thresholds and the
// small helpers both use.
#pragma once

#include <cstdint>
#include <string>

#include "core/tensor.h"
#include "layers/mamba_kernel.h"
#include "layers/mamba_math.h"

namespace seqmix::mamba_detail {

// Below this many inner-loop operations a loop runs on the calling thread: forking
// the team costs microseconds (milliseconds when the cores are oversubscribed),
// which would dominate the small shapes of decoding steps and gradient checks.
// Tasks are independent, so the choice never changes a result.
constexpr int64_t kMinParallelWork = int64_t(1) << 15;

using mamba_math::silu;
using mamba_math::silu_grad;
using mamba_math::sigmoid;
using mamba_math::softplus;
using mamba_math::softplus_grad;

// Copies ne <= W values into a lane array, zero-filling the rest. The lane loops
// that follow then run over all W lanes unconditionally, so that they vectorise.
template <int64_t W, class T>
inline void load_lanes(T* dst, const T* src, int64_t ne) {
  if (ne == W) {
    for (int64_t i = 0; i < W; ++i) dst[i] = src[i];
  } else {
    for (int64_t i = 0; i < W; ++i) dst[i] = 0;
    for (int64_t i = 0; i < ne; ++i) dst[i] = src[i];
  }
}

inline std::string shp(const Tensor& t) { return shape_str(t.shape()); }

// Checks that s.src is (B, L, C) (or (B, C) with rank 2) with columns [col, col+width) inside C.
inline void check_columns(const char* op, const char* what, const ColumnSlice& s, const Shape& lead, int64_t width) {
  if (!s.src.defined()) throw ShapeError(std::string(op) + ": " + what + " is undefined");
  Shape got_lead(s.src.shape().begin(), s.src.shape().end() - (s.src.ndim() > 0 ? 1 : 0));
  if (s.src.ndim() != static_cast<int64_t>(lead.size()) + 1 || got_lead != lead || s.col < 0 ||
      s.col + width > s.src.size(-1)) {
    Shape expect = lead;
    expect.push_back(s.col + width);
    throw ShapeError(std::string(op) + ": " + what + " source has shape " + shp(s.src) + ", expected " +
                     shape_str(lead) + " leading dimensions and columns [" + std::to_string(s.col) + ", " +
                     std::to_string(s.col + width) + ") inside the last axis (at least " + shape_str(expect) + ")");
  }
}

}  // namespace seqmix::mamba_detail
