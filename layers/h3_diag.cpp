// H3's diagonal SSM (docs/mixers.md#h3) as one fused op with a hand-written backward, by
// either of two methods, and the recurrent step of the whole core (shift and diagonal
// SSM). Backward passes accumulate (+=) into gradient buffers (the tape zeroes them once
// per step) and skip the inputs that need no gradient.
//
// Shift SSM (h3_shift.cpp): the filter has only N taps, so a direct causal convolution
// (B*L*D*N multiply-adds) on channel tiles packed into contiguous slabs: forward 9.3 ms,
// forward+backward 31 ms at B=8, L=1024, D=256, N=64, float32, one thread (AVX-512).
//
// Diagonal SSM, two methods with the same result to rounding:
// - The recurrence (this file): 11 flops per complex mode and step whatever L is (forward
//   37 ms, backward 100 ms at the size above), linear in L, and it yields the exact
//   parameter gradients directly. States are kept only every kChunk steps; the backward
//   recomputes them inside a chunk. SIMD lanes run over channels, the time loop stays
//   sequential, OpenMP runs over (batch, group of heads). With head_dim > 1 the channel
//   loops are indexed and stay scalar: twice the time per channel of head_dim 1.
// - The Toeplitz form (h3_diag_toeplitz.cpp): K_h materialised for l < L and y = T_h kv as
//   one GEMM per head over all B*dh*dh columns; the backward's dK from the diagonals of
//   G KV^T and the exact parameter gradients through the sums over powers of Abar.
//   Quadratic in L, but at GEMM speed. (A blocked direct convolution over 16-channel
//   slabs, the first attempt, measured 81 ms for the forward alone at the size above.)
// h3_diag_method chooses by measured speed: `bench_h3 --crossover`, forward+backward, CPU
// time, one thread, float32, AMD EPYC (Zen 4, AVX-512), recurrence time / Toeplitz time:
//       B   D dh   N |  L=32    64   128   256   384   512   768  1024
//      64  32  1  64 |   5.2   4.2   2.4   1.5   1.4   1.4   1.1   0.86
//      64  64  2  64 |  12.0   6.9   4.6   3.3   2.8   2.4   1.6   1.2
//      64  64  1  16 |   2.4   1.6   1.1   0.85  0.69  0.62
//      64  64  2  16 |   4.7   2.6   1.9   1.4   1.2   0.97
//      64  64  2 128 |  22    12     8.6   5.4   4.2   3.5
//      12 128  1  64 |   3.2   2.8   2.3   1.8   1.4   1.1   0.82  0.61
//       8 256  1  64 |   2.5   2.0   1.8   1.3   1.1   0.85  0.64  0.45
//       8 256  2  64 |   6.8   5.5   4.3   3.3   2.7   2.3   1.7   1.4
//       4  64  1  64 |   1.4   1.3   1.0   0.70  0.55  0.44
//       2  64  2  64 |   2.3   2.2   2.0   1.5   1.1   0.98
//       2  64  1  64 |   0.89  0.77  0.58  0.40
// The recurrence's cost grows with N, the Toeplitz form's with L, and its GEMMs lose speed
// when the columns per head, cols = B*dh*dh, are few. So: the Toeplitz form while
// L <= c*N and L <= 1024 (not measured beyond), with c by cols (toeplitz_len_per_state),
// each c below the crossover of every row it covers.
#include "layers/h3_kernel.h"

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstring>
#include <memory>
#include <string>

#include "core/tape.h"
#include "layers/h3_kernel_util.h"

