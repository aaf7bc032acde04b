// The selective scan of the mamba mixer with its gate, forward and hand-written backward
// side by side (chunked: the forward keeps h at chunk starts, the backward recomputes a
// chunk and then runs the adjoint recursion over it), and its recurrent step.
// Backward passes accumulate (+=) into gradient buffers (the tape zeroes them once per
// step) and skip inputs that need no gradient. No atomics: every reduction runs either
// inside one thread in a fixed order or as a second pass over per-task partials summed in
// a fixed order, so results are bit-identical from run to run and for any thread count.
#include "layers/mamba_kernel.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "core/gemm.h"
#include "core/tape.h"
#include "layers/mamba_kernel_util.h"

namespace seqmix {

using namespace mamba_detail;

namespace {

// ===========================================================================
// Selective scan.

// Channels per sub-block: the unit of the inner loops, which run over the lanes of
// a sub-block with the state laid out h[n][lane]. The forward uses 16 lanes (four
// SSE vectors: more independent work per step of the n loop), the backward 8 (its
// per-chunk buffers of a_t and a_t h_{t-1} then stay in L1/L2); measured at B=2,
// L=1024, E=512, N=16 on one thread: forward 21.0 ms with 16 lanes vs 26.7 with 8,
// backward 31.5 ms with 8 vs 33.2 with 16. Lane arithmetic is elementwise, so the
// width never changes a result.
constexpr int64_t kEBF = 16;  // forward
constexpr int64_t kEB = 8;    // backward
// Channels per task (forward and backward): the dB/dC partials of a backward task
// are summed over its sub-blocks in lanes, then written once per (t, n); larger
// groups mean fewer partials for the final pass, smaller ones more parallel tasks.
constexpr int64_t kGE = 64;
static_assert(kGE % kEBF == 0 && kGE % kEB == 0, "a channel group is whole sub-blocks");

struct ScanDims {
  int64_t B, L, E, N;
  int64_t ldb, bcol, ldc, ccol, ldz, zcol;  // row lengths and first columns of Bt, Ct, z
  int64_t chunk, nc;                        // steps per chunk, number of chunks
};

// A[e,n] = -exp(A_log[e,n]), and its multiple As = A * ScanDecay<T>::kScale that the
// decay takes (exp(delta A) = decay(delta As)). Shared by the parallel and recurrent
// forms so that both see the same values.
template <class T>
inline T A_of(T a_log) { return -std::exp(a_log); }
template <class T>
inline T As_of(T a_log) { return A_of(a_log) * mamba_math::ScanDecay<T>::kScale; }

// Loads one sub-block's As[n][i] (and A[n][i] when A is non-null) from A_log[e0+i, n];
// padding lanes get A = -1 (with u = 0 and dout = 0 there, they stay exactly zero).
template <int64_t W, class T>
void load_A(T* As, T* A, const T* A_log, int64_t e0, int64_t ne, int64_t N) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t i = 0; i < W; ++i) {
      const T a_log = i < ne ? A_log[(e0 + i) * N + n] : T(0);
      As[n * W + i] = As_of(a_log);
      if (A) A[n * W + i] = A_of(a_log);
    }
}

