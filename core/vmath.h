// Vectorisable float32 math for the elementwise kernels: exp and the normal CDF
// behind the exact GELU.
//
// libm's expf/erff are scalar calls: in a loop over a (768, 512) activation the
// compiler cannot vectorise them, and the exact GELU's erff was 12% of a small
// text model's training step. These functions are branch-free (selects only) and
// inline, so a loop under `#pragma omp simd` compiles to AVX2/AVX-512 code.
//
// Accuracy, checked by tests/test_vmath.cpp against float64 over the whole float
// range: exp_f32 within 1 ulp; normal_cdf_f32 within 4e-7 relative (it is computed
// through erfc, so the left tail keeps its relative accuracy, where 1 + erf(x) in
// float would cancel); gelu_f32 and gelu_grad_f32 follow from those. The float64
// path of every op still calls std:: math, so the gradient checks are unaffected.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace seqmix::vmath {

// e^y. Range reduction y = n ln2 + r, |r| <= ln2/2, with ln2 split in two so that
// n ln2 is exact to float precision; e^r by its degree-7 Taylor polynomial (the
// remainder r^8/8! < 6e-9 relative); 2^n built in the exponent field. Below
// -87.34 (where e^y leaves the normal floats) the result is 0, above 88.72 +inf.
inline float exp_f32(float y) {
  const float lo = -87.33654f, hi = 88.72284f;
  // Clamped with selects, not fminf/fmaxf: those are libm calls that stop vectorisation.
  float yc = y < lo ? lo : y;
  yc = yc > hi ? hi : yc;
  // Round yc / ln2 to the nearest integer: adding 1.5 * 2^23 pushes the fraction
  // out of the mantissa (valid for |n| < 2^22).
  const float shifter = 12582912.0f;
  const float n = std::fma(yc, 1.44269504088896341f, shifter) - shifter;
  float r = std::fma(n, -0.693145751953125f, yc);  // ln2 high part: 16 bits, so n * it is exact
  r = std::fma(n, -1.428606765330187e-06f, r);     // ln2 - high part
  float p = 1.0f / 5040.0f;
  p = std::fma(p, r, 1.0f / 720.0f);
  p = std::fma(p, r, 1.0f / 120.0f);
  p = std::fma(p, r, 1.0f / 24.0f);
  p = std::fma(p, r, 1.0f / 6.0f);
  p = std::fma(p, r, 0.5f);
  p = std::fma(p, r, 1.0f);
  p = std::fma(p, r, 1.0f);
  // n in [-126, 128]. 2^128 is not a float, yet e^y < FLT_MAX up to y = 88.72 with
  // n = 128: scale by 2^127 and then by 2 (which overflows to inf only above 88.72).
  const int32_t ni = static_cast<int32_t>(n);
  const float two_n = std::bit_cast<float>((std::min(ni, 127) + 127) << 23);
  const float e = p * two_n * (ni > 127 ? 2.0f : 1.0f);
  return y < lo ? 0.0f : (y != y ? y : e);  // NaN stays NaN
}

namespace detail {

// erfc(a / sqrt 2) e^(a^2/2) (1 + q a) for a >= 0, as a degree-9 polynomial in
// u = A t + B, t = 1 / (1 + q a), u in [-1, 1] for a in [0, 13.5]. Least-squares
// fit (relative weight, Chebyshev nodes) of the float64 function, written for this
// file; max relative error of the fit 2e-8, of its float32 evaluation 3e-7.
// The factor 1 + q a takes out the 1/a decay of erfcx, so the fitted function
// stays within [0.28, 1] and Horner's rule does not cancel.
constexpr float kQ = 0.3535533845424652f;  // 0.5 / sqrt 2
constexpr float kA = 2.4190261363983154f;
constexpr float kB = -1.419026255607605f;
constexpr float kC[10] = {0.5745841264724731f,    0.32525011897087097f,    0.10056696087121964f,
                          0.005634392146021128f,  -0.0059824176132678986f, -0.0005708558019250631f,
                          0.0005586441839113832f, 3.503304014884634e-06f,  -4.969632573192939e-05f,
                          5.274643172015203e-06f};

// e^(-x^2/2) with the rounding error of x^2 put back: x^2 = s + s_lo exactly,
// and e^(-(s + s_lo)/2) = e^(-s/2) (1 - s_lo/2) to float precision. Without this
// the error of x^2 alone (x^2 * 2^-24) would dominate the tails.
inline float gauss_f32(float x) {
  const float s = x * x;
  const float s_lo = std::fma(x, x, -s);
  const float e = exp_f32(-0.5f * s);
  // Past |x| = 1.8e19, s = inf and s_lo = inf - inf = NaN; e is 0 there.
  return e == 0.0f ? 0.0f : std::fma(e, -0.5f * s_lo, e);
}

// erfc(|x| / sqrt 2) / 2 divided by e^(-x^2/2): Phi(-|x|) = e^(-x^2/2) times this.
// Kept apart from the exponential so that callers can multiply by it last: the
// product then stays a normal float wherever the result is one.
inline float half_erfcx_f32(float ax) {
  const float t = 1.0f / std::fma(kQ, ax, 1.0f);
  const float u = std::fma(kA, t, kB);
  // Horner's rule written out: as a loop, GCC sometimes keeps it rolled and then
  // refuses to vectorise the caller ("control flow in loop").
  float h = std::fma(kC[9], u, kC[8]);
  h = std::fma(h, u, kC[7]);
  h = std::fma(h, u, kC[6]);
  h = std::fma(h, u, kC[5]);
  h = std::fma(h, u, kC[4]);
  h = std::fma(h, u, kC[3]);
  h = std::fma(h, u, kC[2]);
  h = std::fma(h, u, kC[1]);
  h = std::fma(h, u, kC[0]);
  return 0.5f * t * h;
}

}  // namespace detail

// Phi(x) = P(N(0,1) <= x) = erfc(-x / sqrt 2) / 2.
inline float normal_cdf_f32(float x) {
  const float tail = detail::half_erfcx_f32(std::fabs(x)) * detail::gauss_f32(x);  // Phi(-|x|)
  return x < 0.0f ? tail : 1.0f - tail;
}

// Past |x| = 13.5, e^(-x^2/2) is below the normal floats: GELU is exactly x (or 0)
// in float there, and its derivative 1 (or 0). Selecting these values also keeps
// +-inf from making inf * 0 = NaN.
inline constexpr float kGeluSaturate = 13.5f;

// gelu(x) = x Phi(x).
inline float gelu_f32(float x) {
  const float r = detail::half_erfcx_f32(std::fabs(x)), e = detail::gauss_f32(x);
  // x < 0: (x r) e, so that x's magnitude enters before e^(-x^2/2) can go subnormal.
  const float g = x < 0.0f ? (x * r) * e : x * (1.0f - r * e);
  return x > kGeluSaturate ? x : (x < -kGeluSaturate ? -0.0f : g);
}

// gelu'(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2/2) / sqrt(2 pi).
inline float gelu_grad_f32(float x) {
  const float e = detail::gauss_f32(x);
  const float tail = detail::half_erfcx_f32(std::fabs(x)) * e;
  const float cdf = x < 0.0f ? tail : 1.0f - tail;
  const float d = std::fma(x, e * 0.3989422804014327f, cdf);
  return x > kGeluSaturate ? 1.0f : (x < -kGeluSaturate ? 0.0f : d);
}

}  // namespace seqmix::vmath
