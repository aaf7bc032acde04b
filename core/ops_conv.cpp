// causal_conv1d: depthwise causal convolution with zero left padding, forward
// and backward.
//
//   y[b,t,c] = bias[c] + sum_{j<K} w[c,j] * x[b, t-K+1+j, c]      (x[b,<0,c] = 0)
//
// Layout: channels are the contiguous axis of x and y, so every inner loop runs
// over a block of channels with unit stride (it vectorises) and the taps are
// read from a (K, C) transposed copy of w. The forward and the input gradient
// are parallel over (batch, channel block); the weight and bias gradients,
// which reduce over B and L, are parallel over channel blocks only, so each
// thread owns whole channels: no atomics, and the summation order is fixed by
// the loop nest alone (bit-identical for any thread count).
//
// Backward accumulates (+=) into gradient buffers (the tape zeroes them once
// per step) and skips inputs that need no gradient.
#include <omp.h>

#include <algorithm>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

// Channels per task in the forward and the input gradient: 64 float32 = 4
// cache lines per row; smaller when (batch x blocks) would leave threads idle.
// Any block size gives the same result (each output sums its taps in j order).
int64_t channel_block(int64_t B, int64_t C) {
  int64_t cb = 64;
  const int64_t want = 4 * static_cast<int64_t>(omp_get_max_threads());
  while (cb > 8 && B * ((C + cb - 1) / cb) < want) cb /= 2;
  return cb;
}

// wT[j, c] = w[c, j]
template <class T>
std::vector<T> taps_by_row(const T* w /* w: (C, K) */, int64_t C, int64_t K) {
  std::vector<T> wT(static_cast<size_t>(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int64_t j = 0; j < K; ++j) wT[j * C + c] = w[c * K + j];
  return wT;
}

template <class T>
void conv_forward(T* y,           // y: (B, L, C)
                  const T* x,     // x: (B, L, C)
                  const T* wT,    // wT: (K, C), the taps transposed
                  const T* bias,  // bias: (C) or nullptr
                  int64_t B, int64_t L, int64_t C, int64_t K) {
  const int64_t cb = channel_block(B, C);
  const int64_t nblk = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (B * L * C * K > (1 << 14))
  for (int64_t task = 0; task < B * nblk; ++task) {
    const int64_t b = task / nblk, c0 = task % nblk * cb, c1 = std::min(C, c0 + cb);
    for (int64_t t = 0; t < L; ++t) {
      T* yr = y + (b * L + t) * C;
      for (int64_t c = c0; c < c1; ++c) yr[c] = bias ? bias[c] : T(0);
      // Taps that would read x before t = 0 read the zero padding: skipped.
      for (int64_t j = std::max<int64_t>(0, K - 1 - t); j < K; ++j) {
        const T* xr = x + (b * L + t - K + 1 + j) * C;
        const T* wr = wT + j * C;
        for (int64_t c = c0; c < c1; ++c) yr[c] += wr[c] * xr[c];
      }
    }
  }
}

// In the forward x[b,s,c] fed y[b,t,c] through tap j = s - t + K - 1 for each
// t in [s, s+K-1], so
//   dx[b,s,c] += sum_{j<K, t = s+K-1-j < L} w[c,j] * dy[b,t,c].
template <class T>
void conv_backward_input(T* dx,         // dx: (B, L, C)
                         const T* dy,   // dy: (B, L, C)
                         const T* wT,   // wT: (K, C)
                         int64_t B, int64_t L, int64_t C, int64_t K) {
  const int64_t cb = channel_block(B, C);
  const int64_t nblk = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (B * L * C * K > (1 << 14))
  for (int64_t task = 0; task < B * nblk; ++task) {
    const int64_t b = task / nblk, c0 = task % nblk * cb, c1 = std::min(C, c0 + cb);
    for (int64_t s = 0; s < L; ++s) {
      T* dxr = dx + (b * L + s) * C;
      // t = s + K - 1 - j < L  <=>  j > s + K - 1 - L
      for (int64_t j = std::max<int64_t>(0, s + K - L); j < K; ++j) {
        const T* dyr = dy + (b * L + s + K - 1 - j) * C;
        const T* wr = wT + j * C;
        for (int64_t c = c0; c < c1; ++c) dxr[c] += wr[c] * dyr[c];
      }
    }
  }
}

// One channel block of the parameter gradients, one tap at a time:
//   out[c] = sum_{b,t} dy[b,t,c0+c] * x[b,t-K+1+j,c0+c]   (x = nullptr: the bias, sum of dy)
// N > 0 is the block width as a compile-time constant, so the N accumulators
// stay in registers; N = 0 is the narrower last block (width n at run time).
// Terms are summed in T over runs of kRun time steps, and the runs in double:
// the T accumulators vectorise at full width, the double keeps a sum over
// B * L terms accurate. (One tap at a time with register accumulators halved
// the time of a loop over all taps with K * 16 double accumulators in memory:
// 21 -> 11 ms for dw and db at B = 16, L = 512, C = 512, K = 4, one thread.)
template <class T, int64_t N>
void conv_param_block(double* out,  // out: (n)
                      const T* dy,  // dy: (B, L, C), offset to the block's first channel
                      const T* x,   // x: (B, L, C), same offset, or nullptr
                      int64_t B, int64_t L, int64_t C, int64_t K, int64_t j, int64_t n) {
  constexpr int64_t kRun = 64;
  constexpr int64_t kMax = N > 0 ? N : 16;
  const int64_t width = N > 0 ? N : n;
  const int64_t shift = K - 1 - j;  // dy[t] meets x[t - shift]; earlier t read the zero padding
  const int64_t t_begin = x ? shift : 0;
  double acc[kMax] = {};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t0 = t_begin; t0 < L; t0 += kRun) {
      const int64_t t1 = std::min(L, t0 + kRun);
      T run[kMax] = {};
      for (int64_t t = t0; t < t1; ++t) {
        const T* dyr = dy + (b * L + t) * C;
        if (x) {
          const T* xr = x + (b * L + t - shift) * C;
          for (int64_t c = 0; c < width; ++c) run[c] += dyr[c] * xr[c];
        } else {
          for (int64_t c = 0; c < width; ++c) run[c] += dyr[c];
        }
      }
      for (int64_t c = 0; c < width; ++c) acc[c] += static_cast<double>(run[c]);
    }
  for (int64_t c = 0; c < width; ++c) out[c] = acc[c];
}

