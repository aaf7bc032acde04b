// Fused decode step of causal attention (see attention_decode.h).
//
// Why one pass: at batch 1 the step is bound by reading the cache (2 n dh floats per
// head) and by per-step overhead. Two sgemm GEMVs (scores, then P V) read K and V once
// each too, but each call costs about a microsecond of setup, the scores went through a
// heap vector allocated per step, and V was read only after all of K had been. Here
// each block of kBlock keys is scored, its exponentials taken against the running
// maximum, and its values added while they are hot, with the output row itself as the
// accumulator.
//
// Online softmax, per block with scores s_j: m' = max(m, max_j s_j),
// acc = acc e^{m - m'} + sum_j e^{s_j - m'} v_j, l = l e^{m - m'} + sum_j e^{s_j - m'};
// out = acc / l at the end. The same recurrence as layers/attention_kernel.cpp.
#include "layers/attention_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "layers/mamba_math.h"

namespace seqmix {

namespace {

// 64 scores live on the stack (a multiple of the key tile); a block of 64 keys of a
// 64-wide head is 16 KiB of K and 16 KiB of V, so the block stays in L1 while it is used.
constexpr int64_t kBlock = 64;

// e^x for x <= 0. float: the branch-free polynomial of mamba_math (about 1 ulp), which
// vectorises; libm's expf does not without -ffast-math. double: libm (gradient checks).
inline float exp_nonpos(float x) { return mamba_math::exp_neg_f32(x); }
inline double exp_nonpos(double x) { return std::exp(x); }

// One tile's worth of lanes as a GCC/Clang vector: 16 floats are one AVX-512 register
// (two AVX2 ones: the compiler splits it on an AVX2-only CPU). Written as vectors rather
// than arrays under `omp simd` because GCC kept such an array accumulator on the stack,
// which made every multiply-add wait for a store and a load (3x slower than sgemm).
template <class T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float type __attribute__((vector_size(kDecodeKeyTile * sizeof(float))));
};
template <>
struct Lanes<double> {
  typedef double type __attribute__((vector_size(kDecodeKeyTile * sizeof(double))));
};

template <class T>
inline typename Lanes<T>::type load_lanes(const T* p) {
  typename Lanes<T>::type v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
inline void store_lanes(T* p, typename Lanes<T>::type v) {
  std::memcpy(p, &v, sizeof v);
}

// Scores of up to kBlock keys starting at key j0 (a multiple of the tile): s[c] = scale q . k_{j0+c}
// for c < nk, from whole tiles (the keys past nk in the last tile are computed and dropped).
// Groups of four tiles run side by side: four independent accumulators hide the
// multiply-add latency (4 cycles, 2 per cycle issued) that one accumulator would expose.
template <class T>
void tile_scores(T* s, const T* q, const T* Kt, int64_t j0, int64_t nk, int64_t dh, T scale) {
  constexpr int64_t W = kDecodeKeyTile;
  using V = typename Lanes<T>::type;
  const T* t0 = Kt + key_tile_offset(j0, 0, dh);  // tiles follow each other, dh * W apart
  const int64_t ts = dh * W;
  int64_t c0 = 0;
  for (; c0 + 4 * W <= nk; c0 += 4 * W) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    const T* t = t0 + (c0 / W) * ts;
    for (int64_t e = 0; e < dh; ++e) {
      const T qe = q[e];
      const T* k = t + e * W;
      a0 += qe * load_lanes(k);
      a1 += qe * load_lanes(k + ts);
      a2 += qe * load_lanes(k + 2 * ts);
      a3 += qe * load_lanes(k + 3 * ts);
    }
    store_lanes(s + c0, scale * a0);
    store_lanes(s + c0 + W, scale * a1);
    store_lanes(s + c0 + 2 * W, scale * a2);
    store_lanes(s + c0 + 3 * W, scale * a3);
  }
  for (; c0 < nk; c0 += W) {  // the last tiles of the cache, one at a time
    V a = {};
    const T* tile = t0 + (c0 / W) * ts;
    for (int64_t e = 0; e < dh; ++e) a += q[e] * load_lanes(tile + e * W);
    store_lanes(s + c0, scale * a);
  }
}

template <class T>
void decode_head(T* out, const T* q, const T* Kt, const T* V, int64_t n, int64_t dh, T scale) {
  alignas(64) T s[kBlock];
  T m = -std::numeric_limits<T>::infinity(), l = 0;
  std::fill(out, out + dh, T(0));
  for (int64_t j0 = 0; j0 < n; j0 += kBlock) {
    const int64_t nk = std::min(kBlock, n - j0);
    tile_scores(s, q, Kt, j0, nk, dh, scale);
    T bm = m;
    for (int64_t c = 0; c < nk; ++c) bm = s[c] > bm ? s[c] : bm;
    if (bm > m) {  // a new maximum: rescale what was summed against the old one
      if (j0 > 0) {
        const T alpha = exp_nonpos(m - bm);
        l *= alpha;
#pragma omp simd
        for (int64_t e = 0; e < dh; ++e) out[e] *= alpha;
      }
      m = bm;
    }
#pragma omp simd
    for (int64_t c = 0; c < nk; ++c) s[c] = exp_nonpos(s[c] - m);
    for (int64_t c = 0; c < nk; ++c) l += s[c];
    // out += sum_c p_c v_c. Columns in strips of 4 vectors held in registers across the
    // block's keys: 4 loads and 4 multiply-adds per key and strip, and out is read and
    // written once per block instead of once per key.
    const T* Vb = V + j0 * dh;
    constexpr int64_t W = kDecodeKeyTile;
    int64_t e0 = 0;
    for (; e0 + 4 * W <= dh; e0 += 4 * W) {
      using Vec = typename Lanes<T>::type;
      Vec o0 = load_lanes(out + e0), o1 = load_lanes(out + e0 + W), o2 = load_lanes(out + e0 + 2 * W),
          o3 = load_lanes(out + e0 + 3 * W);
      for (int64_t c = 0; c < nk; ++c) {
        const T p = s[c];
        const T* v = Vb + c * dh + e0;
        o0 += p * load_lanes(v);
        o1 += p * load_lanes(v + W);
        o2 += p * load_lanes(v + 2 * W);
        o3 += p * load_lanes(v + 3 * W);
      }
      store_lanes(out + e0, o0);
      store_lanes(out + e0 + W, o1);
      store_lanes(out + e0 + 2 * W, o2);
      store_lanes(out + e0 + 3 * W, o3);
    }
    if (e0 < dh)  // the remaining columns (all of them when dh < 64), key by key
      for (int64_t c = 0; c < nk; ++c) {
        const T p = s[c];
        const T* v = Vb + c * dh;
#pragma omp simd
        for (int64_t e = e0; e < dh; ++e) out[e] += p * v[e];
      }
  }
  const T inv = T(1) / l;
#pragma omp simd
  for (int64_t e = 0; e < dh; ++e) out[e] *= inv;
}

template <class T>
void decode_head_naive(T* out, const T* q, const T* K, const T* V, int64_t n, int64_t dh, T scale) {
  std::vector<double> s(n);
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    double dot = 0;
    for (int64_t e = 0; e < dh; ++e) dot += double(q[e]) * double(K[j * dh + e]);
    s[j] = double(scale) * dot;
    mx = std::max(mx, s[j]);
  }
  double denom = 0;
  for (int64_t j = 0; j < n; ++j) denom += (s[j] = std::exp(s[j] - mx));
  for (int64_t e = 0; e < dh; ++e) {
    double acc = 0;
    for (int64_t j = 0; j < n; ++j) acc += s[j] * double(V[j * dh + e]);
    out[e] = static_cast<T>(acc / denom);
  }
}

}  // namespace

void attention_decode_head(float* out, const float* q, const float* Kt, const float* V, int64_t n, int64_t dh,
                           float scale) {
  decode_head(out, q, Kt, V, n, dh, scale);
}
void attention_decode_head(double* out, const double* q, const double* Kt, const double* V, int64_t n, int64_t dh,
                           double scale) {
  decode_head(out, q, Kt, V, n, dh, scale);
}
void attention_decode_head_naive(float* out, const float* q, const float* K, const float* V, int64_t n, int64_t dh,
                                 float scale) {
  decode_head_naive(out, q, K, V, n, dh, scale);
}
void attention_decode_head_naive(double* out, const double* q, const double* K, const double* V, int64_t n,
                                 int64_t dh, double scale) {
  decode_head_naive(out, q, K, V, n, dh, scale);
}

}  // namespace seqmix
