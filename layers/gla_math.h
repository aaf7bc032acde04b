// Scalar math shared by the GLA kernels (layers/gla_kernel.cpp, layers/gla_gate.cpp)
// and the recurrent step (layers/gla.cpp): e^x for x <= 0, log1p on [0, 1], logsigmoid
// and sigmoid, written so that loops calling them vectorise.
//
// float64 serves the gradient checks and calls libm. float32 avoids libm calls, which
// the compiler cannot vectorise without -ffast-math, and avoids float compare-and-select:
// under -ftrapping-math (the default) a float select is control flow, GCC threads the
// branch, and the loop is left scalar. Selects are therefore done on the integer bits.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace seqmix::gla_math {

// e^x for x <= 0 (the sign of x is ignored). float32: Cody-Waite reduction
// x = n ln2 + r, |r| <= ln2/2, and a degree-6 polynomial for e^r; relative error below
// 1e-7 against double exp over [-110, 0] (libm's expf: 6e-8). |x| is clamped at 100
// (e^-100 underflows), 2^n is 0 for n < -126, NaN stays NaN.
template <class T>
inline T exp_nonpos(T x) {
  return std::exp(x);
}

template <>
inline float exp_nonpos<float>(float x) {
  const int32_t abs_bits = std::bit_cast<int32_t>(x) & 0x7FFFFFFF;
  const int32_t nan_bits = -static_cast<int32_t>(abs_bits > 0x7F800000) & 0x7FC00000;
  const float xc = -std::bit_cast<float>(std::min(abs_bits, std::bit_cast<int32_t>(100.0f)));
  const int32_t ni = static_cast<int32_t>(xc * 1.44269504088896341f - 0.5f);  // round(xc / ln2), as xc <= 0
  const float n = static_cast<float>(ni);
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;  // ln2 in two parts; n * 0.693359375 is exact
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float two_n = std::bit_cast<float>(std::max(ni + 127, 0) << 23);
  return std::bit_cast<float>(std::bit_cast<int32_t>(p * two_n) | nan_bits);
}

// log(1 + e) for e in [0, 1]. float32: log(1+e) = 2 atanh(s) with s = e / (2 + e) in
// [0, 1/3], the odd series in s up to s^15 (the next term is below 2e-9 relative).
template <class T>
inline T log1p_unit(T e) {
  return std::log1p(e);
}

template <>
inline float log1p_unit<float>(float e) {
  const float s = e / (2.0f + e), s2 = s * s;
  float p = 1.0f / 15;
  p = p * s2 + 1.0f / 13;
  p = p * s2 + 1.0f / 11;
  p = p * s2 + 1.0f / 9;
  p = p * s2 + 1.0f / 7;
  p = p * s2 + 1.0f / 5;
  p = p * s2 + 1.0f / 3;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

// x for x >= 2^-100, else 0: running products of decays are flushed before they reach
// the subnormal range, where every further multiply would take a slow microcode path.
// The terms they scale are then below 1e-30 of the ones kept.
template <class T>
inline T flush_tiny(T x) {
  return x < T(7.888609052210118e-31) ? T(0) : x;
}

template <>
inline float flush_tiny<float>(float x) {
  const int32_t bits = std::bit_cast<int32_t>(x);  // x >= 0: integer order is float order
  return std::bit_cast<float>(bits & -static_cast<int32_t>(bits >= (127 - 100) << 23));
}

// neg ? a : b, by the sign bit of u.
template <class T>
inline T select_negative(T u, T a, T b) {
  return std::signbit(u) ? a : b;
}

template <>
inline float select_negative<float>(float u, float a, float b) {
  const int32_t m = std::bit_cast<int32_t>(u) >> 31;  // all ones when the sign bit is set
  return std::bit_cast<float>((m & std::bit_cast<int32_t>(a)) | (~m & std::bit_cast<int32_t>(b)));
}

// logsigmoid(u) = min(u, 0) - log1p(e^{-|u|}): finite for every finite u, and <= 0.
template <class T>
inline T log_sigmoid(T u) {
  return select_negative(u, u, T(0)) - log1p_unit(exp_nonpos(-std::fabs(u)));
}

// sigmoid(-u) = 1 - sigmoid(u) = d logsigmoid(u)/du, without overflow:
// e = e^{-|u|}; u >= 0: e / (1 + e), u < 0: 1 / (1 + e).
template <class T>
inline T sigmoid_neg(T u) {
  const T e = exp_nonpos(-std::fabs(u));
  return select_negative(u, T(1), e) / (T(1) + e);
}

template <class T>
inline T sigmoid(T u) {
  return sigmoid_neg(-u);
}

}  // namespace seqmix::gla_math
