// core/vmath.h against float64 references over the whole float range, and the
// ops that use it (gelu) against their plain libm twins.
//
// The sweep visits every 127th float bit pattern (34 million inputs, both signs,
// subnormals, infinities and NaNs included), so every binade is covered many times.
#include <gtest/gtest.h>
#include <omp.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>

#include "core/ops.h"
#include "core/vmath.h"
#include "tests/support/op_testing.h"

using namespace seqmix;

namespace {

constexpr uint64_t kStride = 127;

double Phi_ref(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double phi_ref(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

// Distance in units in the last place of float at the reference value.
double ulps(float got, double ref) {
  const double ulp = std::ldexp(1.0, std::max(std::ilogb(static_cast<float>(ref)), -126) - 23);
  return std::fabs(static_cast<double>(got) - ref) / ulp;
}

template <class F>
void for_each_float(F&& f) {
  for (uint64_t bits = 0; bits <= 0xffffffffull; bits += kStride) f(std::bit_cast<float>(static_cast<uint32_t>(bits)));
  for (float x : {0.0f, -0.0f, 1.0f, -1.0f, std::numeric_limits<float>::infinity(),
                  -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::max(),
                  -std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()})
    f(x);
}

TEST(Vmath, ExpWithinOneUlpOverTheFloatRange) {
  double worst = 0;
  float worst_x = 0;
  int64_t bad = 0;
  for_each_float([&](float x) {
    const float got = vmath::exp_f32(x);
    if (std::isnan(x)) {
      bad += !std::isnan(got);
      return;
    }
    const double ref = std::exp(static_cast<double>(x));
    if (ref < std::numeric_limits<float>::min()) {  // subnormal results are flushed to 0
      bad += got != 0.0f;
      return;
    }
    if (ref > std::numeric_limits<float>::max()) {
      bad += got != std::numeric_limits<float>::infinity();
      return;
    }
    const double u = ulps(got, ref);
    if (u > worst) worst = u, worst_x = x;
  });
  std::printf("worst error: %.3g ulp at %.9g\n", worst, worst_x);
  EXPECT_EQ(bad, 0);
  EXPECT_LE(worst, 1.0) << "at x = " << worst_x;
}

// Phi and gelu keep relative accuracy in the left tail, where libm's
// 0.5 * (1 + erff(x / sqrt 2)) in float loses every digit by x = -6.
TEST(Vmath, NormalCdfAndGeluRelativeErrorOverTheFloatRange) {
  double worst_cdf = 0, worst_gelu = 0, worst_grad = 0;
  float at_cdf = 0, at_gelu = 0, at_grad = 0;
  int64_t bad_nan = 0, bad_cdf = 0, bad_g = 0, bad_dg = 0;
  for_each_float([&](float x) {
    const float cdf = vmath::normal_cdf_f32(x), g = vmath::gelu_f32(x), dg = vmath::gelu_grad_f32(x);
    if (std::isnan(x)) {
      bad_nan += !std::isnan(g) || !std::isnan(dg);
      return;
    }
    const double xd = x;
    const double cdf_ref = Phi_ref(xd);
    // Below the normal floats the result may flush to zero.
    if (cdf_ref >= std::numeric_limits<float>::min()) {
      const double e = std::fabs(cdf - cdf_ref) / cdf_ref;
      if (e > worst_cdf) worst_cdf = e, at_cdf = x;
    } else {
      bad_cdf += !(cdf >= 0.0f && cdf <= 2 * std::numeric_limits<float>::min());
    }
    const double g_ref = xd * cdf_ref;
    if (std::fabs(g_ref) >= std::numeric_limits<float>::min() && std::isfinite(g_ref)) {
      const double e = std::fabs(g - g_ref) / std::fabs(g_ref);
      if (e > worst_gelu) worst_gelu = e, at_gelu = x;
    } else if (std::isfinite(g_ref)) {
      bad_g += !(std::fabs(g) <= 16 * std::numeric_limits<float>::min());
    } else {
      bad_g += x > 0 ? g != x : g != 0.0f;  // the limits at +-inf: x and 0
    }
    // gelu' = Phi + x phi cancels for x < 0: the error is measured against the
    // size of the two terms, which is what float can resolve.
    if (std::isfinite(xd)) {
      const double a = cdf_ref, b = xd * phi_ref(xd);
      const double e = std::fabs(dg - (a + b)) / std::max(std::fabs(a) + std::fabs(b), 1e-30);
      if (std::fabs(a) + std::fabs(b) >= std::numeric_limits<float>::min() && e > worst_grad)
        worst_grad = e, at_grad = x;
      bad_dg += !std::isfinite(dg);
    } else {
      bad_dg += dg != (x > 0 ? 1.0f : 0.0f);
    }
  });
  std::printf("worst relative error: Phi %.3g at %.9g, gelu %.3g at %.9g, gelu' %.3g at %.9g\n", worst_cdf, at_cdf,
              worst_gelu, at_gelu, worst_grad, at_grad);
  EXPECT_EQ(bad_nan, 0);
  EXPECT_EQ(bad_cdf, 0);
  EXPECT_EQ(bad_g, 0);
  EXPECT_EQ(bad_dg, 0);
  EXPECT_LE(worst_cdf, 4e-7) << "at x = " << at_cdf;
  EXPECT_LE(worst_gelu, 4e-7) << "at x = " << at_gelu;
  EXPECT_LE(worst_grad, 4e-7) << "at x = " << at_grad;
}

// The gelu op in float32 against its naive twin (the formula evaluated in double) at a size that takes the parallel, vectorised path with a ragged tail,
// and the same bits for 1, 2 and 3 threads.
TEST(Vmath, GeluOpMatchesTwinAndIsThreadCountInvariant) {
  const int saved = omp_get_max_threads();
  const int64_t n = 100003;
  Tensor x = Tensor::empty({n});
  for (int64_t i = 0; i < n; ++i) x.f32()[i] = static_cast<float>(-16.0 + 32.0 * i / (n - 1));
  x.set_requires_grad();
  Tensor first_y, first_dx;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    x.zero_grad();
    Tensor y = gelu(x);
    seqmix::testing::backward_weighted(y, Tensor::full({n}, 1.0));
    for (int64_t i = 0; i < n; ++i) {
      const double xi = x.f32()[i];
      const double ref = xi * Phi_ref(xi);
      const double dref = Phi_ref(xi) + xi * phi_ref(xi);
      ASSERT_NEAR(y.f32()[i], ref, 1e-6 * std::fabs(ref) + 1e-30) << "x = " << xi;
      ASSERT_NEAR(x.grad().f32()[i], dref, 1e-6 * (1 + std::fabs(xi) * phi_ref(xi))) << "x = " << xi;
    }
    if (threads == 1) {
      first_y = y.clone();
      first_dx = x.grad().clone();
    } else {
      EXPECT_TRUE(seqmix::testing::same_values(y, first_y)) << threads << " threads";
      EXPECT_TRUE(seqmix::testing::same_values(x.grad(), first_dx)) << threads << " threads";
    }
  }
  omp_set_num_threads(saved);
}

}  // namespace
