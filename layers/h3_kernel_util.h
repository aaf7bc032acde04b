// Internal to the H3 kernels (h3_shift.cpp, h3_diag.cpp): sizes, thresholds, checks, and
// the shift filter's taps and tile loop, which the parallel op and the recurrent step share.
#pragma once

#include <complex>
#include <cstdint>
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
// out[j] = sum_{l=0}^{lmax} f(l)[j] x(l)[j], summed over l in increasing order
// from zero (the parallel op and the step use this same function).
template <class T, class F, class X>
inline void shift_tile(T* acc /* (kTile) */, int64_t lmax, F f, X x) {
  for (int64_t j = 0; j < kTile; ++j) acc[j] = 0;
  for (int64_t l = 0; l <= lmax; ++l) {
    const T* fl = f(l);
    const T* xl = x(l);
#pragma omp simd
    for (int64_t j = 0; j < kTile; ++j) acc[j] += fl[j] * xl[j];
  }
}


}  // namespace seqmix::h3_detail