namespace seqmix {

using namespace h3_detail;

H3DiagCoeffs h3_diag_coeffs(const H3SsmParams& p) {
  H3DiagCoeffs c;
  c.H = p.log_dt.size(0);
  c.Nh = p.inv_A_real.size(1);
  const std::vector<double> log_dt = p.log_dt.to_f64_vector(), iar = p.inv_A_real.to_f64_vector(),
                            aim = p.A_imag.to_f64_vector(), Bv = p.diag_B.to_f64_vector(),
                            Cv = p.diag_C.to_f64_vector();
  const int64_t n_all = c.H * c.Nh;
  c.ar.resize(n_all), c.ai.resize(n_all), c.br.resize(n_all), c.bi.resize(n_all), c.cr.resize(n_all),
      c.ci.resize(n_all);
  for (int64_t h = 0; h < c.H; ++h) {
    const double dt = std::exp(log_dt[h]);
    for (int64_t n = 0; n < c.Nh; ++n) {
      const int64_t i = h * c.Nh + n;
      const cplx A(-std::exp(iar[i]), aim[i]);
      const cplx z = dt * A;
      const cplx den = 1.0 - z / 2.0;
      const cplx abar = (1.0 + z / 2.0) / den;
      const cplx bbar = cplx(Bv[2 * i], Bv[2 * i + 1]) * dt / den;
      c.ar[i] = abar.real(), c.ai[i] = abar.imag();
      c.br[i] = bbar.real(), c.bi[i] = bbar.imag();
      c.cr[i] = Cv[2 * i], c.ci[i] = Cv[2 * i + 1];
    }
  }
  c.d = p.diag_D.to_f64_vector();
  return c;
}

namespace {

// h3_diag_method's rule (the measurements are in the header comment): the Toeplitz form
// while L <= toeplitz_len_per_state(cols, dh) * d_state and L <= kToeplitzMaxLength.
constexpr int64_t kToeplitzMaxLength = 1024;

int64_t toeplitz_len_per_state(int64_t cols, int64_t dh) {
  if (cols < 4) return 0;  // matrix-vector products: the recurrence wins at every L
  if (cols < 8) return 2;
  if (cols < 16) return 6;
  if (dh == 1 || cols < 32) return 8;
  return 16;  // head_dim > 1: the recurrence runs scalar
}

// ---------------------------------------------------------------------------
// Diagonal SSM: coefficients, the shared step, tasks.
// ---------------------------------------------------------------------------

// The diagonal SSM runs on C = D*dh virtual channels c = h*dh*dh + d1*dh + d2:
// each (h, d1, d2) is its own SSM sharing head h's parameters, with input
// u = kt[h*dh+d1] v[h*dh+d2], so the inner loops run unit-stride over channels.
struct ChannelIndex {
  std::vector<int64_t> i1;  // (C) column h*dh + d1 of kt and q
  std::vector<int64_t> i2;  // (C) column h*dh + d2 of v and o
};

ChannelIndex channel_index(int64_t D, int64_t dh) {
  const int64_t C = D * dh;
  ChannelIndex ix;
  ix.i1.resize(C), ix.i2.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t h = c / (dh * dh), d1 = (c / dh) % dh, d2 = c % dh;
    ix.i1[c] = h * dh + d1;
    ix.i2[c] = h * dh + d2;
  }
  return ix;
}

// The kernels run the recurrence on the unit-input state xi = x / Bbar:
//   xi_t = Abar xi_{t-1} + u_t,   y_t = 2 Re(Ct xi_t) + D u_t,   Ct = C Bbar,
// the same SSM (x_t = Bbar xi_t), whose kernel is K_h[l] = 2 Re(Ct Abar^l) as docs/mixers.md#h3
// writes it. Adding u to the real part replaces a complex-by-real multiply per
// mode and step (11 instead of 14 flops per mode in the forward, 23 instead of
// 30 in the backward), and nothing is ever divided by Bbar.
// Table (4, Nh, C): rows Abar re, Abar im, Ct re, Ct im; then the skip D (C).
constexpr int64_t kTabRows = 4;

template <class T>
void fill_diag_tables(T* tab, T* dexp, const H3SsmParams& p, int64_t D) {
  const H3DiagCoeffs co = h3_diag_coeffs(p);
  const int64_t dh = p.head_dim, C = D * dh, Nh = co.Nh;
  for (int64_t n = 0; n < Nh; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = (c / (dh * dh)) * Nh + n;
      const cplx w = cplx(co.cr[i], co.ci[i]) * cplx(co.br[i], co.bi[i]);
      tab[(0 * Nh + n) * C + c] = static_cast<T>(co.ar[i]);
      tab[(1 * Nh + n) * C + c] = static_cast<T>(co.ai[i]);
      tab[(2 * Nh + n) * C + c] = static_cast<T>(w.real());
      tab[(3 * Nh + n) * C + c] = static_cast<T>(w.imag());
    }
  for (int64_t c = 0; c < C; ++c) dexp[c] = static_cast<T>(co.d[c / (dh * dh)]);
}

// The coefficients of a run of channels, lanes contiguous: row r of mode n at
// tab + r*sr + n*sn. Either a window on the global table (the step) or a task's
// packed copy (the parallel op: rows of the global table are 4*C bytes apart
// and would share a few L1 sets, as the shift slabs would).
template <class T>
struct Coefs {
  const T* tab;
  int64_t sr, sn;
  const T* d;  // skip D per lane
  const T* row(int64_t r, int64_t n) const { return tab + r * sr + n * sn; }
};

template <class T>
Coefs<T> window_coefs(const T* tab, const T* dexp, int64_t Nh, int64_t C, int64_t c0) {
  return Coefs<T>{tab + c0, Nh * C, C, dexp + c0};
}

template <class T>
Coefs<T> pack_coefs(T* buf /* (Nh, 4, nc) then (nc) */, const T* tab, const T* dexp, int64_t Nh, int64_t C,
                    int64_t c0, int64_t nc) {
  for (int64_t n = 0; n < Nh; ++n)
    for (int64_t r = 0; r < kTabRows; ++r)
      std::memcpy(buf + (n * kTabRows + r) * nc, tab + (r * Nh + n) * C + c0, nc * sizeof(T));
  T* d = buf + Nh * kTabRows * nc;
  std::memcpy(d, dexp + c0, nc * sizeof(T));
  return Coefs<T>{buf, nc, kTabRows * nc, d};
}

// One time step of the diagonal SSM for nc channels:
//   xi_n <- Abar_n xi_n + u,   y = 2 Re(sum_n Ct_n xi_n) + D u.
// xr, xi: (Nh, ld) real and imaginary state rows. The parallel op, its backward
// recomputation and the recurrent step all call this, so the two forms perform
// the same float operations in the same order.
// With `from` (the backward's recomputation) the state is read from from[0 .. Nh*ld)
// and written to xr/xi, which saves copying it forward before each step in place.
template <class T, bool kOutput, int64_t kW = 0>
inline void diag_step(T* y /* (nc) */, T* xr, T* xi, int64_t ld, const T* u /* (nc) */, const Coefs<T>& cf,
                      int64_t Nh, int64_t nc, const T* from = nullptr) {
  // kW > 0 fixes the channel count at compile time: the lane loops unroll into
  // straight SSE code with no trip-count logic.
  const int64_t W = kW > 0 ? kW : nc;
  const int64_t im_at = xi - xr;  // the imaginary rows' offset from the real ones
  if constexpr (kOutput)
    for (int64_t j = 0; j < W; ++j) y[j] = 0;
  for (int64_t n = 0; n < Nh; ++n) {
    const T *ar = cf.row(0, n), *ai = cf.row(1, n), *wr = cf.row(2, n), *wi = cf.row(3, n);
    T* pr = xr + n * ld;
    T* pi = xi + n * ld;
    const T* sr = from ? from + n * ld : pr;
    const T* si = from ? from + n * ld + im_at : pi;
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) {
      const T r = ar[j] * sr[j] - ai[j] * si[j] + u[j];
      const T im = ar[j] * si[j] + ai[j] * sr[j];
      pr[j] = r;
      pi[j] = im;
      if constexpr (kOutput) y[j] += wr[j] * r - wi[j] * im;
    }
  }
  if constexpr (kOutput)
    for (int64_t j = 0; j < W; ++j) y[j] = 2 * y[j] + cf.d[j] * u[j];
}

struct Task {
  int64_t b, h0, h1, c0, nc;  // batch entry, heads [h0, h1), channels [c0, c0+nc)
};