// Forward: OpenMP over (batch, group of kGE channels). A task steps t = 0..L-1 and,
// within a step, its sub-blocks of kEBF channels, so that each row of u, delta_raw,
// z and out is read as whole cache lines and Bt/Ct once per step; the group's state
// (kGE * N values) stays in L1. The state at the start of every chunk goes to hs
// (B, nc, N, E) for the backward when hs is non-null.
template <class T>
void scan_forward(T* out,          // (B, L, E)
                  T* hs,           // (B, nc, N, E) or null
                  const T* u,      // (B, L, E)
                  const T* dr,     // (B, L, E) delta before softplus
                  const T* A_log,  // (E, N)
                  const T* bsrc,   // (B, L, ldb), Bt at columns [bcol, bcol+N)
                  const T* csrc,   // (B, L, ldc), Ct at columns [ccol, ccol+N)
                  const T* Dp,     // (E)
                  const T* zsrc,   // (B, L, ldz), z at columns [zcol, zcol+E)
                  const ScanDims& d) {
  const int64_t N = d.N, E = d.E, NB = N * kEBF;
  const int64_t ngroups = (E + kGE - 1) / kGE;
#pragma omp parallel if (d.B * d.L * E * (N + 8) > kMinParallelWork)
  {
    std::vector<T> Abuf(static_cast<size_t>((kGE / kEBF) * NB)), hbuf(static_cast<size_t>((kGE / kEBF) * NB));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < d.B * ngroups; ++task) {
      const int64_t b = task / ngroups, ge0 = (task % ngroups) * kGE, gne = std::min(kGE, E - ge0);
      const int64_t nsub = (gne + kEBF - 1) / kEBF;
      T Dv[kGE];
      for (int64_t s = 0; s < nsub; ++s) {
        const int64_t ne = std::min(kEBF, gne - s * kEBF);
        load_A<kEBF>(Abuf.data() + s * NB, static_cast<T*>(nullptr), A_log, ge0 + s * kEBF, ne, N);
        load_lanes<kEBF>(Dv + s * kEBF, Dp + ge0 + s * kEBF, ne);
      }
      std::fill(hbuf.begin(), hbuf.end(), T(0));
      for (int64_t t = 0; t < d.L; ++t) {
        if (hs && t % d.chunk == 0) {
          T* hc = hs + ((b * d.nc + t / d.chunk) * N) * E + ge0;
          for (int64_t s = 0; s < nsub; ++s) {
            const int64_t ne = std::min(kEBF, gne - s * kEBF);
            for (int64_t n = 0; n < N; ++n)
              for (int64_t i = 0; i < ne; ++i) hc[n * E + s * kEBF + i] = hbuf[s * NB + n * kEBF + i];
          }
        }
        const int64_t row = b * d.L + t;
        const T* Bt = bsrc + row * d.ldb + d.bcol;
        const T* Ct = csrc + row * d.ldc + d.ccol;
        for (int64_t s = 0; s < nsub; ++s) {
          const int64_t e0 = ge0 + s * kEBF, ne = std::min(kEBF, gne - s * kEBF);
          T* __restrict h = hbuf.data() + s * NB;
          const T* __restrict As = Abuf.data() + s * NB;
          const T* Ds = Dv + s * kEBF;
          T r[kEBF], uu[kEBF], zz[kEBF], delta[kEBF], du[kEBF], y[kEBF];
          load_lanes<kEBF>(r, dr + row * E + e0, ne);
          load_lanes<kEBF>(uu, u + row * E + e0, ne);
          load_lanes<kEBF>(zz, zsrc + row * d.ldz + d.zcol + e0, ne);
#pragma omp simd
          for (int64_t i = 0; i < kEBF; ++i) {
            delta[i] = softplus(r[i]);
            du[i] = delta[i] * uu[i];
            y[i] = 0;
          }
          for (int64_t n = 0; n < N; ++n) {
            const T bn = Bt[n], cn = Ct[n];
            T* __restrict hn = h + n * kEBF;
            const T* __restrict An = As + n * kEBF;
#pragma omp simd
            for (int64_t i = 0; i < kEBF; ++i) {
              hn[i] = mamba_math::ScanDecay<T>::decay(delta[i] * An[i]) * hn[i] + du[i] * bn;
              y[i] += hn[i] * cn;
            }
          }
          T o[kEBF];
#pragma omp simd
          for (int64_t i = 0; i < kEBF; ++i) o[i] = (y[i] + Ds[i] * uu[i]) * silu(zz[i]);
          for (int64_t i = 0; i < ne; ++i) out[row * E + e0 + i] = o[i];
        }
      }
    }
  }
}