// dw[c,j] += sum_{b,t} dy[b,t,c] * x[b,t-K+1+j,c] and db[c] += sum_{b,t} dy[b,t,c].
// Parallel over blocks of 16 channels (one cache line of float32 per row of dy
// and x), so each thread owns whole channels: no atomics, and the order of
// every sum is fixed by the loop nest.
template <class T>
void conv_backward_params(T* dw,        // dw: (C, K) or nullptr
                          T* db,        // db: (C) or nullptr
                          const T* dy,  // dy: (B, L, C)
                          const T* x,   // x: (B, L, C), needed with dw
                          int64_t B, int64_t L, int64_t C, int64_t K) {
  constexpr int64_t cb = 16;
  const int64_t nblk = (C + cb - 1) / cb;
#pragma omp parallel for schedule(static) if (B * L * C * K > (1 << 14))
  for (int64_t blk = 0; blk < nblk; ++blk) {
    const int64_t c0 = blk * cb, n = std::min(C, c0 + cb) - c0;
    double sum[cb];
    // Taps j < K, then j = K for the bias (x = nullptr).
    for (int64_t j = 0; j <= K; ++j) {
      const T* xs = j < K ? x : nullptr;
      if ((j < K && !dw) || (j == K && !db)) continue;
      if (n == cb)
        conv_param_block<T, cb>(sum, dy + c0, xs ? xs + c0 : nullptr, B, L, C, K, j, n);
      else
        conv_param_block<T, 0>(sum, dy + c0, xs ? xs + c0 : nullptr, B, L, C, K, j, n);
      for (int64_t c = 0; c < n; ++c) {
        if (j < K)
          dw[(c0 + c) * K + j] += static_cast<T>(sum[c]);
        else
          db[c0 + c] += static_cast<T>(sum[c]);
      }
    }
  }
}

}  // namespace

Tensor causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_same_dtype("causal_conv1d", {&x, &w, &bias});
  if (!x.defined() || x.ndim() != 3)
    throw ShapeError("causal_conv1d: x has shape " + (x.defined() ? shape_str(x.shape()) : std::string("undefined")) +
                     ", expected (B, L, C)");
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  if (!w.defined() || w.ndim() != 2 || w.size(0) != C || w.size(1) < 1)
    throw ShapeError("causal_conv1d: w has shape " + (w.defined() ? shape_str(w.shape()) : std::string("undefined")) +
                     ", expected (C, K) = (" + std::to_string(C) + ", K) with K >= 1 for x " + shape_str(x.shape()));
  const int64_t K = w.size(1);
  if (bias.defined()) check_shape("causal_conv1d", "bias", bias, {C});
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "causal_conv1d", [&](auto tag) {
    using T = decltype(tag);
    const std::vector<T> wT = taps_by_row(w.data<T>(), C, K);
    conv_forward<T>(y.data<T>(), x.data<T>(), wT.data(), bias.defined() ? bias.data<T>() : nullptr, B, L, C, K);
  });
  if (!any_requires_grad({&x, &w, &bias})) return y;
  // x is needed for dw, w for dx; each is captured only if the other's gradient
  // is wanted, so an unneeded activation is not kept alive.
  const bool need_dx = x.requires_grad(), need_dw = w.requires_grad();
  const bool need_db = bias.defined() && bias.requires_grad();
  record({&y}, [x_saved = need_dw ? x : Tensor(), w_saved = need_dx ? w : Tensor(),
                gx = need_dx ? x.grad_cell() : nullptr, gw = need_dw ? w.grad_cell() : nullptr,
                gb = need_db ? bias.grad_cell() : nullptr, B, L, C, K](const std::vector<Tensor>& g) {
    dispatch_float(g[0].dtype(), "causal_conv1d backward", [&](auto tag) {
      using T = decltype(tag);
      const T* dy = g[0].data<T>();
      if (gx) {
        const std::vector<T> wT = taps_by_row(w_saved.data<T>(), C, K);
        conv_backward_input<T>(gx->buffer().template data<T>(), dy, wT.data(), B, L, C, K);
      }
      if (gw || gb)
        conv_backward_params<T>(gw ? gw->buffer().template data<T>() : nullptr,
                                gb ? gb->buffer().template data<T>() : nullptr, dy,
                                gw ? x_saved.data<T>() : nullptr, B, L, C, K);
    });
  });
  return y;
}

}  // namespace seqmix
