#include "optim/adam_kernels.h"

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace seqmix {

AdamStepConstants adam_step_constants(double lr, const AdamOptions& o, bool decay, int64_t t, double grad_scale) {
  const double wd = decay ? o.weight_decay : 0.0;
  AdamStepConstants c;
  c.grad_scale = grad_scale;
  c.decoupled = o.decoupled;
  c.decay_factor = o.decoupled ? 1.0 - lr * wd : 1.0;
  c.l2 = o.decoupled ? 0.0 : wd;
  c.beta1 = o.beta1;
  c.beta2 = o.beta2;
  c.bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(t)));
  c.step_size = lr / (1.0 - std::pow(o.beta1, static_cast<double>(t)));
  c.eps = o.eps;
  return c;
}

namespace {

// Whether x is NaN or infinite, without a branch (all exponent bits set).
inline bool not_finite(float x) { return (std::bit_cast<uint32_t>(x) & 0x7F800000u) == 0x7F800000u; }
inline bool not_finite(double x) {
  return (std::bit_cast<uint64_t>(x) & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
}

// The scalar form, also the tail of the vector loop. std::sqrt is not vectorised by the
// compiler here: without -fno-math-errno it must keep errno for negative inputs, hence the
// explicit AVX-512 loop below. Returns false if a stored p, m or v is not finite.
template <class T, bool kDecoupled>
bool update_scalar(T* p, float* m, float* v, const T* g, int64_t begin, int64_t n, const AdamStepConstants& c) {
  const T gs = static_cast<T>(c.grad_scale), df = static_cast<T>(c.decay_factor), l2 = static_cast<T>(c.l2);
  const T b1 = static_cast<T>(c.beta1), b2 = static_cast<T>(c.beta2);
  const T omb1 = T(1) - b1, omb2 = T(1) - b2;
  const T bc2 = static_cast<T>(c.bc2_sqrt), eps = static_cast<T>(c.eps), ss = static_cast<T>(c.step_size);
  int bad = 0;  // an int, so the three tests below stay branch-free
  for (int64_t i = begin; i < n; ++i) {
    T gi = g[i] * gs;
    T pi = p[i];
    if constexpr (kDecoupled)
      pi = pi * df;
    else
      gi = std::fma(l2, pi, gi);
    const T mi = std::fma(b1, static_cast<T>(m[i]), omb1 * gi);
    const T vi = std::fma(b2, static_cast<T>(v[i]), omb2 * (gi * gi));
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    const T den = std::sqrt(vi) / bc2 + eps;
    p[i] = std::fma(-ss, mi / den, pi);
    bad |= int(not_finite(p[i])) | int(not_finite(m[i])) | int(not_finite(v[i]));
  }
  return bad == 0;
}

template <bool kDecoupled>
bool update_f32(float* p, float* m, float* v, const float* g, int64_t n, const AdamStepConstants& c) {
  int64_t i = 0;
  bool finite = true;
#ifdef __AVX512F__
  const __m512i exponent = _mm512_set1_epi32(0x7F800000);
  __mmask16 bad = 0;  // lanes that stored a NaN or an infinity
  const auto not_finite16 = [&](__m512 x) {
    return _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(x), exponent), exponent);
  };
  const float b1 = static_cast<float>(c.beta1), b2 = static_cast<float>(c.beta2);
  const __m512 gs = _mm512_set1_ps(static_cast<float>(c.grad_scale));
  const __m512 df = _mm512_set1_ps(static_cast<float>(c.decay_factor)), l2 = _mm512_set1_ps(static_cast<float>(c.l2));
  const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2);
  const __m512 omb1 = _mm512_set1_ps(1.0f - b1), omb2 = _mm512_set1_ps(1.0f - b2);
  const __m512 bc2 = _mm512_set1_ps(static_cast<float>(c.bc2_sqrt)), eps = _mm512_set1_ps(static_cast<float>(c.eps));
  const __m512 ss = _mm512_set1_ps(static_cast<float>(c.step_size));
  for (; i + 16 <= n; i += 16) {
    __m512 gi = _mm512_mul_ps(_mm512_loadu_ps(g + i), gs);
    __m512 pi = _mm512_loadu_ps(p + i);
    if constexpr (kDecoupled)
      pi = _mm512_mul_ps(pi, df);
    else
      gi = _mm512_fmadd_ps(l2, pi, gi);
    const __m512 mi = _mm512_fmadd_ps(vb1, _mm512_loadu_ps(m + i), _mm512_mul_ps(omb1, gi));
    const __m512 vi = _mm512_fmadd_ps(vb2, _mm512_loadu_ps(v + i), _mm512_mul_ps(omb2, _mm512_mul_ps(gi, gi)));
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    // The all-ones masked form is vsqrtps itself; the unmasked intrinsic's undefined
    // pass-through operand trips GCC 12's -Wmaybe-uninitialized.
    const __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_mask_sqrt_ps(vi, __mmask16(0xFFFF), vi), bc2), eps);
    const __m512 pn = _mm512_fnmadd_ps(ss, _mm512_div_ps(mi, den), pi);
    _mm512_storeu_ps(p + i, pn);
    bad |= not_finite16(pn) | not_finite16(mi) | not_finite16(vi);
  }
  finite = bad == 0;
