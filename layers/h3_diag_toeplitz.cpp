// H3's diagonal SSM for short sequences (docs/mixers.md#h3): the kernel K_h materialised and
// applied as a lower-triangular Toeplitz matrix, one GEMM per head over all (batch, d1, d2)
// columns, with its backward beside it. h3_diag.cpp chooses between this form and the
// recurrence (the threshold and its figures are in its header comment) and records the
// tape node; this file holds the kernels only. Backward accumulates (+=) into dq, dkt, dv
// and writes the per-head sums that h3_diag.cpp turns into the parameter gradients.
//
// Per head h, with cols = B*dh*dh columns c = (b*dh + d1)*dh + d2:
//   KV_h (L, cols):  KV_h[t, c] = kt[b,t,h*dh+d1] v[b,t,h*dh+d2]
//   T_h  (L, L):     T_h[t, s] = K_h[t-s] + (t == s) D_h for s <= t, 0 above the diagonal,
//                    K_h[l] = 2 Re(sum_n Ct_n Abar_n^l)   (the skip D folded into lag 0)
//   Y_h = T_h KV_h,  o[b,t,h*dh+d2] = sum_d1 q[b,t,h*dh+d1] Y_h[t, c].
// Work: H L^2 cols = B L^2 D dh multiply-adds per GEMM (three: Y, dKV, dK), against
// B L D dh (N/2) mode steps for the recurrence: the ratio grows as L / N (h3_diag.cpp has
// the measured crossover). The GEMMs run in row blocks of kBlock rows that stop at the
// diagonal, skipping all but the diagonal block's share of the zero upper triangle (at
// L = 128: 3/4 of the full work).
//
// Layout: KV, Y, G and dKV are panels of H (L, cols) blocks, packed from and unpacked to
// the (B, L, D) activations by passes over the rows (see for_panel_rows). The forward keeps
// Y (for dq), KV (for dK) and K; the backward rebuilds T_h from K.
// OpenMP runs over row blocks in those passes and over heads around the GEMMs; each GEMM is
// serial inside its head's task, so every element is computed by one thread in one order
// whatever the thread count (results are bit-identical across thread counts).
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "core/gemm.h"
#include "layers/h3_kernel_util.h"

namespace seqmix::h3_detail {

namespace {

constexpr int64_t kBlock = 64;  // GEMM row block (see the header comment)

// Panels from the tensor buffer cache (fresh pages would fault in at every step).
template <class T>
Tensor scratch(int64_t n) {
  return Tensor::empty({n}, std::is_same_v<T, float> ? DType::f32 : DType::f64);
}

// Each head's task calls gemm_ld, which is serial inside an active parallel region. When
// the region below is inactive (little work, or one thread), oneDNN would otherwise size
// its own team from omp_get_max_threads(); this sets it to 1 for the current implicit
// task only (the ICV is scoped to the region), so a head's GEMM runs the same serial code
// on any thread count.
inline void serial_gemm_in_this_region() { omp_set_num_threads(1); }

// The panels' row passes: they read the (B, L, D) activations and write (or read) the
// panels. Rows run t-fastest, so each of the few batch entries of a block streams through
// memory in order (rows L*D values apart, a power of two, would defeat the prefetchers
// and share one L1 set if t ran slowest); a block of kLineValues/(dh*dh) batch entries
// fills whole 64-byte lines of each head's panel row before moving on. Head panels are
// hs = L*cols + kPanelPad values apart, so that the H lines written for one t do not all
// fall into one L1 set when L*cols is a power of two.
// (The op's forward+backward at B=64, L=64, D=64, dh=2, one thread: 9.1 ms CPU with t
// slowest and unpadded panels, 5.8 ms in this order; the passes are memory-bound.)
constexpr int64_t kLineValues = 16;
constexpr int64_t kRowChunk = 32;  // rows per parallel task

template <class F>
void for_panel_rows(const ToeplitzDims& d, F&& f) {
  const int64_t B = d.B, L = d.L, cols = d.cols, dh2 = d.dh * d.dh;
  const int64_t bb = std::max<int64_t>(1, kLineValues / dh2), nbb = (B + bb - 1) / bb;
  const int64_t ntc = (L + kRowChunk - 1) / kRowChunk;
#pragma omp parallel for schedule(static) if (B * L * d.D * d.dh > kParallelWork)
  for (int64_t task = 0; task < nbb * ntc; ++task) {
    const int64_t b0 = (task / ntc) * bb, b1 = std::min(B, b0 + bb);
    const int64_t t0 = (task % ntc) * kRowChunk, t1 = std::min(L, t0 + kRowChunk);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t b = b0; b < b1; ++b) f(b * L + t, t * cols + b * dh2);
  }
}

// Head width 1 and 2 (the common ones) as compile-time constants, so that the loops over
// d1 and d2 unroll; 0 reads d.dh.
template <class F>
void dispatch_dh(int64_t dh, F&& f) {
  if (dh == 1) f(std::integral_constant<int64_t, 1>{});
  else if (dh == 2) f(std::integral_constant<int64_t, 2>{});
  else f(std::integral_constant<int64_t, 0>{});
}

// One row: P[h][t][(b*dh + d1)*dh + d2] = x[h*dh+d1] y[h*dh+d2] for every head h,
// with x, y the row's (D) values and p = P + t*cols + b*dh*dh.
template <int64_t kDh, class T>
inline void pack_row(T* p, const T* x, const T* y, int64_t H, int64_t hs, int64_t dh_rt) {
  const int64_t dh = kDh > 0 ? kDh : dh_rt;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d1 = 0; d1 < dh; ++d1)
      for (int64_t d2 = 0; d2 < dh; ++d2) p[h * hs + d1 * dh + d2] = x[h * dh + d1] * y[h * dh + d2];
}

