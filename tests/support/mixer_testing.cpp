#include "tests/support/mixer_testing.h"

#include <gtest/gtest.h>

#include "core/tape.h"
#include "tests/support/gradcheck.h"

namespace seqmix::testing {

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

Tensor time_slice(const Tensor& x, int64_t t) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2);
  Tensor out = Tensor::empty({B, D}, x.dtype());
  dispatch_float(x.dtype(), "time_slice", [&](auto tag) {
    using T = decltype(tag);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < D; ++e) out.data<T>()[b * D + e] = x.data<T>()[(b * L + t) * D + e];
  });
  return out;
}

}  // namespace seqmix::testing
