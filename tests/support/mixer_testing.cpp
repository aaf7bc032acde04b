#include "tests/support/mixer_testing.h"

#include <gtest/gtest.h>

#include "core/tape.h"
#include "tests/support/gradcheck.h"

namespace seqmix::testing {

Tensor weighted_sum(const Tensor& y, const Tensor& r) {
  Tensor out = Tensor::zeros({}, y.dtype());
  double acc = 0;
  for (int64_t i = 0; i < y.numel(); ++i) acc += y.item(i) * r.item(i);
  if (y.dtype() == DType::f64) out.f64()[0] = acc;
  else out.f32()[0] = static_cast<float>(acc);
  if (any_requires_grad({&y}))
    record({&out}, [y, r](const std::vector<Tensor>& g) {
      dispatch_float(y.dtype(), "weighted_sum backward", [&](auto tag) {
        using T = decltype(tag);
        T* gy = y.grad_buffer().template data<T>();
        const double go = g[0].item(0);
        for (int64_t i = 0; i < y.numel(); ++i) gy[i] += static_cast<T>(go * r.item(i));
      });
    });
  return out;
}

void backward_weighted(const Tensor& y, const Tensor& r) { backward(weighted_sum(y, r)); }

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

void expect_causal(Mixer& layer, const Tensor& x, const std::vector<int64_t>& changed_positions) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  Generator g(0);
  NoGradGuard ng;
  Tensor y0 = layer.forward(x, false, g);
  for (int64_t t0 : changed_positions) {
    Tensor x2 = x.clone();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < D; ++e) x2.f64()[(b * L + t0) * D + e] += 0.5;
    Tensor y2 = layer.forward(x2, false, g);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t) {
        bool same = true;
        for (int64_t e = 0; e < D; ++e) same = same && y2.f64()[(b * L + t) * D + e] == y0.f64()[(b * L + t) * D + e];
        if (t < t0) {
          EXPECT_TRUE(same) << "output " << t << " changed when input " << t0 << " changed";
        } else if (t == t0) {
          EXPECT_FALSE(same) << "output " << t << " ignores its own input";
        }
      }
  }
}

void copy_params(const Mixer& from, const Mixer& to) {
  NamedTensors a = params_of(from), b = params_of(to);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) b[i].second.copy_from(a[i].second.to(b[i].second.dtype()));
}

}  // namespace seqmix::testing
