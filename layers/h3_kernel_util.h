// Internal to the H3 kernels (h3_shift.cpp, h3_diag.cpp): sizes, thresholds, checks, and
// the shift filter's taps and tile loop, which the parallel op and the recurrent step share.
#pragma once

#include <complex>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "layers/h3_kernel.h"

namespace seqmix::h3_detail {


using cplx = std::complex<double>;

constexpr int64_t kChunk = 32;  // checkpoint spacing: states kept = L/32 per channel
constexpr int64_t kLanes = 16;  // channels per task: state + coefficients ~16 KB, fits L1
constexpr int64_t kTile = 16;   // channel tile of the shift filter: 4 SSE accumulators
// Below this many multiply-adds a loop runs on one thread: a fork/join costs
// microseconds (far more on a loaded machine) and the gradient checks run
// thousands of tiny forwards. Results do not depend on the thread count.
constexpr int64_t kParallelWork = 1 << 16;

inline std::string sh(const Tensor& t) { return t.defined() ? shape_str(t.shape()) : std::string("undefined"); }

inline int64_t d_state_of(const H3SsmParams& p) { return p.shift_B.size(1); }


inline void check_bld(const char* op, const char* what, const Tensor& t) {
  if (!t.defined() || t.ndim() != 3)
    throw ShapeError(std::string(op) + ": " + what + " " + sh(t) + ", expected (B, L, D)");
}

inline bool any_param_grad(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->requires_grad()) return true;
  return false;
}

// Shift taps transposed for channel-contiguous loops, with ssm_shift.D folded
// into lag 0: fT[l*D + d] = f_d[l] + (l == 0) D[d].
template <class T>
void fill_shift_taps(T* fT /* (N, D) */, const H3SsmParams& p) {
  const int64_t D = p.shift_B.size(0), N = p.shift_B.size(1);
  const std::vector<double> f = h3_shift_filter(p), Ds = p.shift_D.to_f64_vector();
  for (int64_t l = 0; l < N; ++l)
    for (int64_t d = 0; d < D; ++d) fT[l * D + d] = static_cast<T>(f[d * N + l] + (l == 0 ? Ds[d] : 0.0));
}

// One output of the filter for a tile of kTile channels:
// out[j] = sum_{l=0}^{lmax} f(l)[j] x(l)[j], as four partial sums over l mod 4 (taps
// 4i+r into s_r, the taps past the last full group of four into s_0, each in increasing
// l) added as (s_0 + s_1) + (s_2 + s_3). One running sum waits for the previous FMA at
// every tap (4 cycles latency); four independent ones keep the FMA ports busy. The sums
// are GCC vector values (one tile: a register, or two for double): as arrays, GCC kept
// them in memory and reloaded them at every tap. h3_shift_conv forward, N=64, float32, one
// thread, against the single running sum: 1.45 -> 0.59 ms at B=64, L=64, D=64 and
// 26.1 -> 9.3 ms at B=8, L=1024, D=256 (bench_h3 --shape ... shift). The parallel op and
// the step use this function, and shift_lane for the lanes of a partial tile: the same
// sums in the same order, the same bits.
template <class T>
struct TileVecOf;
template <>
struct TileVecOf<float> {
  typedef float type __attribute__((vector_size(kTile * sizeof(float))));
};
template <>
struct TileVecOf<double> {
  typedef double type __attribute__((vector_size(kTile * sizeof(double))));
};
template <class T>
using TileVec = typename TileVecOf<T>::type;
static_assert(sizeof(TileVec<float>) == kTile * sizeof(float) && sizeof(TileVec<double>) == kTile * sizeof(double));

template <class T>
inline TileVec<T> load_tile(const T* p) {
  TileVec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T, class F, class X>
inline void shift_tile(T* acc /* (kTile) */, int64_t lmax, F f, X x) {
  TileVec<T> s0 = {}, s1 = {}, s2 = {}, s3 = {};
  int64_t l = 0;
  for (; l + 3 <= lmax; l += 4) {
    s0 += load_tile(f(l)) * load_tile(x(l));
    s1 += load_tile(f(l + 1)) * load_tile(x(l + 1));
    s2 += load_tile(f(l + 2)) * load_tile(x(l + 2));
    s3 += load_tile(f(l + 3)) * load_tile(x(l + 3));
  }
  for (; l <= lmax; ++l) s0 += load_tile(f(l)) * load_tile(x(l));
  const TileVec<T> out = (s0 + s1) + (s2 + s3);
  std::memcpy(acc, &out, sizeof out);
}

// One lane of shift_tile, f(l) and x(l) scalars: the same sums in the same order.
template <class T, class F, class X>
inline T shift_lane(int64_t lmax, F f, X x) {
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t l = 0;
  for (; l + 3 <= lmax; l += 4) {
    s0 += f(l) * x(l);
    s1 += f(l + 1) * x(l + 1);
    s2 += f(l + 2) * x(l + 2);
    s3 += f(l + 3) * x(l + 3);
  }
  for (; l <= lmax; ++l) s0 += f(l) * x(l);
  return (s0 + s1) + (s2 + s3);
}

// Short-sequence form of the diagonal SSM (h3_diag_toeplitz.cpp): sizes of the panels, one
// (L, cols) block per head, cols = B*dh*dh columns (b, d1, d2), blocks hs values apart
// (padded: see h3_diag_toeplitz.cpp).
constexpr int64_t kPanelPad = 16;
struct ToeplitzDims {
  int64_t B, L, D, dh, H, cols, hs;
};
inline ToeplitzDims toeplitz_dims(int64_t B, int64_t L, int64_t D, int64_t dh) {
  return ToeplitzDims{B, L, D, dh, D / dh, B * dh * dh, L * B * dh * dh + kPanelPad};
}

// o: (B, L, D) = sum_d1 q (K_h * kv + D_h kv). Kept for the backward, or null: ysave and
// kvsave (H, hs), the panels Y_h and KV_h; kern (H, L), K_h in double with D_h at lag 0.
// co: the discretised coefficients (h3_diag_coeffs).
template <class T>
void toeplitz_forward(T* o /* (B, L, D) */, T* ysave /* (H, hs) or null */, T* kvsave /* (H, hs) or null */,
                      double* kern /* (H, L) or null */, const T* q /* (B, L, D) */, const T* kt /* (B, L, D) */,
                      const T* v /* (B, L, D) */, const H3DiagCoeffs& co, const ToeplitzDims& d);
// Accumulates (+=) into dq, dkt, dv (each may be null: skipped). gsum (4, H, Nh) rows
// P re, P im, Q re, Q im and gD (H), overwritten, or both null: the sums that
// diag_param_grads (h3_diag.cpp) turns into the parameter gradients, as the recurrence's.
template <class T>
void toeplitz_backward(T* dq /* (B, L, D) or null */, T* dkt /* (B, L, D) or null */, T* dv /* (B, L, D) or null */,
                       double* gsum /* (4, H, Nh) or null */, double* gD /* (H) or null */,
                       const T* dout /* (B, L, D) */, const T* ysave /* (H, hs) */, const T* kvsave /* (H, hs) */,
                       const double* kern /* (H, L) */, const T* q /* (B, L, D) */, const T* kt /* (B, L, D) */,
                       const T* v /* (B, L, D) */, const H3DiagCoeffs& co, const ToeplitzDims& d);

}  // namespace seqmix::h3_detail