// out[h*dh+d2] (+)= sum_d1 x[h*dh+d1] P[h][t][(b*dh + d1)*dh + d2], d1 increasing.
template <int64_t kDh, bool kAccumulate, class T>
inline void contract_d1_row(T* out, const T* x, const T* p, int64_t H, int64_t hs, int64_t dh_rt) {
  const int64_t dh = kDh > 0 ? kDh : dh_rt;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d2 = 0; d2 < dh; ++d2) {
      T acc = 0;
      for (int64_t d1 = 0; d1 < dh; ++d1) acc += x[h * dh + d1] * p[h * hs + d1 * dh + d2];
      if constexpr (kAccumulate) out[h * dh + d2] += acc;
      else out[h * dh + d2] = acc;
    }
}

// out[h*dh+d1] += sum_d2 x[h*dh+d2] P[h][t][(b*dh + d1)*dh + d2], d2 increasing.
template <int64_t kDh, class T>
inline void contract_d2_row(T* out, const T* x, const T* p, int64_t H, int64_t hs, int64_t dh_rt) {
  const int64_t dh = kDh > 0 ? kDh : dh_rt;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t d1 = 0; d1 < dh; ++d1) {
      T acc = 0;
      for (int64_t d2 = 0; d2 < dh; ++d2) acc += x[h * dh + d2] * p[h * hs + d1 * dh + d2];
      out[h * dh + d1] += acc;
    }
}

// The modes of one head in double: Abar, Ct = C Bbar (separate re/im rows, so the
// loops over modes vectorise).
struct HeadModes {
  std::vector<double> ar, ai, wr, wi, pr, pi;
  explicit HeadModes(int64_t Nh) : ar(Nh), ai(Nh), wr(Nh), wi(Nh), pr(Nh), pi(Nh) {}
  void load(const H3DiagCoeffs& co, int64_t h) {
    const int64_t Nh = co.Nh;
    for (int64_t n = 0; n < Nh; ++n) {
      const int64_t i = h * Nh + n;
      ar[n] = co.ar[i], ai[n] = co.ai[i];
      wr[n] = co.cr[i] * co.br[i] - co.ci[i] * co.bi[i];
      wi[n] = co.cr[i] * co.bi[i] + co.ci[i] * co.br[i];
    }
  }
};