// Backward of the scan. With a_t = exp(delta_t A), dy_t = dout_t silu(z_t), and
// G_t = dL/dh_t (total, through all later steps):
//   G_t       = dy_t Ct_t + a_{t+1} G_{t+1}                   (the reverse scan)
//   dz_t      = dout_t y_t silu'(z_t)
//   dD        += dy_t u_t;          du_t = dy_t D + delta_t sum_n G_t Bt_t
//   ddelta_t  = sum_n G_t a_t h_{t-1} A + u_t sum_n G_t Bt_t  (h_t = a_t h_{t-1} + delta_t Bt_t u_t)
//   dA        += G_t a_t h_{t-1} delta_t;   dA_log = dA * A    (A = -exp(A_log))
//   dBt_t[n]  = sum_e G_t delta_t u_t;      dCt_t[n] = sum_e dy_t h_t
//   ddelta_raw = ddelta softplus'(delta_raw)
// Tasks are (batch, group of kGE channels); chunks are visited last to first. For
// each chunk and sub-block of kEB channels, a forward pass recomputes h from the
// saved chunk start with exactly the forward's arithmetic, keeping a_t and
// a_t h_{t-1} per step, and finishes every term that needs no G (dz, dD, dy's part
// of du, dCt); a reverse pass then runs the G recursion. G carries over from chunk
// to chunk.
// dBt/dCt reduce over channels: a task sums its sub-blocks lane-wise, then writes
// (B, ngroups, L, 2N) partials that a second pass sums over groups in order. dA and
// dD reduce over batch: per-batch partials, summed over batch in a second pass.
// Chunk sums of dA and dD are in T, their totals over chunks in double.
template <class T>
struct ScanGrads {
  T* du = nullptr;        // (B, L, E)
  T* ddr = nullptr;       // (B, L, E)
  T* dA_part = nullptr;   // (B, E, N) d/dA_log per batch entry
  T* dbc_part = nullptr;  // (B, ngroups, L, 2N): dBt then dCt
  T* dD_part = nullptr;   // (B, E)
  T* dz = nullptr;        // (B, L, ldz), columns [zcol, zcol+E)
};

// Everything the backward reads.
template <class T>
struct ScanBackwardInputs {
  const T* dout;   // (B, L, E)
  const T* hs;     // (B, nc, N, E)
  const T* u;      // (B, L, E)
  const T* dr;     // (B, L, E)
  const T* A_log;  // (E, N)
  const T* bsrc;   // (B, L, ldb)
  const T* csrc;   // (B, L, ldc)
  const T* Dp;     // (E)
  const T* zsrc;   // (B, L, ldz)
};

// One thread's buffers: per sub-block of a channel group its A, As and carried G, the
// group's dA_log and dD sums, and per step of one chunk of one sub-block what the
// recompute pass leaves for the reverse pass.
template <class T>
struct ScanBackwardWork {
  ScanBackwardWork(int64_t N, int64_t C)
      : A_all(static_cast<size_t>(kGE * N)),
        As_all(static_cast<size_t>(kGE * N)),
        G_all(static_cast<size_t>(kGE * N)),
        dA_tot(static_cast<size_t>(kGE * N)),
        dD_tot(kGE),
        h(static_cast<size_t>(N * kEB)),
        ab(static_cast<size_t>(C * N * kEB)),
        ahb(static_cast<size_t>(C * N * kEB)),
        deltab(static_cast<size_t>(C * kEB)),
        ub(static_cast<size_t>(C * kEB)),
        dspb(static_cast<size_t>(C * kEB)),
        dyb(static_cast<size_t>(C * kEB)),
        duyb(static_cast<size_t>(C * kEB)),
        lanes(static_cast<size_t>(C * 2 * N * kEB)),
        dAc(static_cast<size_t>(N * kEB)) {}
  std::vector<T> A_all, As_all, G_all;  // (kGE / kEB) sub-blocks of N * kEB
  std::vector<double> dA_tot, dD_tot;   // the group's sums over chunks
  std::vector<T> h;                     // the recomputed state
  std::vector<T> ab, ahb;               // a_t and a_t h_{t-1} of the chunk
  std::vector<T> deltab, ub, dspb, dyb, duyb;  // delta, u, softplus', dy, dy * D of the chunk
  std::vector<T> lanes;                 // dBt / dCt lane partials of the chunk
  std::vector<T> dAc;                   // dA of the chunk
};