#endif
  return update_scalar<float, kDecoupled>(p, m, v, g, i, n, c) && finite;
}

}  // namespace

template <class T>
bool adam_update_block(T* p, float* m, float* v, const T* g, int64_t n, const AdamStepConstants& c) {
  if constexpr (std::is_same_v<T, float>)
    return c.decoupled ? update_f32<true>(p, m, v, g, n, c) : update_f32<false>(p, m, v, g, n, c);
  else
    return c.decoupled ? update_scalar<T, true>(p, m, v, g, 0, n, c) : update_scalar<T, false>(p, m, v, g, 0, n, c);
}

template <class T>
void adam_update_reference(T* p, float* m, float* v, const T* g, int64_t n, double lr, const AdamOptions& o,
                           bool decay, int64_t t) {
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(t)));
  const double step_size = lr / bc1;
  const double wd = decay ? o.weight_decay : 0.0;
  const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
  for (int64_t i = 0; i < n; ++i) {
    double gi = g[i];
    double pi = p[i];
    if (o.decoupled)
      pi *= 1.0 - lr * wd;
    else
      gi += wd * pi;
    const float gf = static_cast<float>(gi);
    m[i] = b1 * m[i] + (1.0f - b1) * gf;
    v[i] = b2 * v[i] + (1.0f - b2) * gf * gf;
    const double denom = std::sqrt(static_cast<double>(v[i])) / bc2_sqrt + o.eps;
    p[i] = static_cast<T>(pi - step_size * static_cast<double>(m[i]) / denom);
  }
}

template <class T>
double sum_squares_block(const T* x, int64_t n) {
  // 8 independent accumulators: one AVX-512 register of doubles, no loop-carried
  // dependence on a single add, and a fixed assignment of elements to accumulators.
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(x[i + k]) * static_cast<double>(x[i + k]);
  for (int k = 0; i < n; ++i, ++k) acc[k] += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

double grad_norm_reference(const NamedTensors& params) {
  double total = 0;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    double acc = 0;
    const int64_t n = g.numel();
    dispatch_float(g.dtype(), "grad_norm_reference", [&](auto tag) {
      using T = decltype(tag);
      const T* d = g.data<T>();
      for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(d[i]) * d[i];
    });
    total += acc;
  }
  return std::sqrt(total);
}

template bool adam_update_block<float>(float*, float*, float*, const float*, int64_t, const AdamStepConstants&);
template bool adam_update_block<double>(double*, float*, float*, const double*, int64_t, const AdamStepConstants&);
template void adam_update_reference<float>(float*, float*, float*, const float*, int64_t, double, const AdamOptions&,
                                           bool, int64_t);
template void adam_update_reference<double>(double*, float*, float*, const double*, int64_t, double,
                                            const AdamOptions&, bool, int64_t);
template double sum_squares_block<float>(const float*, int64_t);
template double sum_squares_block<double>(const double*, int64_t);

}  // namespace seqmix