struct TaskGrid {
  int64_t heads_per_task, tasks_per_batch, n_tasks, max_nc;
  Task at(int64_t i, int64_t H, int64_t dh) const {
    Task t;
    t.b = i / tasks_per_batch;
    t.h0 = (i % tasks_per_batch) * heads_per_task;
    t.h1 = std::min(H, t.h0 + heads_per_task);
    t.c0 = t.h0 * dh * dh;
    t.nc = (t.h1 - t.h0) * dh * dh;
    return t;
  }
};

TaskGrid task_grid(int64_t Bn, int64_t H, int64_t dh) {
  TaskGrid g;
  g.heads_per_task = std::max<int64_t>(1, kLanes / (dh * dh));
  g.tasks_per_batch = (H + g.heads_per_task - 1) / g.heads_per_task;
  g.n_tasks = Bn * g.tasks_per_batch;
  g.max_nc = g.heads_per_task * dh * dh;
  return g;
}

// Each task reads its few columns of every row, one row (D floats apart) per
// step: a 64-byte line per row and array, which the hardware prefetchers do not
// fetch ahead at this stride. Without these hints the row misses cost about as
// much as the recurrence itself (measured: backward 280 -> 166 ms, 1 thread).
constexpr int64_t kPrefetchRows = 4;

template <class T>
inline void prefetch_cols(const T* row, int64_t first, int64_t count, bool write) {
  if (write) {
    __builtin_prefetch(row + first, 1);
    __builtin_prefetch(row + first + count - 1, 1);
  } else {
    __builtin_prefetch(row + first, 0);
    __builtin_prefetch(row + first + count - 1, 0);
  }
}

// Head width 1 (H3's default) makes the channel index the identity: i1[j] = i2[j] =
// c0 + j. The loops below then take unit-stride pointers instead of index arrays, which
// GCC vectorises (an indexed store may alias, so the indexed loops stay scalar; they
// were a third of the backward at D = 256). Same operations in the same order: the same
// bits either way.
struct Cols {
  const int64_t* i1;  // the channel index arrays offset to the run's first channel
  const int64_t* i2;
  int64_t c0;         // the run's first channel (and column, when contiguous)
  bool contiguous;
};

template <class T>
inline void gather_u(T* u, const T* kt_row, const T* v_row, const Cols& cs, int64_t nc) {
  if (cs.contiguous) {
    const T* a = kt_row + cs.c0;
    const T* b = v_row + cs.c0;
#pragma omp simd
    for (int64_t j = 0; j < nc; ++j) u[j] = a[j] * b[j];
    return;
  }
  for (int64_t j = 0; j < nc; ++j) u[j] = kt_row[cs.i1[j]] * v_row[cs.i2[j]];
}

// acc[col(j)] += a[col'(j)] * w[j] for the index pairs (i1 -> i2 or i2 -> i1) of a run.
template <class T>
inline void scatter_mul(T* acc_row, const int64_t* to, const T* a_row, const int64_t* from, const T* w, const Cols& cs,
                        int64_t nc) {
  if (cs.contiguous) {
    T* d = acc_row + cs.c0;
    const T* a = a_row + cs.c0;
#pragma omp simd
    for (int64_t j = 0; j < nc; ++j) d[j] += a[j] * w[j];
    return;
  }
  for (int64_t j = 0; j < nc; ++j) acc_row[to[j]] += a_row[from[j]] * w[j];
}

// o[t, h*dh+d2] = sum_d1 q[t, h*dh+d1] y[t,h,d1,d2]; the sum over d1 runs in
// increasing channel order here and in the step.
template <class T>
inline void contract_q(T* o_row, const T* q_row, const T* y, const Cols& cs, int64_t nc) {
  scatter_mul(o_row, cs.i2, q_row, cs.i1, y, cs, nc);
}

// What the diagonal kernels share: the global table and the channel index.
template <class T>
struct DiagTables {
  const T* tab;   // (4, Nh, C)
  const T* dexp;  // (C)
  const int64_t* i1;
  const int64_t* i2;
  int64_t C, Nh;
};

// ---------------------------------------------------------------------------
// Diagonal SSM: forward.
// ---------------------------------------------------------------------------

template <class T, int64_t kW>
void diag_forward_task(const Task& tk, std::vector<T>& scratch, T* o, T* ysave, T* ckpt, const T* q, const T* kt,
                       const T* v, const DiagTables<T>& e, int64_t L, int64_t D, int64_t dh) {
  const int64_t C = e.C, Nh = e.Nh, nck = (L + kChunk - 1) / kChunk;
  const int64_t nc = kW > 0 ? kW : tk.nc, ld = 2 * nc, c0 = tk.c0;
  const int64_t col0 = tk.h0 * dh, ncol = (tk.h1 - tk.h0) * dh;
  const Cols cs{e.i1 + c0, e.i2 + c0, c0, dh == 1};
  T* xs = scratch.data();            // (Nh, 2, nc)
  T* u = xs + Nh * ld;               // (nc)
  T* y = u + nc;                     // (nc)
  T* cbuf = y + nc;                  // packed coefficients
  const Coefs<T> cf = pack_coefs(cbuf, e.tab, e.dexp, Nh, C, c0, nc);
  std::fill(xs, xs + Nh * ld, T(0));
  for (int64_t t = 0; t < L; ++t) {
    const int64_t row = tk.b * L + t;
    if (t + kPrefetchRows < L) {
      const int64_t pf = row + kPrefetchRows;
      prefetch_cols(kt + pf * D, col0, ncol, false);
      prefetch_cols(v + pf * D, col0, ncol, false);
      prefetch_cols(q + pf * D, col0, ncol, false);
      prefetch_cols(o + pf * D, col0, ncol, true);
      if (ysave) prefetch_cols(ysave + pf * C, c0, nc, true);
    }
    if (ckpt && t % kChunk == 0) {  // the state before step t, xi_{t-1}
      T* dst = ckpt + (tk.b * nck + t / kChunk) * Nh * 2 * C;
      for (int64_t n = 0; n < Nh; ++n) {
        std::memcpy(dst + n * 2 * C + c0, xs + n * ld, nc * sizeof(T));
        std::memcpy(dst + n * 2 * C + C + c0, xs + n * ld + nc, nc * sizeof(T));
      }
    }
    gather_u(u, kt + row * D, v + row * D, cs, nc);
    diag_step<T, true, kW>(y, xs, xs + nc, ld, u, cf, Nh, nc);
    if (ysave) std::memcpy(ysave + row * C + c0, y, nc * sizeof(T));
    T* o_row = o + row * D;
    std::fill(o_row + col0, o_row + col0 + ncol, T(0));
    contract_q(o_row, q + row * D, y, cs, nc);
  }
}