// Recompute pass over chunk c (steps [t0, t0 + Tc)) of the sub-block of channels
// [e0, e0 + ne) of sequence b: from h_{t0-1} (kept in hs by the forward) the Tc steps of
// the forward again, keeping a_t and a_t h_{t-1} for the reverse pass. The gradients
// that need only the forward values are taken here: dz, the dCt lanes (dy * h_t) and dD.
template <class T>
void scan_backward_recompute(const ScanGrads<T>& gr, const ScanBackwardInputs<T>& in, const ScanDims& d,
                             ScanBackwardWork<T>& w, int64_t b, int64_t c, int64_t t0, int64_t Tc, int64_t e0,
                             int64_t ne, const T* __restrict As, const T* Dv, T* dDc) {
  const int64_t N = d.N, E = d.E, NB = N * kEB;
  {
    const T* hc = in.hs + ((b * d.nc + c) * N) * E + e0;
    for (int64_t n = 0; n < N; ++n) load_lanes<kEB>(w.h.data() + n * kEB, hc + n * E, ne);
  }
  for (int64_t it = 0; it < Tc; ++it) {
    const int64_t row = b * d.L + t0 + it;
    T* delta = w.deltab.data() + it * kEB;
    T* uu = w.ub.data() + it * kEB;
    T* dsp = w.dspb.data() + it * kEB;
    T* dy = w.dyb.data() + it * kEB;
    T* duy = w.duyb.data() + it * kEB;
    T r[kEB], zz[kEB], go[kEB], du[kEB], sz[kEB], y[kEB];
    load_lanes<kEB>(r, in.dr + row * E + e0, ne);
    load_lanes<kEB>(uu, in.u + row * E + e0, ne);
    load_lanes<kEB>(zz, in.zsrc + row * d.ldz + d.zcol + e0, ne);
    load_lanes<kEB>(go, in.dout + row * E + e0, ne);
#pragma omp simd
    for (int64_t i = 0; i < kEB; ++i) {
      delta[i] = softplus(r[i]);
      dsp[i] = softplus_grad(r[i]);
      du[i] = delta[i] * uu[i];
      sz[i] = sigmoid(zz[i]);
      dy[i] = go[i] * (zz[i] * sz[i]);
      y[i] = 0;
    }
    const T* Bt = in.bsrc + row * d.ldb + d.bcol;
    const T* Ct = in.csrc + row * d.ldc + d.ccol;
    T* __restrict hh = w.h.data();
    T* __restrict a = w.ab.data() + it * NB;
    T* __restrict ah = w.ahb.data() + it * NB;
    T* __restrict lc = w.lanes.data() + it * 2 * NB + NB;  // dCt lanes
    for (int64_t n = 0; n < N; ++n) {
      const T bn = Bt[n], cn = Ct[n];
      const int64_t o = n * kEB;
#pragma omp simd
      for (int64_t i = 0; i < kEB; ++i) {
        const T an = mamba_math::ScanDecay<T>::decay(delta[i] * As[o + i]);
        const T ahn = an * hh[o + i];
        const T hn = ahn + du[i] * bn;
        a[o + i] = an;
        ah[o + i] = ahn;
        hh[o + i] = hn;
        y[i] += hn * cn;
        lc[o + i] += dy[i] * hn;
      }
    }
    T dzv[kEB];
#pragma omp simd
    for (int64_t i = 0; i < kEB; ++i) {
      const T yy = y[i] + Dv[i] * uu[i];
      dzv[i] = go[i] * yy * (sz[i] * (T(1) + zz[i] * (T(1) - sz[i])));
      dDc[i] += dy[i] * uu[i];
      duy[i] = dy[i] * Dv[i];
    }
    if (gr.dz)
      for (int64_t i = 0; i < ne; ++i) gr.dz[row * d.ldz + d.zcol + e0 + i] += dzv[i];
  }
}