// K[l] = 2 Re(sum_n Ct_n Abar_n^l) + (l == 0) D_h for l < L, in double: the powers by
// repeated multiplication (|Abar| < 1, so the relative error grows only as l eps), the
// sum over modes vectorised.
void head_kernel(double* K /* (L) */, HeadModes& m, const H3DiagCoeffs& co, int64_t h, int64_t L) {
  const int64_t Nh = co.Nh;
  m.load(co, h);
  double *pr = m.pr.data(), *pi = m.pi.data();
  const double *ar = m.ar.data(), *ai = m.ai.data(), *wr = m.wr.data(), *wi = m.wi.data();
  std::fill(pr, pr + Nh, 1.0);
  std::fill(pi, pi + Nh, 0.0);
  for (int64_t l = 0; l < L; ++l) {
    double s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t n = 0; n < Nh; ++n) {
      s += wr[n] * pr[n] - wi[n] * pi[n];
      const double r = pr[n] * ar[n] - pi[n] * ai[n];
      pi[n] = pr[n] * ai[n] + pi[n] * ar[n];
      pr[n] = r;
    }
    K[l] = 2 * s;
  }
  K[0] += co.d[h];
}

// Tm (L, L) row-major: Tm[t, s] = K[t-s] for s <= t, 0 above the diagonal. Row t is the
// run Krev[L-1-t .. L-1] of the reversed kernel Krev[j] = K[L-1-j].
template <class T>
void fill_toeplitz(T* Tm, T* Krev /* (L) */, const double* K, int64_t L) {
  for (int64_t j = 0; j < L; ++j) Krev[j] = static_cast<T>(K[L - 1 - j]);
  for (int64_t t = 0; t < L; ++t) {
    T* row = Tm + t * L;
    std::copy(Krev + (L - 1 - t), Krev + L, row);
    std::fill(row + t + 1, row + L, T(0));
  }
}

}  // namespace

template <class T>
void toeplitz_forward(T* o /* (B, L, D) */, T* ysave /* (H, hs) or null */, T* kvsave /* (H, hs) or null */,
                      double* kern /* (H, L) or null */, const T* q /* (B, L, D) */, const T* kt /* (B, L, D) */,
                      const T* v /* (B, L, D) */, const H3DiagCoeffs& co, const ToeplitzDims& d) {
  const int64_t L = d.L, H = d.H, D = d.D, cols = d.cols, hs = d.hs;
  if (d.B * L == 0) return;
  Tensor own_kv, own_y;
  T* KV = kvsave;
  T* Y = ysave;
  if (!KV) own_kv = scratch<T>(H * hs), KV = own_kv.data<T>();
  if (!Y) own_y = scratch<T>(H * hs), Y = own_y.data<T>();
  dispatch_dh(d.dh, [&](auto kdh) {
    for_panel_rows(d, [&](int64_t row, int64_t off) {
      pack_row<kdh()>(KV + off, kt + row * D, v + row * D, H, hs, d.dh);
    });
  });
#pragma omp parallel if (H > 1 && H * L * L * cols > kParallelWork)
  {
    serial_gemm_in_this_region();
    std::vector<double> Kown(kern ? 0 : L);
    HeadModes modes(co.Nh);
    std::vector<T> Tm(L * L), Krev(L);
#pragma omp for schedule(static)
    for (int64_t h = 0; h < H; ++h) {
      double* K = kern ? kern + h * L : Kown.data();
      head_kernel(K, modes, co, h, L);
      fill_toeplitz(Tm.data(), Krev.data(), K, L);
      const T* kvh = KV + h * hs;
      T* yh = Y + h * hs;
      // Row block [t0, t0+m) reads columns s < t0 + m of T_h: the rest are zeros.
      for (int64_t t0 = 0; t0 < L; t0 += kBlock) {
        const int64_t m = std::min(kBlock, L - t0);
        gemm_ld(false, false, m, cols, t0 + m, T(1), Tm.data() + t0 * L, L, kvh, cols, T(0), yh + t0 * cols, cols);
      }
    }
  }
  dispatch_dh(d.dh, [&](auto kdh) {
    for_panel_rows(d, [&](int64_t row, int64_t off) {
      contract_d1_row<kdh(), false>(o + row * D, q + row * D, Y + off, H, hs, d.dh);
    });
  });
}