template <class T>
void diag_forward(T* o /* (B, L, D) */, T* ysave /* (B, L, C) or null */, T* ckpt /* (B, nck, Nh, 2, C) or null */,
                  const T* q /* (B, L, D) */, const T* kt /* (B, L, D) */, const T* v /* (B, L, D) */,
                  const DiagTables<T>& e, int64_t Bn, int64_t L, int64_t D, int64_t dh) {
  const int64_t C = e.C, Nh = e.Nh, H = D / dh;
  const TaskGrid grid = task_grid(Bn, H, dh);
#pragma omp parallel if (Bn * L * C * Nh > kParallelWork / 4)
  {
    std::vector<T> scratch(grid.max_nc * (2 * Nh + 2 + kTabRows * Nh + 1));
#pragma omp for schedule(static)
    for (int64_t it = 0; it < grid.n_tasks; ++it) {
      const Task tk = grid.at(it, H, dh);
      if (tk.nc == kLanes)
        diag_forward_task<T, kLanes>(tk, scratch, o, ysave, ckpt, q, kt, v, e, L, D, dh);
      else
        diag_forward_task<T, 0>(tk, scratch, o, ysave, ckpt, q, kt, v, e, L, D, dh);
    }
  }
}

// ---------------------------------------------------------------------------
// Diagonal SSM: backward.
// ---------------------------------------------------------------------------

// With g_t = dL/dy_t (real) and complex gradients written as
// dz = dL/dRe z + i dL/dIm z, the forward pass
//   xi_t = a xi_{t-1} + u_t,   y_t = 2 Re(w xi_t) + D u_t      (a = Abar, w = Ct)
// gives the adjoint lam_t = dL/dxi_t = 2 g_t conj(w) + conj(a) lam_{t+1}, lam_L = 0.
// Factoring lam_t = conj(w) nu_t leaves the cheaper real-input recurrence
//   nu_t = 2 g_t + conj(a) nu_{t+1}
// and then
//   du_t = Re(lam_t) + D g_t = Re(conj(w) nu_t) + D g_t,
//   da = sum_t lam_t conj(xi_{t-1}) = conj(w) P,   P = sum_t nu_t conj(xi_{t-1}),
//   dw = sum_t 2 g_t conj(xi_t) =: Q,               dD = sum_t g_t u_t.
// The states are recomputed chunk by chunk from the checkpoints. P and Q are
// accumulated in T within a chunk and in double across chunks, written to `part`
// (one slot per batch entry and channel, no sharing) and reduced over batch and
// head in a fixed order by the caller, which applies conj(w).
constexpr int64_t kPartRows = 4;  // P re, P im, Q re, Q im

template <class T>
struct BackwardScratch {
  std::vector<T> nu, xs, acc, u, g2, du, cbuf;
  std::vector<double> accd, accD;
  BackwardScratch(int64_t Nh, int64_t nc)
      : nu(Nh * 2 * nc), xs((kChunk + 1) * Nh * 2 * nc), acc(kPartRows * Nh * nc), u(nc), g2(nc), du(nc),
        cbuf(Nh * kTabRows * nc + nc), accd(kPartRows * Nh * nc), accD(nc) {}
};