// Reverse pass over the same chunk, t = t0 + Tc - 1 down to t0: the adjoint of the state,
// G_t = dy_t C_t + a_{t+1} G_{t+1} (carried across chunks in G), gives du, d(delta_raw),
// the dBt lanes and dA of the chunk (in w.dAc). In the forward pass h_t = a_t h_{t-1} +
// delta_t u_t B_t with a_t = exp(delta_t A), so dh_t/d(delta_t) = A a_t h_{t-1} + u_t B_t
// and dh_t/dA = delta_t a_t h_{t-1}.
template <class T>
void scan_backward_reverse(const ScanGrads<T>& gr, const ScanBackwardInputs<T>& in, const ScanDims& d,
                           ScanBackwardWork<T>& w, int64_t b, int64_t t0, int64_t Tc, int64_t e0, int64_t ne,
                           const T* __restrict A, T* __restrict G) {
  const int64_t N = d.N, E = d.E, NB = N * kEB;
  std::fill(w.dAc.begin(), w.dAc.end(), T(0));
  T* __restrict dAc = w.dAc.data();
  for (int64_t it = Tc - 1; it >= 0; --it) {
    const int64_t row = b * d.L + t0 + it;
    const T* delta = w.deltab.data() + it * kEB;
    const T* uu = w.ub.data() + it * kEB;
    const T* dsp = w.dspb.data() + it * kEB;
    const T* dy = w.dyb.data() + it * kEB;
    const T* duy = w.duyb.data() + it * kEB;
    T dtu[kEB], sGB[kEB], qA[kEB];
    for (int64_t i = 0; i < kEB; ++i) {
      dtu[i] = delta[i] * uu[i];
      sGB[i] = 0;
      qA[i] = 0;
    }
    const T* Bt = in.bsrc + row * d.ldb + d.bcol;
    const T* Ct = in.csrc + row * d.ldc + d.ccol;
    const T* __restrict a = w.ab.data() + it * NB;
    const T* __restrict ah = w.ahb.data() + it * NB;
    T* __restrict lb = w.lanes.data() + it * 2 * NB;  // dBt lanes
    for (int64_t n = 0; n < N; ++n) {
      const T bn = Bt[n], cn = Ct[n];
      const int64_t o = n * kEB;
#pragma omp simd
      for (int64_t i = 0; i < kEB; ++i) {
        const T Gn = G[o + i] + dy[i] * cn;
        const T q = Gn * ah[o + i];
        qA[i] += q * A[o + i];
        dAc[o + i] += q * delta[i];
        sGB[i] += Gn * bn;
        lb[o + i] += Gn * dtu[i];
        G[o + i] = a[o + i] * Gn;
      }
    }
    T duv[kEB], ddr[kEB];
#pragma omp simd
    for (int64_t i = 0; i < kEB; ++i) {
      duv[i] = duy[i] + delta[i] * sGB[i];
      ddr[i] = (qA[i] + uu[i] * sGB[i]) * dsp[i];
    }
    if (gr.du)
      for (int64_t i = 0; i < ne; ++i) gr.du[row * E + e0 + i] += duv[i];
    if (gr.ddr)
      for (int64_t i = 0; i < ne; ++i) gr.ddr[row * E + e0 + i] += ddr[i];
  }
}

