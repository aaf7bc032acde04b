// Fused ops of the mamba mixer before the scan, forward and hand-written backward side
// by side: the causal depthwise conv1d + bias + silu (x read in place from xz) with its
// recurrent step, and dt_proj applied to the dl columns of x_dbl (read in place).
// Backward passes accumulate (+=) into gradient buffers (the tape zeroes them once per
// step) and skip inputs that need no gradient; no atomics, so results are bit-identical
// from run to run and for any thread count.
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
// Causal depthwise conv1d + bias + silu.

struct ConvDims {
  int64_t B, L, E, K;
  int64_t ldx, col;  // x[b,t,e] = src[(b*L + t)*ldx + col + e]
};

// Forward: xc[b,t,e] = silu(pre[b,t,e]), pre = bias[e] + sum_j w[e,j] x[b,t-K+1+j,e].
// OpenMP over rows (b,t); the inner loop runs over contiguous channels.
template <class T>
void conv_forward(T* xc,       // (B, L, E)
                  const T* x,  // (B, L, ldx), columns [col, col+E)
                  const T* w,  // (E, K)
                  const T* bias, const ConvDims& d) {
  // w transposed to (K, E) so that the channel loop reads it contiguously.
  std::vector<T> wt(static_cast<size_t>(d.K * d.E));
  for (int64_t e = 0; e < d.E; ++e)
    for (int64_t j = 0; j < d.K; ++j) wt[j * d.E + e] = w[e * d.K + j];
#pragma omp parallel if (d.B * d.L * d.E * (d.K + 8) > kMinParallelWork)
  {
    std::vector<T> acc(static_cast<size_t>(d.E));
#pragma omp for schedule(static)
    for (int64_t row = 0; row < d.B * d.L; ++row) {
      const int64_t b = row / d.L, t = row % d.L;
      for (int64_t e = 0; e < d.E; ++e) acc[e] = bias[e];
      for (int64_t j = 0; j < d.K; ++j) {
        const int64_t s = t - d.K + 1 + j;
        if (s < 0) continue;  // zero left padding
        const T* xs = x + (b * d.L + s) * d.ldx + d.col;
        const T* wj = wt.data() + j * d.E;
#pragma omp simd
        for (int64_t e = 0; e < d.E; ++e) acc[e] += wj[e] * xs[e];
      }
      T* o = xc + row * d.E;
#pragma omp simd
      for (int64_t e = 0; e < d.E; ++e) o[e] = silu(acc[e]);
    }
  }
}