template <class T, int64_t kW>
void diag_backward_task(const Task& tk, BackwardScratch<T>& sc, T* dq, T* dkt, T* dv, double* part, double* part_d,
                        const T* dout, const T* ysave, const T* ckpt, const T* q, const T* kt, const T* v,
                        const DiagTables<T>& e, int64_t L, int64_t D, int64_t dh, bool need_adjoint) {
  const int64_t C = e.C, Nh = e.Nh, nck = (L + kChunk - 1) / kChunk;
  const int64_t nc = kW > 0 ? kW : tk.nc, ld = 2 * nc, S = Nh * ld, c0 = tk.c0;
  const int64_t col0 = tk.h0 * dh, ncol = (tk.h1 - tk.h0) * dh;
  const int64_t* i1 = e.i1 + c0;
  const int64_t* i2 = e.i2 + c0;
  const Cols cs{i1, i2, c0, dh == 1};
  if (dq) {  // o = sum_d1 q y:  dq[h*dh+d1] += sum_d2 dout[h*dh+d2] y[h,d1,d2]
    for (int64_t t = 0; t < L; ++t) {
      const int64_t row = tk.b * L + t;
      if (t + kPrefetchRows < L) {
        const int64_t pf = row + kPrefetchRows;
        prefetch_cols(dq + pf * D, col0, ncol, true);
        prefetch_cols(dout + pf * D, col0, ncol, false);
        prefetch_cols(ysave + pf * C, c0, nc, false);
      }
      scatter_mul(dq + row * D, i1, dout + row * D, i2, ysave + row * C + c0, cs, nc);
    }
  }
  if (!need_adjoint) return;
  const Coefs<T> cf = pack_coefs(sc.cbuf.data(), e.tab, e.dexp, Nh, C, c0, nc);
  T* nu = sc.nu.data();
  T* xs = sc.xs.data();
  T* acc = sc.acc.data();
  T* u = sc.u.data();
  T* g2 = sc.g2.data();
  T* du = sc.du.data();
  double* accd = sc.accd.data();
  double* accD = sc.accD.data();
  std::fill(nu, nu + S, T(0));
  std::fill(accd, accd + kPartRows * Nh * nc, 0.0);
  std::fill(accD, accD + nc, 0.0);
  for (int64_t k = nck - 1; k >= 0; --k) {
    const int64_t t0 = k * kChunk, t1 = std::min(L, t0 + kChunk);
    // Recompute xi_{t0-1} .. xi_{t1-1} into xs[0 .. t1-t0].
    const T* src = ckpt + (tk.b * nck + k) * Nh * 2 * C;
    for (int64_t n = 0; n < Nh; ++n) {
      std::memcpy(xs + n * ld, src + n * 2 * C + c0, nc * sizeof(T));
      std::memcpy(xs + n * ld + nc, src + n * 2 * C + C + c0, nc * sizeof(T));
    }
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t row = tk.b * L + t;
      if (t + kPrefetchRows < t1) {
        prefetch_cols(kt + (row + kPrefetchRows) * D, col0, ncol, false);
        prefetch_cols(v + (row + kPrefetchRows) * D, col0, ncol, false);
      }
      T* cur = xs + (t - t0 + 1) * S;
      gather_u(u, kt + row * D, v + row * D, cs, nc);
      diag_step<T, false, kW>(nullptr, cur, cur + nc, ld, u, cf, Nh, nc, cur - S);
    }
    std::fill(acc, acc + kPartRows * Nh * nc, T(0));
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const int64_t row = tk.b * L + t;
      if (t - kPrefetchRows >= 0) {
        const int64_t pf = (row - kPrefetchRows) * D;
        prefetch_cols(q + pf, col0, ncol, false);
        prefetch_cols(dout + pf, col0, ncol, false);
        if (dkt) prefetch_cols(dkt + pf, col0, ncol, true);
        if (dv) prefetch_cols(dv + pf, col0, ncol, true);
      }
      const T* q_row = q + row * D;
      const T* do_row = dout + row * D;
      gather_u(u, kt + row * D, v + row * D, cs, nc);
      // dy from o = sum_d1 q y: g = dout[h*dh+d2] q[h*dh+d1]
      auto dy = [&](int64_t j, T g) {
        g2[j] = 2 * g;
        du[j] = cf.d[j] * g;
        accD[j] += static_cast<double>(g) * static_cast<double>(u[j]);
      };
      if (cs.contiguous) {
        const T* dr = do_row + c0;
        const T* qr = q_row + c0;
#pragma omp simd
        for (int64_t j = 0; j < nc; ++j) dy(j, dr[j] * qr[j]);
      } else {
        for (int64_t j = 0; j < nc; ++j) dy(j, do_row[i2[j]] * q_row[i1[j]]);
      }
      const T* xprev = xs + (t - t0) * S;
      const T* xcur = xprev + S;
      for (int64_t n = 0; n < Nh; ++n) {
        const T *ar = cf.row(0, n), *ai = cf.row(1, n), *wr = cf.row(2, n), *wi = cf.row(3, n);
        T* nr = nu + n * ld;
        T* ni = nr + nc;
        const T* xpr = xprev + n * ld;
        const T* xpi = xpr + nc;
        const T* xcr = xcur + n * ld;
        const T* xci = xcr + nc;
        T* pq = acc + n * kPartRows * nc;  // P re, P im, Q re, Q im of mode n
#pragma omp simd
        for (int64_t j = 0; j < nc; ++j) {
          const T re = ar[j] * nr[j] + ai[j] * ni[j] + g2[j];  // nu = 2 g + conj(a) nu_next
          const T im = ar[j] * ni[j] - ai[j] * nr[j];
          nr[j] = re;
          ni[j] = im;
          du[j] += wr[j] * re + wi[j] * im;    // Re(conj(w) nu)
          pq[j] += re * xpr[j] + im * xpi[j];  // nu conj(xi_{t-1})
          pq[nc + j] += im * xpr[j] - re * xpi[j];
          pq[2 * nc + j] += g2[j] * xcr[j];  // 2 g conj(xi_t)
          pq[3 * nc + j] -= g2[j] * xci[j];
        }
      }
      // u = kt[h*dh+d1] v[h*dh+d2]
      if (dkt) scatter_mul(dkt + row * D, i1, v + row * D, i2, du, cs, nc);
      if (dv) scatter_mul(dv + row * D, i2, kt + row * D, i1, du, cs, nc);
    }
    for (int64_t i = 0; i < kPartRows * Nh * nc; ++i) accd[i] += acc[i];
    // The first rows of the chunk recomputed next.
    for (int64_t i = 0; i < kPrefetchRows && k > 0; ++i) {
      const int64_t pf = (tk.b * L + (k - 1) * kChunk + i) * D;
      prefetch_cols(kt + pf, col0, ncol, false);
      prefetch_cols(v + pf, col0, ncol, false);
    }
  }
  if (part) {
    for (int64_t n = 0; n < Nh; ++n)
      for (int64_t r = 0; r < kPartRows; ++r)
        std::memcpy(part + ((tk.b * kPartRows + r) * Nh + n) * C + c0, accd + (n * kPartRows + r) * nc,
                    nc * sizeof(double));
    std::memcpy(part_d + tk.b * C + c0, accD, nc * sizeof(double));
  }
}

template <class T>
void diag_backward(T* dq /* (B, L, D) or null */, T* dkt /* (B, L, D) or null */, T* dv /* (B, L, D) or null */,
                   double* part /* (B, 4, Nh, C) or null */, double* part_d /* (B, C) or null */,
                   const T* dout /* (B, L, D) */, const T* ysave /* (B, L, C) */, const T* ckpt /* (B, nck, Nh, 2, C) */,
                   const T* q /* (B, L, D) */, const T* kt /* (B, L, D) */, const T* v /* (B, L, D) */,
                   const DiagTables<T>& e, int64_t Bn, int64_t L, int64_t D, int64_t dh, bool need_adjoint) {
  const int64_t C = e.C, Nh = e.Nh, H = D / dh;
  const TaskGrid grid = task_grid(Bn, H, dh);
#pragma omp parallel if (Bn * L * C * Nh > kParallelWork / 4)
  {
    BackwardScratch<T> sc(Nh, need_adjoint ? grid.max_nc : 0);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < grid.n_tasks; ++it) {
      const Task tk = grid.at(it, H, dh);
      if (tk.nc == kLanes)
        diag_backward_task<T, kLanes>(tk, sc, dq, dkt, dv, part, part_d, dout, ysave, ckpt, q, kt, v, e, L, D, dh,
                                      need_adjoint);
      else
        diag_backward_task<T, 0>(tk, sc, dq, dkt, dv, part, part_d, dout, ysave, ckpt, q, kt, v, e, L, D, dh,
                                 need_adjoint);
    }
  }
}