// Backward: OpenMP over (batch, group of kGE channels) as the forward. A task walks the
// chunks from the last to the first; for each sub-block of kEB channels it runs the
// recompute pass and then the reverse pass over the chunk. The dBt/dCt lanes of a chunk
// are summed into the group's partial rows, dA_log and dD into per-(b, e) partials; a
// later pass sums the partials in a fixed order.
template <class T>
void scan_backward(const ScanGrads<T>& gr, const ScanBackwardInputs<T>& in, const ScanDims& d) {
  const int64_t N = d.N, E = d.E, C = d.chunk;
  const int64_t ngroups = (E + kGE - 1) / kGE;
  const int64_t NB = N * kEB;
#pragma omp parallel if (d.B * d.L * E * (N + 8) > kMinParallelWork)
  {
    ScanBackwardWork<T> w(N, C);
#pragma omp for schedule(static)
    for (int64_t task = 0; task < d.B * ngroups; ++task) {
      const int64_t b = task / ngroups, g = task % ngroups;
      const int64_t ge0 = g * kGE, gne = std::min(kGE, E - ge0);
      const int64_t nsub = (gne + kEB - 1) / kEB;
      for (int64_t s = 0; s < nsub; ++s)
        load_A<kEB>(w.As_all.data() + s * NB, w.A_all.data() + s * NB, in.A_log, ge0 + s * kEB,
                    std::min(kEB, gne - s * kEB), N);
      std::fill(w.G_all.begin(), w.G_all.end(), T(0));
      std::fill(w.dA_tot.begin(), w.dA_tot.end(), 0.0);
      std::fill(w.dD_tot.begin(), w.dD_tot.end(), 0.0);
      for (int64_t c = d.nc - 1; c >= 0; --c) {
        const int64_t t0 = c * C, Tc = std::min(C, d.L - t0);
        std::fill(w.lanes.begin(), w.lanes.begin() + Tc * 2 * NB, T(0));
        for (int64_t s = 0; s < nsub; ++s) {
          const int64_t e0 = ge0 + s * kEB, ne = std::min(kEB, gne - s * kEB);
          T Dv[kEB];
          load_lanes<kEB>(Dv, in.Dp + e0, ne);
          T dDc[kEB] = {};
          scan_backward_recompute(gr, in, d, w, b, c, t0, Tc, e0, ne, w.As_all.data() + s * NB, Dv, dDc);
          scan_backward_reverse(gr, in, d, w, b, t0, Tc, e0, ne, w.A_all.data() + s * NB, w.G_all.data() + s * NB);
          const int64_t so = s * kEB;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < kEB; ++i) w.dA_tot[n * kGE + so + i] += w.dAc[n * kEB + i];
          for (int64_t i = 0; i < kEB; ++i) w.dD_tot[so + i] += dDc[i];
        }
        if (gr.dbc_part) {
          T* part = gr.dbc_part + ((b * ngroups + g) * d.L + t0) * 2 * N;
          for (int64_t it = 0; it < Tc; ++it)
            for (int64_t k = 0; k < 2 * N; ++k) {
              const T* l = w.lanes.data() + it * 2 * NB + k * kEB;
              T acc = 0;
              for (int64_t i = 0; i < kEB; ++i) acc += l[i];
              part[it * 2 * N + k] = acc;
            }
        }
      }
      for (int64_t i = 0; i < gne; ++i) {
        const int64_t e = ge0 + i;
        if (gr.dA_part)
          for (int64_t n = 0; n < N; ++n)
            gr.dA_part[(b * E + e) * N + n] =
                static_cast<T>(w.dA_tot[n * kGE + i] * -std::exp(double(in.A_log[e * N + n])));
        if (gr.dD_part) gr.dD_part[b * E + e] = static_cast<T>(w.dD_tot[i]);
      }
    }
  }
}

}  // namespace

