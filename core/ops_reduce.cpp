// Reductions: sum and mean of all elements (-> shape {}). Forward and hand-written
// backward side by side.
//
// Sums accumulate in double (also for float32) in a fixed order: the full sums
// split the input into fixed blocks of kBlock elements, reduce each block
// independently and add the block sums in block order, so the result is
// bit-identical for any thread count. Backward accumulates (+=) into the input's
// gradient buffer (the tape zeroes it once per step).
#include <algorithm>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

// Below this many elements the OpenMP fork costs more than the loop saves.
constexpr int64_t kParallelMin = 1 << 14;
// Fixed block of the full sums: independent of the thread count, so is the result.
constexpr int64_t kBlock = 1 << 15;

// sum_{j<n} x[j] in double, with 8 independent accumulators in a fixed order: the
// result is deterministic, and 8 chains hide the latency of the dependent adds.
template <class T>
double sum8(const T* x, int64_t n) {  // x: (n)
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(x[j + k]);
  for (; j < n; ++j) acc[j % 8] += static_cast<double>(x[j]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

template <class T>
double sum_all(const T* x, int64_t n) {  // x: (n)
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> part(static_cast<size_t>(nb));
#pragma omp parallel for schedule(static) if (nb > 1)
  for (int64_t k = 0; k < nb; ++k) {
    const int64_t lo = k * kBlock;
    part[k] = sum8(x + lo, std::min(kBlock, n - lo));
  }
  double total = 0;
  for (int64_t k = 0; k < nb; ++k) total += part[k];
  return total;
}

// Full reduction: y = factor * sum(x), shape {}. Every x_i enters with weight
// factor, so dx_i += factor * dy.
Tensor reduce_all(const char* op, const Tensor& x, bool average) {
  if (!x.defined()) throw ShapeError(std::string(op) + ": x is undefined");
  const int64_t n = x.numel();
  if (average && n == 0) throw ShapeError(std::string(op) + ": x " + shape_str(x.shape()) + " has no elements");
  const double factor = average ? 1.0 / static_cast<double>(n) : 1.0;
  Tensor y = Tensor::empty({}, x.dtype());
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    y.data<T>()[0] = static_cast<T>(sum_all(x.data<T>(), n) * factor);
  });
  if (!any_requires_grad({&x})) return y;
  record({&y}, [op, cell = x.grad_cell(), n, factor](const std::vector<Tensor>& grads) {
    dispatch_float(grads[0].dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const T g = static_cast<T>(grads[0].data<T>()[0] * factor);
      T* dX = cell->buffer().template data<T>();
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) dX[i] += g;
    });
  });
  return y;
}

}  // namespace

Tensor sum(const Tensor& x) { return reduce_all("sum", x, false); }
Tensor mean(const Tensor& x) { return reduce_all("mean", x, true); }

}  // namespace seqmix
