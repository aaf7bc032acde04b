// Scalar functions of the mamba kernels (layers/mamba_conv.cpp, layers/mamba_scan.cpp):
// exp, softplus, sigmoid and silu, and the derivatives the backward needs.
//
// The float32 versions are written without branches, float compares or libm calls,
// so that GCC vectorises the loops that call them at -O3 without -ffast-math: the
// scan evaluates exp(delta * A) once per (t, e, n) in the forward and again in the
// backward's recomputation, and softplus/silu once per (t, e); with glibc's scalar
// expf and log1pf these calls took most of the scan's time. Selections are done on
// bit patterns with integer masks, because GCC refuses to if-convert float compares
// under the default -ftrapping-math.
//
// The float64 versions are libm's, for the gradient checks. Both follow docs/mixers.md#mamba:
// softplus(r) = r > 20 ? r : log1p(exp(r)).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace seqmix::mamba_math {

// Bits of a where mask is all ones, of b where it is zero.
inline float select_bits(int32_t mask, float a, float b) {
  return std::bit_cast<float>((std::bit_cast<int32_t>(a) & mask) | (std::bit_cast<int32_t>(b) & ~mask));
}

// Rounds to the nearest integer by the 1.5 * 2^23 trick (exact for |x| < 2^22).
inline float round_magic(float x) { return (x + 0x1.8p23f) - 0x1.8p23f; }

// p * 2^k for an integral float k, flushed to +0 where 2^k would be denormal or
// below (k < -125: a zero instead of a slow denormal, with an error below 2^-125).
// The flush is a mask on the result's bits, so that an overflowed p (inf or NaN
// from a far out-of-range argument) cannot leak through as inf * 0.
inline float scale_pow2_nonpos(float p, float k) {
  const int32_t biased = static_cast<int32_t>(k) + 127;  // out-of-range k converts to INT_MIN
  const int32_t keep = -static_cast<int32_t>(biased > 1);
  const float s = std::bit_cast<float>(static_cast<uint32_t>(biased & keep) << 23);
  return std::bit_cast<float>(std::bit_cast<int32_t>(p * s) & keep);
}

// exp(x) for x <= 0 (the only arguments the kernels pass: -|x| and delta * A).
// Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, with ln2 split in a 9-bit head
// (k * head is exact for |k| <= 128) and a tail, so that r has no cancellation error;
// e^r by a degree-6 polynomial (Chebyshev fit, 2.6e-9 relative); times 2^k. Max
// error 1.7 ulp on [-86.9, 0]; +0 below -86.99 (exp(-87) = 1.6e-38).
inline float exp_neg_f32(float x) {
  const float k = round_magic(x * 1.44269504088896341f);
  const float r = (x - k * 0.693359375f) - k * -2.12194440054690583e-4f;
  float p = 0.0013941108433972675f;
  p = p * r + 0.0083751263981533357f;
  p = p * r + 0.041666352896775157f;
  p = p * r + 0.16666415514653275f;
  p = p * r + 0.50000000471177577f;
  p = p * r + 1.0000000377162138f;
  p = p * r + 1.0f;
  return scale_pow2_nonpos(p, k);
}

// 2^t for t <= 0: t = k + f with k = round(t) and f = t - k in [-1/2, 1/2] exactly;
// 2^f by a degree-6 polynomial (Chebyshev fit, 2.6e-9 relative). Max error 1.5 ulp;
// +0 below -125.5. Cheaper than exp_neg_f32 (no Cody-Waite step); the scan calls
// it on delta * (A log2 e).
inline float exp2_neg_f32(float t) {
  const float k = round_magic(t);
  const float f = t - k;
  float p = 0.00015461444698569129f;
  p = p * f + 0.0013400428177615838f;
  p = p * f + 0.0096180566785246381f;
  p = p * f + 0.055503272266703021f;
  p = p * f + 0.24022650922288758f;
  p = p * f + 0.6931472067028326f;
  p = p * f + 1.0f;
  return scale_pow2_nonpos(p, k);
}

// log1p(w) for w in [0, 1]: 2 atanh(s) with s = w / (2 + w) in [0, 1/3], as
// 2 s P(s^2) where P(v) fits atanh(sqrt v) / sqrt v on [0, 1/9] (degree 4, Chebyshev
// fit, 4.1e-9 relative). Relative accuracy holds down to tiny w (s ~ w/2 exactly),
// where log(1 + w) would lose the low bits of w.
inline float log1p_unit_f32(float w) {
  const float s = w / (2.0f + w);
  const float v = s * s;
  float p = 0.1407888918155454f;
  p = p * v + 0.13982578872598634f;
  p = p * v + 0.20012297615351874f;
  p = p * v + 0.33333160820688887f;
  p = p * v + 1.0f;
  return 2.0f * s * p;
}

// All ones when x's sign bit is clear (x >= +0).
inline int32_t nonneg_mask(float x) { return ~(std::bit_cast<int32_t>(x) >> 31); }

// The scan's decay exp(delta A), evaluated as decay(delta * (A * kDecayScale)): in
// float as 2^(delta A log2 e), which saves the range reduction's multiply-adds in
// the innermost loop; in double as libm's exp(delta A). The argument delta * A is a
// rounded product either way, so its rounding (|delta A| * 2^-24 relative in the
// result) dominates the extra rounding of A log2 e.
template <class T>
struct ScanDecay;
template <>
struct ScanDecay<float> {
  static constexpr float kScale = 1.44269504088896341f;  // log2 e
  static float decay(float t) { return exp2_neg_f32(t); }
};
template <>
struct ScanDecay<double> {
  static constexpr double kScale = 1.0;
  static double decay(double t) { return std::exp(t); }
};

// sigmoid(x) = 1 / (1 + e^-x); in float from w = e^-|x|: 1/(1+w) for x >= 0 and
// w/(1+w) below, both without cancellation.
template <class T>
inline T sigmoid(T x);
template <>
inline float sigmoid<float>(float x) {
  const float w = exp_neg_f32(-std::bit_cast<float>(std::bit_cast<int32_t>(x) & 0x7fffffff));
  const float d = 1.0f / (1.0f + w);
  return select_bits(nonneg_mask(x), d, w * d);
}
template <>
inline double sigmoid<double>(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// softplus(r) = r > 20 ? r : log1p(e^r). In float as max(r, 0) + log1p(e^-|r|): above
// 20 the second term is below 2.1e-9, under half an ulp of r, so the sum rounds to r
// exactly and the threshold needs no branch.
template <class T>
inline T softplus(T r);
template <>
inline float softplus<float>(float r) {
  const float w = exp_neg_f32(-std::bit_cast<float>(std::bit_cast<int32_t>(r) & 0x7fffffff));
  return select_bits(nonneg_mask(r), r, 0.0f) + log1p_unit_f32(w);
}
template <>
inline double softplus<double>(double r) { return r > 20 ? r : std::log1p(std::exp(r)); }

// d softplus / dr = sigmoid(r) below the threshold, 1 above (in float sigmoid(r)
// rounds to 1 for r > 17 anyway).
template <class T>
inline T softplus_grad(T r) { return r > T(20) ? T(1) : sigmoid(r); }
template <>
inline float softplus_grad<float>(float r) { return sigmoid(r); }

// silu(z) = z sigmoid(z); silu'(z) = s (1 + z (1 - s)) with s = sigmoid(z).
template <class T>
inline T silu(T z) { return z * sigmoid(z); }
template <class T>
inline T silu_grad(T z) {
  const T s = sigmoid(z);
  return s * (T(1) + z * (T(1) - s));
}

}  // namespace seqmix::mamba_math