// Backward. With dpre = dxc * silu'(pre):
//   dx[b,s,e]  += sum_j w[e,j] dpre[b, s+K-1-j, e]     (dpre[>= L] = 0)
//   dw[e,j]    += sum_{b,t} dpre[b,t,e] x[b,t-K+1+j,e]
//   dbias[e]   += sum_{b,t} dpre[b,t,e]
// dw and dbias reduce over (b,t) while dx does not reduce at all, so the pass runs
// OpenMP over channel blocks: each thread owns its channels' dw, dbias and dx
// columns outright (no atomics, fixed order). A task walks t with windows of the
// last K rows of x and of dpre, so that each row of x and dxc is read once and each
// row of dx written once (dx[t-K+1] is complete once dpre[t] is known). pre is
// recomputed (K MACs) rather than kept. dw/dbias sum one sequence in T, then add
// into a double total.
template <class T>
void conv_backward(T* dx,          // (B, L, ldx) columns [col, col+E), or null
                   T* dw,          // (E, K), or null
                   T* dbias,       // (E), or null
                   const T* dxc,   // (B, L, E)
                   const T* x,     // (B, L, ldx)
                   const T* w,     // (E, K)
                   const T* bias,  // (E)
                   const ConvDims& d) {
  constexpr int64_t kCB = 32;  // channels per task: two cache lines of float per row
  const int64_t nblk = (d.E + kCB - 1) / kCB, K = d.K;
#pragma omp parallel for schedule(static) if (d.B * d.L * d.E * (2 * d.K + 8) > kMinParallelWork)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t e0 = blk * kCB, ne = std::min(kCB, d.E - e0);
    // (K, kCB) each: w transposed, the x window (oldest row first), the dpre window,
    // and the per-sequence dw sums.
    std::vector<T> wt(static_cast<size_t>(K * kCB)), xw(static_cast<size_t>(K * kCB)),
        pw(static_cast<size_t>(K * kCB)), dw_seq(static_cast<size_t>(K * kCB));
    for (int64_t j = 0; j < K; ++j)
      for (int64_t i = 0; i < kCB; ++i) wt[j * kCB + i] = i < ne ? w[(e0 + i) * K + j] : T(0);
    T bv[kCB];
    for (int64_t i = 0; i < kCB; ++i) bv[i] = i < ne ? bias[e0 + i] : T(0);
    std::vector<double> dw_tot(static_cast<size_t>(K * kCB), 0.0), db_tot(kCB, 0.0);
    T db_seq[kCB];
    for (int64_t b = 0; b < d.B; ++b) {
      std::fill(dw_seq.begin(), dw_seq.end(), T(0));
      std::fill(xw.begin(), xw.end(), T(0));
      std::fill(pw.begin(), pw.end(), T(0));
      std::fill(db_seq, db_seq + kCB, T(0));
      // Steps t >= L only flush the last K-1 rows of dx (x and dpre are zero there).
      for (int64_t t = 0; t < d.L + K - 1; ++t) {
        std::copy(xw.begin() + kCB, xw.end(), xw.begin());
        std::copy(pw.begin() + kCB, pw.end(), pw.begin());
        T* xn = xw.data() + (K - 1) * kCB;
        T* pn = pw.data() + (K - 1) * kCB;
        if (t < d.L) {
          load_lanes<kCB>(xn, x + (b * d.L + t) * d.ldx + d.col + e0, ne);
          T g[kCB], pre[kCB];
          load_lanes<kCB>(g, dxc + (b * d.L + t) * d.E + e0, ne);
          for (int64_t i = 0; i < kCB; ++i) pre[i] = bv[i];
          for (int64_t j = 0; j < K; ++j) {
#pragma omp simd
            for (int64_t i = 0; i < kCB; ++i) pre[i] += wt[j * kCB + i] * xw[j * kCB + i];
          }
#pragma omp simd
          for (int64_t i = 0; i < kCB; ++i) {
            pn[i] = g[i] * silu_grad(pre[i]);
            db_seq[i] += pn[i];
          }
          for (int64_t j = 0; j < K; ++j) {
#pragma omp simd
            for (int64_t i = 0; i < kCB; ++i) dw_seq[j * kCB + i] += pn[i] * xw[j * kCB + i];
          }
        } else {
          std::fill(xn, xn + kCB, T(0));
          std::fill(pn, pn + kCB, T(0));
        }
        const int64_t s = t - K + 1;
        if (dx && s >= 0) {
          T acc[kCB] = {};
          for (int64_t j = 0; j < K; ++j) {
#pragma omp simd
            for (int64_t i = 0; i < kCB; ++i) acc[i] += wt[j * kCB + i] * pw[(K - 1 - j) * kCB + i];
          }
          T* dxs = dx + (b * d.L + s) * d.ldx + d.col + e0;
          for (int64_t i = 0; i < ne; ++i) dxs[i] += acc[i];
        }
      }
      for (int64_t k = 0; k < K * kCB; ++k) dw_tot[k] += dw_seq[k];
      for (int64_t i = 0; i < kCB; ++i) db_tot[i] += db_seq[i];
    }
    for (int64_t i = 0; i < ne; ++i) {
      if (dw)
        for (int64_t j = 0; j < K; ++j) dw[(e0 + i) * K + j] += static_cast<T>(dw_tot[j * kCB + i]);
      if (dbias) dbias[e0 + i] += static_cast<T>(db_tot[i]);
    }
  }
}

// ===========================================================================
// Linear on columns: y = x[..., col : col+K] W^T + bias.

template <class T>
void gather_columns(T* out, const T* src, int64_t rows, int64_t ld, int64_t col, int64_t K) {
#pragma omp parallel for schedule(static) if (rows * K > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < K; ++k) out[r * K + k] = src[r * ld + col + k];
}

}  // namespace