Tensor selective_scan(const Tensor& u, const Tensor& delta_raw, const Tensor& A_log, const ColumnSlice& bc,
                      const ColumnSlice& cc, const Tensor& D, const ColumnSlice& z, int64_t chunk) {
  const char* op = "selective_scan";
  if (!u.defined() || u.ndim() != 3)
    throw ShapeError(std::string(op) + ": u must be (B, L, E), got " + (u.defined() ? shp(u) : std::string("undefined")));
  const int64_t B = u.size(0), L = u.size(1), E = u.size(2);
  check_shape(op, "delta_raw", delta_raw, {B, L, E});
  if (!A_log.defined() || A_log.ndim() != 2 || A_log.size(0) != E)
    throw ShapeError(std::string(op) + ": A_log has shape " + (A_log.defined() ? shp(A_log) : std::string("undefined")) +
                     ", expected (" + std::to_string(E) + ", N)");
  const int64_t N = A_log.size(1);
  check_shape(op, "D", D, {E});
  check_columns(op, "Bt", bc, {B, L}, N);
  check_columns(op, "Ct", cc, {B, L}, N);
  check_columns(op, "z", z, {B, L}, E);
  check_same_dtype(op, {&u, &delta_raw, &A_log, &bc.src, &cc.src, &D, &z.src});
  if (chunk < 1) throw ShapeError(std::string(op) + ": chunk must be >= 1, got " + std::to_string(chunk));
  const ScanDims d{B, L, E, N, bc.src.size(2), bc.col, cc.src.size(2), cc.col, z.src.size(2), z.col,
                   chunk, (L + chunk - 1) / chunk};
  const Tensor bsrc = bc.src, csrc = cc.src, zsrc = z.src;
  const bool need_grad = any_requires_grad({&u, &delta_raw, &A_log, &bsrc, &csrc, &D, &zsrc});
  Tensor out = Tensor::empty({B, L, E}, u.dtype());
  // h at chunk starts: B * nc * N * E values, the only state kept for the backward.
  Tensor hs = need_grad ? Tensor::empty({B, d.nc, N, E}, u.dtype()) : Tensor();
  dispatch_float(u.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    scan_forward<T>(out.data<T>(), need_grad ? hs.data<T>() : nullptr, u.data<T>(), delta_raw.data<T>(),
                    A_log.data<T>(), bsrc.data<T>(), csrc.data<T>(), D.data<T>(), zsrc.data<T>(), d);
  });
  if (!need_grad) return out;
  record({&out}, [u, delta_raw, A_log, bsrc, csrc, D, zsrc, hs, d](const std::vector<Tensor>& g) {
    dispatch_float(u.dtype(), "selective_scan backward", [&](auto tag) {
      using T = decltype(tag);
      const int64_t ngroups = (d.E + kGE - 1) / kGE;
      const bool need_bc = bsrc.requires_grad() || csrc.requires_grad();
      Tensor dbc_part = need_bc ? Tensor::empty({d.B, ngroups, d.L, 2 * d.N}, u.dtype()) : Tensor();
      Tensor dA_part = A_log.requires_grad() ? Tensor::empty({d.B, d.E, d.N}, u.dtype()) : Tensor();
      Tensor dD_part = D.requires_grad() ? Tensor::empty({d.B, d.E}, u.dtype()) : Tensor();
      ScanGrads<T> gr;
      if (u.requires_grad()) gr.du = u.grad_buffer().template data<T>();
      if (delta_raw.requires_grad()) gr.ddr = delta_raw.grad_buffer().template data<T>();
      if (zsrc.requires_grad()) gr.dz = zsrc.grad_buffer().template data<T>();
      if (need_bc) gr.dbc_part = dbc_part.data<T>();
      if (dA_part.defined()) gr.dA_part = dA_part.data<T>();
      if (dD_part.defined()) gr.dD_part = dD_part.data<T>();
      const ScanBackwardInputs<T> in{g[0].data<T>(), hs.data<T>(),   u.data<T>(), delta_raw.data<T>(), A_log.data<T>(),
                                     bsrc.data<T>(), csrc.data<T>(), D.data<T>(), zsrc.data<T>()};
      scan_backward<T>(gr, in, d);
      // Second passes: the channel-group partials of dBt/dCt summed per row, and the
      // per-batch partials of dA_log and dD summed over batch, each in a fixed order.
      if (need_bc) {
        const T* part = dbc_part.data<T>();
        T* dB = bsrc.requires_grad() ? bsrc.grad_buffer().template data<T>() : nullptr;
        T* dC = csrc.requires_grad() ? csrc.grad_buffer().template data<T>() : nullptr;
        const int64_t N = d.N;
#pragma omp parallel for schedule(static) if (d.B * d.L * 2 * N * ngroups > kMinParallelWork)
        for (int64_t row = 0; row < d.B * d.L; ++row) {
          const int64_t b = row / d.L, t = row % d.L;
          for (int64_t k = 0; k < 2 * N; ++k) {
            T acc = 0;
            for (int64_t gi = 0; gi < ngroups; ++gi) acc += part[((b * ngroups + gi) * d.L + t) * 2 * N + k];
            if (k < N) {
              if (dB) dB[row * d.ldb + d.bcol + k] += acc;
            } else if (dC) {
              dC[row * d.ldc + d.ccol + k - N] += acc;
            }
          }
        }
      }
      if (dA_part.defined()) {
        T* dA = A_log.grad_buffer().template data<T>();
        const T* p = dA_part.data<T>();
        const int64_t EN = d.E * d.N;
#pragma omp parallel for schedule(static) if (EN * d.B > kMinParallelWork)
        for (int64_t k = 0; k < EN; ++k) {
          T acc = 0;
          for (int64_t b = 0; b < d.B; ++b) acc += p[b * EN + k];
          dA[k] += acc;
        }
      }
      if (dD_part.defined()) {
        T* dD = D.grad_buffer().template data<T>();
        const T* p = dD_part.data<T>();
        for (int64_t e = 0; e < d.E; ++e) {
          T acc = 0;
          for (int64_t b = 0; b < d.B; ++b) acc += p[b * d.E + e];
          dD[e] += acc;
        }
      }
    });
  });
  return out;
}