// Chain rule from P, Q (per head and mode) and dD (per head) to the stored
// parameters, in double. da = conj(w) P and dw = Q (see diag_backward). With
// w = C Bbar, Bbar = B s, s = dt/den, den = 1 - z/2, z = dt A, Abar = (1 + z/2)/den:
//   dC = conj(Bbar) dw,  dBbar = conj(C) dw,  dB = conj(s) dBbar,  ds = conj(B) dBbar
//   dAbar/dz = 1/den^2,  ds/dz = dt/(2 den^2),  ds/ddt (explicit) = 1/den
//   dz = conj(1/den^2) da + conj(dt/(2 den^2)) ds
//   ddt = Re(conj(1/den) ds) + Re(conj(A) dz),   dA = dt dz
//   A = -exp(inv_A_real) + i A_imag,  dt = exp(log_dt)
// (for holomorphic w = f(z) the gradient pulls back as dz = conj(f'(z)) dw).
template <class T>
void diag_param_grads(const H3SsmParams& p, const std::vector<double>& g /* (4, H, Nh) */,
                      const std::vector<double>& gD /* (H) */) {
  const int64_t H = p.log_dt.size(0), Nh = p.inv_A_real.size(1);
  const std::vector<double> log_dt = p.log_dt.to_f64_vector(), iar = p.inv_A_real.to_f64_vector(),
                            aim = p.A_imag.to_f64_vector(), Bv = p.diag_B.to_f64_vector(),
                            Cv = p.diag_C.to_f64_vector();
  T* g_logdt = p.log_dt.requires_grad() ? p.log_dt.grad_buffer().template data<T>() : nullptr;
  T* g_iar = p.inv_A_real.requires_grad() ? p.inv_A_real.grad_buffer().template data<T>() : nullptr;
  T* g_aim = p.A_imag.requires_grad() ? p.A_imag.grad_buffer().template data<T>() : nullptr;
  T* g_B = p.diag_B.requires_grad() ? p.diag_B.grad_buffer().template data<T>() : nullptr;
  T* g_C = p.diag_C.requires_grad() ? p.diag_C.grad_buffer().template data<T>() : nullptr;
  T* g_D = p.diag_D.requires_grad() ? p.diag_D.grad_buffer().template data<T>() : nullptr;
  const int64_t HN = H * Nh;
  for (int64_t h = 0; h < H; ++h) {
    const double dt = std::exp(log_dt[h]);
    double g_dt = 0;
    for (int64_t n = 0; n < Nh; ++n) {
      const int64_t i = h * Nh + n;
      const double a_re = -std::exp(iar[i]);
      const cplx A(a_re, aim[i]);
      const cplx den = 1.0 - dt * A / 2.0;
      const cplx s = dt / den;
      const cplx Bd(Bv[2 * i], Bv[2 * i + 1]), Cd(Cv[2 * i], Cv[2 * i + 1]);
      const cplx bbar = Bd * s, w = Cd * bbar;
      const cplx ga = std::conj(w) * cplx(g[0 * HN + i], g[1 * HN + i]);
      const cplx gw(g[2 * HN + i], g[3 * HN + i]);
      const cplx gC = std::conj(bbar) * gw, gbbar = std::conj(Cd) * gw;
      const cplx gBd = std::conj(s) * gbbar, gs = std::conj(Bd) * gbbar;
      const cplx gz = std::conj(1.0 / (den * den)) * ga + std::conj(dt / (2.0 * den * den)) * gs;
      g_dt += (std::conj(1.0 / den) * gs).real() + (std::conj(A) * gz).real();
      const cplx gA = dt * gz;
      if (g_iar) g_iar[i] += static_cast<T>(gA.real() * a_re);
      if (g_aim) g_aim[i] += static_cast<T>(gA.imag());
      if (g_B) g_B[2 * i] += static_cast<T>(gBd.real()), g_B[2 * i + 1] += static_cast<T>(gBd.imag());
      if (g_C) g_C[2 * i] += static_cast<T>(gC.real()), g_C[2 * i + 1] += static_cast<T>(gC.imag());
    }
    if (g_logdt) g_logdt[h] += static_cast<T>(g_dt * dt);
    if (g_D) g_D[h] += static_cast<T>(gD[h]);
  }
}