Tensor mamba_conv1d_silu(const ColumnSlice& xs, const Tensor& w, const Tensor& bias) {
  const char* op = "mamba_conv1d_silu";
  check_ndim_at_least(op, "w", w, 3);
  if (w.ndim() != 3 || w.size(1) != 1)
    throw ShapeError(std::string(op) + ": w has shape " + shp(w) + ", expected (E, 1, d_conv)");
  const int64_t E = w.size(0), K = w.size(2);
  check_shape(op, "bias", bias, {E});
  if (!xs.src.defined() || xs.src.ndim() != 3)
    throw ShapeError(std::string(op) + ": x source must be (B, L, C), got " +
                     (xs.src.defined() ? shp(xs.src) : std::string("undefined")));
  const int64_t B = xs.src.size(0), L = xs.src.size(1);
  check_columns(op, "x", xs, {B, L}, E);
  check_same_dtype(op, {&xs.src, &w, &bias});
  const ConvDims d{B, L, E, K, xs.src.size(2), xs.col};
  Tensor xc = Tensor::empty({B, L, E}, w.dtype());
  dispatch_float(w.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    conv_forward<T>(xc.data<T>(), xs.src.data<T>(), w.data<T>(), bias.data<T>(), d);
  });
  const Tensor x = xs.src;
  if (!any_requires_grad({&x, &w, &bias})) return xc;
  record({&xc}, [x, w, bias, d](const std::vector<Tensor>& g) {
    dispatch_float(w.dtype(), "mamba_conv1d_silu backward", [&](auto tag) {
      using T = decltype(tag);
      conv_backward<T>(x.requires_grad() ? x.grad_buffer().template data<T>() : nullptr,
                       w.requires_grad() ? w.grad_buffer().template data<T>() : nullptr,
                       bias.requires_grad() ? bias.grad_buffer().template data<T>() : nullptr, g[0].data<T>(),
                       x.data<T>(), w.data<T>(), bias.data<T>(), d);
    });
  });
  return xc;
}

Tensor mamba_linear_columns(const ColumnSlice& xs, const Tensor& w, const Tensor& bias) {
  const char* op = "mamba_linear_columns";
  if (!w.defined() || w.ndim() != 2) throw ShapeError(std::string(op) + ": w must be (out, in)");
  const int64_t O = w.size(0), K = w.size(1);
  if (!xs.src.defined() || xs.src.ndim() < 2)
    throw ShapeError(std::string(op) + ": x source must have at least 2 dimensions");
  const Shape lead(xs.src.shape().begin(), xs.src.shape().end() - 1);
  check_columns(op, "x", xs, lead, K);
  if (bias.defined()) check_shape(op, "bias", bias, {O});
  check_same_dtype(op, {&xs.src, &w, &bias});
  const int64_t rows = shape_numel(lead), ld = xs.src.size(-1), col = xs.col;
  Shape out_shape = lead;
  out_shape.push_back(O);
  Tensor y = Tensor::empty(out_shape, w.dtype());
  // The K columns are gathered into a contiguous (rows, K) copy for the GEMM; K is
  // dt_rank (D/16), so the copy is a sixteenth of the input and is kept for dW.
  Tensor xk = Tensor::empty({rows, K}, w.dtype());
  dispatch_float(w.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    gather_columns<T>(xk.data<T>(), xs.src.data<T>(), rows, ld, col, K);
    T* Y = y.data<T>();
    gemm(GemmShape{1, rows, O, K, false, true}, xk.data<T>(), w.data<T>(), Y, false);
    if (bias.defined()) {
      const T* bv = bias.data<T>();
#pragma omp parallel for schedule(static) if (rows * O > kMinParallelWork)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < O; ++o) Y[r * O + o] += bv[o];
    }
  });
  const Tensor x = xs.src;
  if (!any_requires_grad({&x, &w, &bias})) return y;
  record({&y}, [x, xk, w, bias, rows, ld, col, O, K](const std::vector<Tensor>& g) {
    dispatch_float(w.dtype(), "mamba_linear_columns backward", [&](auto tag) {
      using T = decltype(tag);
      const T* dY = g[0].data<T>();
      if (x.requires_grad()) {
        // dxk (rows, K) = dY (rows, O) W (O, K), then added into the source's columns.
        Tensor dxk = Tensor::empty({rows, K}, w.dtype());
        gemm(GemmShape{1, rows, K, O, false, false}, dY, w.data<T>(), dxk.data<T>(), false);
        T* dx = x.grad_buffer().template data<T>();
        const T* s = dxk.data<T>();
#pragma omp parallel for schedule(static) if (rows * K > kMinParallelWork)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t k = 0; k < K; ++k) dx[r * ld + col + k] += s[r * K + k];
      }
      if (w.requires_grad())  // dW (O, K) += dY^T (O, rows) xk (rows, K)
        gemm(GemmShape{1, O, K, rows, true, false}, dY, xk.data<T>(), w.grad_buffer().template data<T>(), true);
      if (bias.defined() && bias.requires_grad()) {
        // Column sums in two passes: partial sums over fixed blocks of rows (reading
        // dY row by row, contiguous), then the blocks' partials summed in order. The
        // order is fixed by the blocking alone, not by the thread count.
        constexpr int64_t kRows = 256;
        const int64_t nrb = (rows + kRows - 1) / kRows;
        std::vector<T> part(static_cast<size_t>(nrb * O), T(0));
#pragma omp parallel for schedule(static) if (rows * O > kMinParallelWork)
        for (int64_t rb = 0; rb < nrb; ++rb) {
          T* p = part.data() + rb * O;
          for (int64_t r = rb * kRows; r < std::min(rows, (rb + 1) * kRows); ++r)
            for (int64_t o = 0; o < O; ++o) p[o] += dY[r * O + o];
        }
        T* dB = bias.grad_buffer().template data<T>();
        for (int64_t o = 0; o < O; ++o) {
          T acc = 0;
          for (int64_t rb = 0; rb < nrb; ++rb) acc += part[rb * O + o];
          dB[o] += acc;
        }
      }
    });
  });
  return y;
}