// In the forward pass Y_h = T_h KV_h and o = sum_d1 q Y, so with G_h[t, c] = dout[b,t,h*dh+d2]
// q[b,t,h*dh+d1] = dL/dY_h[t, c]:
//   dq[b,t,h*dh+d1] += sum_d2 dout[b,t,h*dh+d2] Y_h[t, c]
//   dKV_h = T_h^T G_h, then dkt[h*dh+d1] += sum_d2 dKV v[h*dh+d2], dv[h*dh+d2] += sum_d1 dKV kt[h*dh+d1]
//   dT_h = G_h KV_h^T, and since T_h[t, s] = K_h[t-s]: dK_h[l] = sum_{t-s=l} (G_h KV_h^T)[t, s],
//   dD_h = dK_h[0] (D_h sits on the diagonal).
// From K_h[l] = 2 Re(sum_n w_n a_n^l) (a = Abar, w = Ct), with complex gradients written as
// dz = dL/dRe z + i dL/dIm z:
//   dw_n = sum_l 2 dK[l] conj(a_n^l)                          (the recurrence's Q)
//   da_n = sum_l 2 dK[l] l conj(w_n a_n^(l-1)) = conj(w_n) P_n,  P_n = sum_l 2 l dK[l] conj(a_n^(l-1))
// which is exactly what the recurrence's backward hands to the parameter chain rule.
template <class T>
void toeplitz_backward(T* dq /* (B, L, D) or null */, T* dkt /* (B, L, D) or null */, T* dv /* (B, L, D) or null */,
                       double* gsum /* (4, H, Nh) or null */, double* gD /* (H) or null */,
                       const T* dout /* (B, L, D) */, const T* ysave /* (H, hs) */, const T* kvsave /* (H, hs) */,
                       const double* kern /* (H, L) */, const T* q /* (B, L, D) */, const T* kt /* (B, L, D) */,
                       const T* v /* (B, L, D) */, const H3DiagCoeffs& co, const ToeplitzDims& d) {
  const int64_t L = d.L, H = d.H, D = d.D, cols = d.cols, hs = d.hs, Nh = co.Nh;
  if (gsum) std::fill(gsum, gsum + 4 * H * Nh, 0.0);
  if (gD) std::fill(gD, gD + H, 0.0);
  if (d.B * L == 0) return;
  const bool need_dkv = dkt || dv, need_dk = gsum != nullptr, need_g = need_dkv || need_dk;
  Tensor g_t, dkv_t;
  if (need_g) g_t = scratch<T>(H * hs);
  if (need_dkv) dkv_t = scratch<T>(H * hs);
  T* G = need_g ? g_t.data<T>() : nullptr;
  T* dKV = need_dkv ? dkv_t.data<T>() : nullptr;
  // One pass over the rows: dq and the panel G.
  if (dq || need_g)
    dispatch_dh(d.dh, [&](auto kdh) {
      for_panel_rows(d, [&](int64_t row, int64_t off) {
        const T* dor = dout + row * D;
        if (dq) contract_d2_row<kdh()>(dq + row * D, dor, ysave + off, H, hs, d.dh);
        if (need_g) pack_row<kdh()>(G + off, q + row * D, dor, H, hs, d.dh);
      });
    });
  if (!need_g) return;
#pragma omp parallel if (H > 1 && H * L * L * cols > kParallelWork)
  {
    serial_gemm_in_this_region();
    std::vector<double> dKr(L);
    HeadModes modes(Nh);
    std::vector<double> P(2 * Nh), Q(2 * Nh);
    std::vector<T> Tm(need_dkv ? L * L : 0), Krev(L), M(need_dk ? std::min(kBlock, L) * L : 0);
#pragma omp for schedule(static)
    for (int64_t h = 0; h < H; ++h) {
      const T* gh = G + h * hs;
      if (need_dkv) {
        fill_toeplitz(Tm.data(), Krev.data(), kern + h * L, L);
        // Row block [s0, s0+m) of T_h^T G_h reads rows t >= s0 of T_h.
        T* dkvh = dKV + h * hs;
        for (int64_t s0 = 0; s0 < L; s0 += kBlock) {
          const int64_t m = std::min(kBlock, L - s0);
          gemm_ld(true, false, m, cols, L - s0, T(1), Tm.data() + s0 * L + s0, L, gh + s0 * cols, cols, T(0),
                  dkvh + s0 * cols, cols);
        }
      }
      if (!need_dk) continue;
      // dK from the lower triangle of G_h KV_h^T, row block by row block. dKr[L-1-l]
      // accumulates lag l, so that row t adds its entries s = 0..t to one contiguous run.
      const T* kvh = kvsave + h * hs;
      std::fill(dKr.begin(), dKr.end(), 0.0);
      for (int64_t t0 = 0; t0 < L; t0 += kBlock) {
        const int64_t m = std::min(kBlock, L - t0), n = t0 + m;
        gemm_ld(false, true, m, n, cols, T(1), gh + t0 * cols, cols, kvh, cols, T(0), M.data(), n);
        for (int64_t r = 0; r < m; ++r) {
          const int64_t t = t0 + r;
          const T* row = M.data() + r * n;
          double* acc = dKr.data() + (L - 1 - t);
#pragma omp simd
          for (int64_t s = 0; s <= t; ++s) acc[s] += static_cast<double>(row[s]);
        }
      }
      const double* dK_rev = dKr.data();
      auto dK = [&](int64_t l) { return dK_rev[L - 1 - l]; };
      gD[h] = dK(0);
      // P and Q by the same running powers p = a^l: Q += 2 dK[l] conj(p),
      // P += 2 (l+1) dK[l+1] conj(p) (the term of lag l+1 uses a^l).
      modes.load(co, h);
      double *pr = modes.pr.data(), *pi = modes.pi.data();
      const double *ar = modes.ar.data(), *ai = modes.ai.data();
      std::fill(pr, pr + Nh, 1.0);
      std::fill(pi, pi + Nh, 0.0);
      double *Pr = P.data(), *Pi = Pr + Nh, *Qr = Q.data(), *Qi = Qr + Nh;
      std::fill(P.begin(), P.end(), 0.0);
      std::fill(Q.begin(), Q.end(), 0.0);
      for (int64_t l = 0; l < L; ++l) {
        const double gq = 2 * dK(l), gp = l + 1 < L ? 2 * static_cast<double>(l + 1) * dK(l + 1) : 0.0;
#pragma omp simd
        for (int64_t k = 0; k < Nh; ++k) {
          Qr[k] += gq * pr[k];
          Qi[k] -= gq * pi[k];
          Pr[k] += gp * pr[k];
          Pi[k] -= gp * pi[k];
          const double re = pr[k] * ar[k] - pi[k] * ai[k];
          pi[k] = pr[k] * ai[k] + pi[k] * ar[k];
          pr[k] = re;
        }
      }
      const int64_t HN = H * Nh;
      for (int64_t k = 0; k < Nh; ++k) {
        gsum[0 * HN + h * Nh + k] = Pr[k];
        gsum[1 * HN + h * Nh + k] = Pi[k];
        gsum[2 * HN + h * Nh + k] = Qr[k];
        gsum[3 * HN + h * Nh + k] = Qi[k];
      }
    }
  }
  if (!need_dkv) return;
  dispatch_dh(d.dh, [&](auto kdh) {
    for_panel_rows(d, [&](int64_t row, int64_t off) {
      const T* p = dKV + off;
      if (dkt) contract_d2_row<kdh()>(dkt + row * D, v + row * D, p, H, hs, d.dh);
      if (dv) contract_d1_row<kdh(), true>(dv + row * D, kt + row * D, p, H, hs, d.dh);
    });
  });
}

template void toeplitz_forward<float>(float*, float*, float*, double*, const float*, const float*, const float*,
                                      const H3DiagCoeffs&, const ToeplitzDims&);
template void toeplitz_forward<double>(double*, double*, double*, double*, const double*, const double*,
                                       const double*, const H3DiagCoeffs&, const ToeplitzDims&);
template void toeplitz_backward<float>(float*, float*, float*, double*, double*, const float*, const float*,
                                       const float*, const double*, const float*, const float*, const float*,
                                       const H3DiagCoeffs&, const ToeplitzDims&);
template void toeplitz_backward<double>(double*, double*, double*, double*, double*, const double*,
                                        const double*, const double*, const double*, const double*,
                                        const double*, const double*, const H3DiagCoeffs&, const ToeplitzDims&);

}  // namespace seqmix::h3_detail
