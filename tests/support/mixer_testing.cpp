#include "tests/support/mixer_testing.h"

#include <gtest/gtest.h>

#include "core/tape.h"
#include "tests/support/gradcheck.h"

namespace seqmix::testing {

void backward_weighted(const Tensor& y, const Tensor& r) {
  Tensor loss = Tensor::zeros({}, y.dtype());
  record({&loss}, [y, r](const std::vector<Tensor>& g) {
    dispatch_float(y.dtype(), "test loss", [&](auto tag) {
      using T = decltype(tag);
      T* gy = y.grad_buffer().template data<T>();
      const T* rv = r.data<T>();
      const T go = g[0].data<T>()[0];
      for (int64_t i = 0; i < y.numel(); ++i) gy[i] += go * rv[i];
    });
  });
  backward(loss);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.item(i) != b.item(i)) return false;
  return true;
}

NamedTensors params_of(const Mixer& m) {
  NamedTensors p;
  m.named_parameters("", p);
  return p;
}

void randomise(const Mixer& m, Generator& gen, double lo, double hi) {
  for (auto& [name, t] : params_of(m)) {
    Tensor r = t.dtype() == DType::f64 ? rand_f64(t.shape(), gen, lo, hi, false) : rand_f32(t.shape(), gen, lo, hi);
    t.copy_from(r);
  }
}

void copy_params(const Mixer& from, const Mixer& to) {
  NamedTensors a = params_of(from), b = params_of(to);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) b[i].second.copy_from(a[i].second.to(b[i].second.dtype()));
}

}  // namespace seqmix::testing