// The short-sequence form (h3_diag_toeplitz.cpp) as one tape node. The forward keeps the
// panels Y and KV (2*B*L*D*dh values; the recurrence keeps B*L*D*dh*(1 + N/32)) and the
// kernel K for the backward.
Tensor diag_mix_toeplitz(const Tensor& q, const Tensor& kt, const Tensor& v, const H3SsmParams& p,
                         bool need_grad) {
  const int64_t Bn = q.size(0), L = q.size(1), D = q.size(2), dh = p.head_dim;
  const ToeplitzDims dims = toeplitz_dims(Bn, L, D, dh);
  auto co = std::make_shared<const H3DiagCoeffs>(h3_diag_coeffs(p));
  Tensor o = Tensor::empty(q.shape(), q.dtype());
  Tensor ysave, kvsave, kern;
  if (need_grad) {
    ysave = Tensor::empty({dims.H, dims.hs}, q.dtype());
    kvsave = Tensor::empty({dims.H, dims.hs}, q.dtype());
    kern = Tensor::empty({dims.H, L}, DType::f64);
  }
  dispatch_float(q.dtype(), "h3_diag_mix", [&](auto tag) {
    using T = decltype(tag);
    toeplitz_forward(o.data<T>(), need_grad ? ysave.data<T>() : nullptr, need_grad ? kvsave.data<T>() : nullptr,
                     need_grad ? kern.data<double>() : nullptr, q.data<T>(), kt.data<T>(), v.data<T>(), *co, dims);
  });
  if (!need_grad) return o;
  record({&o}, [q, kt, v, p, co, ysave, kvsave, kern, dims](const std::vector<Tensor>& g) {
    dispatch_float(q.dtype(), "h3_diag_mix backward", [&](auto tag) {
      using T = decltype(tag);
      const bool need_params =
          any_param_grad({&p.log_dt, &p.inv_A_real, &p.A_imag, &p.diag_B, &p.diag_C, &p.diag_D});
      std::vector<double> gsum, gD;
      if (need_params) gsum.resize(kPartRows * dims.H * co->Nh), gD.resize(dims.H);
      T* dq = q.requires_grad() ? q.grad_buffer().template data<T>() : nullptr;
      T* dkt = kt.requires_grad() ? kt.grad_buffer().template data<T>() : nullptr;
      T* dv = v.requires_grad() ? v.grad_buffer().template data<T>() : nullptr;
      toeplitz_backward(dq, dkt, dv, need_params ? gsum.data() : nullptr, need_params ? gD.data() : nullptr,
                        g[0].data<T>(), ysave.data<T>(), kvsave.data<T>(), kern.data<double>(), q.data<T>(),
                        kt.data<T>(), v.data<T>(), *co, dims);
      if (need_params) diag_param_grads<T>(p, gsum, gD);
    });
  });
  return o;
}

}  // namespace

H3DiagMethod h3_diag_method(int64_t B, int64_t L, int64_t N, int64_t dh) {
  const bool toeplitz = L <= kToeplitzMaxLength && L <= toeplitz_len_per_state(B * dh * dh, dh) * N;
  return toeplitz ? H3DiagMethod::toeplitz : H3DiagMethod::recurrence;
}

Tensor h3_diag_mix(const Tensor& q, const Tensor& kt, const Tensor& v, const H3SsmParams& p, H3DiagMethod method) {
  const char* op = "h3_diag_mix";
  check_bld(op, "q", q);
  const int64_t Bn = q.size(0), L = q.size(1), D = q.size(2);
  check_shape(op, "kt", kt, q.shape());
  check_shape(op, "v", v, q.shape());
  h3_check_params(op, p, D);
  check_same_dtype(op, {&q, &kt, &v, &p.log_dt});
  const int64_t dh = p.head_dim, C = D * dh, Nh = d_state_of(p) / 2, nck = (L + kChunk - 1) / kChunk;
  const bool need_grad = any_requires_grad({&q, &kt, &v, &p.log_dt, &p.inv_A_real, &p.A_imag, &p.diag_B,
                                            &p.diag_C, &p.diag_D});
  if (method == H3DiagMethod::automatic) method = h3_diag_method(Bn, L, d_state_of(p), dh);
  if (method == H3DiagMethod::toeplitz) return diag_mix_toeplitz(q, kt, v, p, need_grad);
  Tensor o = Tensor::empty(q.shape(), q.dtype());
  Tensor tab = Tensor::empty({kTabRows * Nh * C + C}, q.dtype());  // (4, Nh, C) coefficients, then D (C)
  Tensor ysave, ckpt;
  if (need_grad) {
    ysave = Tensor::empty({Bn, L, C}, q.dtype());
    ckpt = Tensor::empty({Bn, nck, Nh, 2, C}, q.dtype());
  }
  const ChannelIndex ix = channel_index(D, dh);
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* tb = tab.data<T>();
    fill_diag_tables(tb, tb + kTabRows * Nh * C, p, D);
    const DiagTables<T> e{tb, tb + kTabRows * Nh * C, ix.i1.data(), ix.i2.data(), C, Nh};
    diag_forward(o.data<T>(), need_grad ? ysave.data<T>() : nullptr, need_grad ? ckpt.data<T>() : nullptr,
                 q.data<T>(), kt.data<T>(), v.data<T>(), e, Bn, L, D, dh);
  });
  if (!need_grad) return o;
  record({&o}, [q, kt, v, p, tab, ysave, ckpt, Bn, L, D, dh, C, Nh](const std::vector<Tensor>& g) {
    dispatch_float(q.dtype(), "h3_diag_mix backward", [&](auto tag) {
      using T = decltype(tag);
      const ChannelIndex ix = channel_index(D, dh);
      const T* tb = tab.data<T>();
      const DiagTables<T> e{tb, tb + kTabRows * Nh * C, ix.i1.data(), ix.i2.data(), C, Nh};
      const bool need_params =
          any_param_grad({&p.log_dt, &p.inv_A_real, &p.A_imag, &p.diag_B, &p.diag_C, &p.diag_D});
      const bool need_adjoint = need_params || kt.requires_grad() || v.requires_grad();
      std::vector<double> part, part_d;
      if (need_params) part.assign(Bn * kPartRows * Nh * C, 0.0), part_d.assign(Bn * C, 0.0);
      T* dq = q.requires_grad() ? q.grad_buffer().template data<T>() : nullptr;
      T* dkt = kt.requires_grad() ? kt.grad_buffer().template data<T>() : nullptr;
      T* dv = v.requires_grad() ? v.grad_buffer().template data<T>() : nullptr;
      diag_backward(dq, dkt, dv, need_params ? part.data() : nullptr, need_params ? part_d.data() : nullptr,
                    g[0].data<T>(), ysave.data<T>(), ckpt.data<T>(), q.data<T>(), kt.data<T>(), v.data<T>(), e, Bn,
                    L, D, dh, need_adjoint);
      if (!need_params) return;
      // Reduce the per-(batch, channel) partials to per-(head, mode) sums in a
      // fixed order: batch outer, the head's dh*dh channels inner.
      const int64_t H = D / dh, HN = H * Nh, cpH = dh * dh;
      std::vector<double> gsum(kPartRows * HN, 0.0), gD(H, 0.0);
      for (int64_t b = 0; b < Bn; ++b)
        for (int64_t r = 0; r < kPartRows; ++r)
          for (int64_t h = 0; h < H; ++h)
            for (int64_t n = 0; n < Nh; ++n) {
              const double* src = part.data() + ((b * kPartRows + r) * Nh + n) * C + h * cpH;
              double acc = 0;
              for (int64_t j = 0; j < cpH; ++j) acc += src[j];
              gsum[r * HN + h * Nh + n] += acc;
            }
      for (int64_t b = 0; b < Bn; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t j = 0; j < cpH; ++j) gD[h] += part_d[b * C + h * cpH + j];
      diag_param_grads<T>(p, gsum, gD);
    });
  });
  return o;
}