Tensor mamba_conv1d_silu_step(Tensor& conv_state, const ColumnSlice& xs, const Tensor& w, const Tensor& bias) {
  const char* op = "mamba_conv1d_silu_step";
  if (!w.defined() || w.ndim() != 3 || w.size(1) != 1)
    throw ShapeError(std::string(op) + ": w must be (E, 1, d_conv)");
  const int64_t E = w.size(0), K = w.size(2);
  if (!xs.src.defined() || xs.src.ndim() != 2) throw ShapeError(std::string(op) + ": x source must be (B, C)");
  const int64_t B = xs.src.size(0);
  check_columns(op, "x", xs, {B}, E);
  check_shape(op, "bias", bias, {E});
  check_shape(op, "conv_state", conv_state, {B, K - 1, E});
  check_same_dtype(op, {&conv_state, &xs.src, &w, &bias});
  Tensor xc = Tensor::empty({B, E}, w.dtype());
  dispatch_float(w.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    T* S = conv_state.data<T>();
    const T *X = xs.src.data<T>(), *W = w.data<T>(), *bv = bias.data<T>();
    const int64_t ld = xs.src.size(1);
    T* XC = xc.data<T>();
    for (int64_t b = 0; b < B; ++b) {
      T* st = S + b * (K - 1) * E;  // (K-1, E), oldest first
      const T* x = X + b * ld + xs.col;
      for (int64_t e = 0; e < E; ++e) {
        // Same order as the parallel form: bias, then taps j = 0..K-1 (oldest first).
        T acc = bv[e];
        for (int64_t j = 0; j < K - 1; ++j) acc += W[e * K + j] * st[j * E + e];
        acc += W[e * K + K - 1] * x[e];
        XC[b * E + e] = silu(acc);
      }
      // Shift the window by one step.
      for (int64_t j = 0; j + 1 < K - 1; ++j)
        for (int64_t e = 0; e < E; ++e) st[j * E + e] = st[(j + 1) * E + e];
      if (K > 1)
        for (int64_t e = 0; e < E; ++e) st[(K - 2) * E + e] = x[e];
    }
  });
  return xc;
}

}  // namespace seqmix