// ---------------------------------------------------------------------------
// Recurrent forms. The arithmetic of one step follows the parallel kernels
// operation for operation (same helpers, same summation order), so a step agrees
// with the parallel form up to the GEMMs' own rounding.

Tensor selective_scan_step(Tensor& h, const Tensor& u, const Tensor& delta_raw, const Tensor& A_log,
                           const ColumnSlice& bc, const ColumnSlice& cc, const Tensor& D, const ColumnSlice& z,
                           Tensor& as_cache) {
  const char* op = "selective_scan_step";
  if (!u.defined() || u.ndim() != 2)
    throw ShapeError(std::string(op) + ": u must be (B, E), got " + (u.defined() ? shp(u) : std::string("undefined")));
  const int64_t B = u.size(0), E = u.size(1);
  if (!A_log.defined() || A_log.ndim() != 2 || A_log.size(0) != E)
    throw ShapeError(std::string(op) + ": A_log must be (" + std::to_string(E) + ", N)");
  const int64_t N = A_log.size(1);
  check_shape(op, "h", h, {B, E, N});
  check_shape(op, "delta_raw", delta_raw, {B, E});
  check_shape(op, "D", D, {E});
  check_columns(op, "Bt", bc, {B}, N);
  check_columns(op, "Ct", cc, {B}, N);
  check_columns(op, "z", z, {B}, E);
  check_same_dtype(op, {&h, &u, &delta_raw, &A_log, &bc.src, &cc.src, &D, &z.src});
  Tensor out = Tensor::empty({B, E}, u.dtype());
  if (!as_cache.defined() || as_cache.dtype() != A_log.dtype() || as_cache.shape() != A_log.shape()) {
    as_cache = Tensor::empty(A_log.shape(), A_log.dtype());
    dispatch_float(u.dtype(), op, [&](auto tag) {
      using T = decltype(tag);
      const T* Al = A_log.data<T>();
      T* As = as_cache.data<T>();
      for (int64_t i = 0; i < E * N; ++i) As[i] = As_of(Al[i]);
    });
  }
  dispatch_float(u.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* H = h.data<T>();
    const T *U = u.data<T>(), *R = delta_raw.data<T>(), *As = as_cache.data<T>(), *Dp = D.data<T>();
    const T *Bsrc = bc.src.data<T>(), *Csrc = cc.src.data<T>(), *Zsrc = z.src.data<T>();
    T* O = out.data<T>();
    const int64_t ldb = bc.src.size(1), ldc = cc.src.size(1), ldz = z.src.size(1);
#pragma omp parallel for schedule(static) if (B * E * (N + 8) > kMinParallelWork)
    for (int64_t be = 0; be < B * E; ++be) {
      const int64_t b = be / E, e = be % E;
      const T* Bt = Bsrc + b * ldb + bc.col;
      const T* Ct = Csrc + b * ldc + cc.col;
      const T delta = softplus(R[be]), uu = U[be], du = delta * uu;
      T y = 0;
      T* hn = H + be * N;
      for (int64_t n = 0; n < N; ++n) {
        hn[n] = mamba_math::ScanDecay<T>::decay(delta * As[e * N + n]) * hn[n] + du * Bt[n];
        y += hn[n] * Ct[n];
      }
      O[be] = (y + Dp[e] * uu) * silu(Zsrc[b * ldz + z.col + e]);
    }
  });
  return out;
}

}  // namespace seqmix