// ---------------------------------------------------------------------------
// Recurrent step.
// ---------------------------------------------------------------------------

H3CoreState h3_core_state(int64_t batch, int64_t D, int64_t N, int64_t head_dim, DType dt) {
  H3CoreState s;
  s.kbuf = Tensor::zeros({batch, N - 1, D}, dt);
  s.x = Tensor::zeros({batch, N / 2, 2, D * head_dim}, dt);
  return s;
}

Tensor h3_core_step(H3CoreState& s, const Tensor& q, const Tensor& k, const Tensor& v, const H3SsmParams& p) {
  const char* op = "h3_core_step";
  if (!q.defined() || q.ndim() != 2) throw ShapeError(std::string(op) + ": q " + sh(q) + ", expected (B, D)");
  const int64_t Bn = q.size(0), D = q.size(1);
  check_shape(op, "k", k, q.shape());
  check_shape(op, "v", v, q.shape());
  h3_check_params(op, p, D);
  check_same_dtype(op, {&q, &k, &v, &p.shift_B, &s.kbuf, &s.x});
  const int64_t N = d_state_of(p), Nh = N / 2, dh = p.head_dim, C = D * dh, H = D / dh;
  check_shape(op, "state kbuf", s.kbuf, {Bn, N - 1, D});
  check_shape(op, "state x", s.x, {Bn, Nh, 2, C});
  Tensor o = Tensor::empty({Bn, D}, q.dtype());
  const ChannelIndex ix = channel_index(D, dh);
  const int64_t t = s.t;
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    if (t == 0 || !s.taps.defined()) {
      s.taps = Tensor::empty({N, D}, q.dtype());
      s.tables = Tensor::empty({kTabRows * Nh * C + C}, q.dtype());
      fill_shift_taps(s.taps.data<T>(), p);
      fill_diag_tables(s.tables.data<T>(), s.tables.data<T>() + kTabRows * Nh * C, p, D);
    }
    const T* fT = s.taps.data<T>();
    const T* tab = s.tables.data<T>();
    const DiagTables<T> e{tab, tab + kTabRows * Nh * C, ix.i1.data(), ix.i2.data(), C, Nh};
    T* kb = s.kbuf.data<T>();
    T* xs = s.x.data<T>();
    const T *Q = q.data<T>(), *K = k.data<T>(), *V = v.data<T>();
    T* O = o.data<T>();
    std::vector<T> kt(Bn * D);  // (B, D)
    // Shift SSM: the same per-row filter as the parallel op, lag l read from the
    // buffer of past k values (lag 0 is the current k).
    const int64_t lmax = std::min(t, N - 1);
    for (int64_t b = 0; b < Bn; ++b) {
      const T* kbb = kb + b * (N - 1) * D;
      const T* kcur = K + b * D;
      for (int64_t d0 = 0; d0 < D; d0 += kTile) {
        const int64_t nd = std::min(kTile, D - d0);
        auto x = [&](int64_t l) { return (l == 0 ? kcur : kbb + (l - 1) * D) + d0; };
        if (nd == kTile) {
          T acc[kTile];
          shift_tile(acc, lmax, [&](int64_t l) { return fT + l * D + d0; }, x);
          for (int64_t j = 0; j < kTile; ++j) kt[b * D + d0 + j] = acc[j];
        } else {  // a last partial tile: per lane, the same sums in the same order
          for (int64_t j = 0; j < nd; ++j)
            kt[b * D + d0 + j] =
                shift_lane<T>(lmax, [&](int64_t l) { return fT[l * D + d0 + j]; }, [&](int64_t l) { return x(l)[j]; });
        }
      }
    }
    // Diagonal SSM per (batch, group of heads), as in the parallel op.
    const TaskGrid grid = task_grid(Bn, H, dh);
#pragma omp parallel for schedule(static) if (Bn * C * Nh > kParallelWork / 4)
    for (int64_t it = 0; it < grid.n_tasks; ++it) {
      const Task tk = grid.at(it, H, dh);
      std::vector<T> u(tk.nc), y(tk.nc);
      const Cols cs{e.i1 + tk.c0, e.i2 + tk.c0, tk.c0, dh == 1};
      gather_u(u.data(), kt.data() + tk.b * D, V + tk.b * D, cs, tk.nc);
      T* xr = xs + tk.b * Nh * 2 * C + tk.c0;
      const Coefs<T> cf = window_coefs(e.tab, e.dexp, Nh, C, tk.c0);
      if (tk.nc == kLanes)
        diag_step<T, true, kLanes>(y.data(), xr, xr + C, 2 * C, u.data(), cf, Nh, tk.nc);
      else
        diag_step<T, true, 0>(y.data(), xr, xr + C, 2 * C, u.data(), cf, Nh, tk.nc);
      T* o_row = O + tk.b * D;
      std::fill(o_row + tk.h0 * dh, o_row + tk.h1 * dh, T(0));
      contract_q(o_row, Q + tk.b * D, y.data(), cs, tk.nc);
    }
    // Shift the buffer of past k values: row 0 becomes the current k.
    for (int64_t b = 0; b < Bn; ++b) {
      T* kbb = kb + b * (N - 1) * D;
      std::memmove(kbb + D, kbb, (N - 2) * D * sizeof(T));
      std::memcpy(kbb, K + b * D, D * sizeof(T));
    }
  });
  s.t += 1;
  return o;
}

}  // namespace seqmix
