#include "tests/support/op_testing.h"

#include <algorithm>
#include <cmath>

#include "core/tape.h"

namespace seqmix::testing {

namespace {

// gy += go * r elementwise, in y's dtype.
void add_scaled(const Tensor& y, const Tensor& r, double go) {
  dispatch_float(y.dtype(), "weighted_sum backward", [&](auto tag) {
    using T = decltype(tag);
    T* gy = y.grad_buffer().template data<T>();
    for (int64_t i = 0; i < y.numel(); ++i) gy[i] += static_cast<T>(go * r.item(i));
  });
}

}  // namespace

Tensor weighted_sum(const Tensor& y, const Tensor& r) {
  Tensor out = Tensor::zeros({}, y.dtype());
  double acc = 0;
  for (int64_t i = 0; i < y.numel(); ++i) acc += y.item(i) * r.item(i);
  if (y.dtype() == DType::f64) out.f64()[0] = acc;
  else out.f32()[0] = static_cast<float>(acc);
  if (any_requires_grad({&y}))
    record({&out}, [y, r](const std::vector<Tensor>& g) { add_scaled(y, r, g[0].item(0)); });
  return out;
}

void backward_weighted(const Tensor& y, const Tensor& r) { backward(weighted_sum(y, r)); }

void backward_weighted(const std::vector<Tensor>& ys, const std::vector<Tensor>& rs) {
  Tensor loss = Tensor::zeros({}, ys.at(0).dtype());
  bool any = false;
  for (size_t k = 0; k < ys.size(); ++k) any = any || (rs[k].defined() && ys[k].requires_grad());
  if (!any || !grad_enabled()) return;
  record({&loss}, [ys, rs](const std::vector<Tensor>& g) {
    for (size_t k = 0; k < ys.size(); ++k)
      if (rs[k].defined()) add_scaled(ys[k], rs[k], g[0].item(0));
  });
  backward(loss);
}

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(t.item(i)));
  return m;
}

::testing::AssertionResult same_values(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype())
    return ::testing::AssertionFailure() << "shapes or dtypes differ: " << shape_str(a.shape()) << " "
                                         << dtype_name(a.dtype()) << " vs " << shape_str(b.shape()) << " "
                                         << dtype_name(b.dtype());
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.item(i) != b.item(i))
      return ::testing::AssertionFailure() << "element " << i << ": " << a.item(i) << " vs " << b.item(i);
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_values(const NamedTensors& a, const NamedTensors& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << a.size() << " tensors vs " << b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].first != b[i].first)
      return ::testing::AssertionFailure() << "tensor " << i << " is '" << a[i].first << "' vs '" << b[i].first << "'";
    if (auto r = same_values(a[i].second, b[i].second); !r) return ::testing::AssertionFailure() << a[i].first << ": " << r.message();
  }
  return ::testing::AssertionSuccess();
}

}  // namespace seqmix::testing
