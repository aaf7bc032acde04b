#include "tests/support/op_testing.h"

#include "core/tape.h"

namespace seqmix::testing {

void backprop_with(const Tensor& y, const Tensor& gy) {
  Tensor loss = Tensor::zeros({}, y.dtype());
  record({&loss}, [y, gy](const std::vector<Tensor>& g) {
    Tensor dy = y.grad_buffer();
    const double s = g[0].item();
    for (int64_t i = 0; i < y.numel(); ++i) {
      if (y.dtype() == DType::f32)
        dy.f32()[i] += static_cast<float>(gy.item(i) * s);
      else
        dy.f64()[i] += gy.item(i) * s;
    }
  });
  backward(loss);
}

::testing::AssertionResult same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.item(i) != b.item(i))
      return ::testing::AssertionFailure() << "element " << i << ": " << a.item(i) << " vs " << b.item(i);
  return ::testing::AssertionSuccess();
}

}  // namespace seqmix::testing
