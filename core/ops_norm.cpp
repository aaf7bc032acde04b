// Row-wise normalisations over the last axis: softmax, layernorm, rmsnorm. Each
// op's forward kernel sits beside its backward kernel, with the derivation.
//
// Rows are independent: OpenMP over rows, inner loops over contiguous memory. Row
// statistics accumulate in double (also for float32) with a fixed order. layernorm
// and rmsnorm save their per-row statistics (mean and rstd; rstd) for the backward,
// as llm.c does, instead of recomputing them.
//
// Weight and bias gradients sum over rows. Without atomics: thread t takes a fixed
// contiguous block of rows and adds into its own double partial buffer; the buffers
// are then added in thread order, parallel over columns (RowBlockPartials). The
// result is bit-identical from run to run for a fixed thread count.
//
// Backward accumulates (+=) into gradient buffers (the tape zeroes them once per
// step) and skips inputs that need no gradient.
#include <omp.h>

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

// Below this many elements the OpenMP fork costs more than the loop saves.
constexpr int64_t kParallelMin = 1 << 14;

// sum_{j<n} term(j) in double, with 8 independent accumulators in a fixed order:
// deterministic, and 8 chains hide the latency of the dependent adds.
template <class F>
double sum8(int64_t n, F term) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(term(j + k));
  for (; j < n; ++j) acc[j % 8] += static_cast<double>(term(j));
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Per-thread partial column sums of `slots` (D)-vectors, combined in thread order.
// Use: inside `#pragma omp parallel num_threads(threads())`, thread t handles
// rows(t, nth) and adds into slot(t, s); afterwards add_into(s, out) does
// out[j] += sum_t slot(t, s)[j].
class RowBlockPartials {
 public:
  RowBlockPartials(int64_t slots, int64_t D)
      : nt_(omp_get_max_threads()), slots_(slots), D_(D), buf_(static_cast<size_t>(nt_ * slots * D), 0.0) {}
  int threads() const { return nt_; }
  double* slot(int t, int64_t s) { return buf_.data() + (t * slots_ + s) * D_; }
  // The rows [r0, r1) of thread t in a team of nth: fixed, contiguous blocks.
  static std::pair<int64_t, int64_t> rows(int64_t N, int t, int nth) { return {N * t / nth, N * (t + 1) / nth}; }
  template <class T>
  void add_into(int64_t s, T* out) {  // out: (D)
    const double* base = buf_.data() + s * D_;
    const int64_t stride = slots_ * D_;
#pragma omp parallel for schedule(static) if (nt_ * D_ >= kParallelMin)
    for (int64_t j = 0; j < D_; ++j) {
      double acc = 0;
      for (int t = 0; t < nt_; ++t) acc += base[t * stride + j];
      out[j] += static_cast<T>(acc);
    }
  }

 private:
  int nt_;
  int64_t slots_, D_;
  std::vector<double> buf_;
};

int64_t rows_of(const Tensor& x) { return x.size(-1) == 0 ? 0 : x.numel() / x.size(-1); }

// ---------------------------------------------------------------------------
// softmax over the last axis.
//
// The row maximum is subtracted before exp, so exp never overflows (inputs of 1e4
// are fine). It is taken in a separate pass rather than as a running maximum with
// rescaling: the online form saves one read of a row that is in cache anyway, and
// costs an extra exp per element.

template <class T>
void softmax_forward(T* y,        // y: (N, D)
                     const T* x,  // x: (N, D)
                     int64_t N, int64_t D) {
#pragma omp parallel for schedule(static) if (N * D >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < D; ++j) m = xr[j] > m ? xr[j] : m;
    for (int64_t j = 0; j < D; ++j) yr[j] = std::exp(xr[j] - m);
    const T inv = static_cast<T>(1.0 / sum8(D, [&](int64_t j) { return yr[j]; }));
    for (int64_t j = 0; j < D; ++j) yr[j] *= inv;
  }
}

// y_i = e^{x_i} / sum_k e^{x_k}, so dy_i/dx_j = y_i (delta_ij - y_j) and
//   dL/dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i).
template <class T>
void softmax_backward(T* dx,        // dx: (N, D)
                      const T* dy,  // dy: (N, D)
                      const T* y,   // y: (N, D), the forward output
                      int64_t N, int64_t D) {
#pragma omp parallel for schedule(static) if (N * D >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const T* yr = y + r * D;
    const T* gr = dy + r * D;
    T* d = dx + r * D;
    const T dot = static_cast<T>(sum8(D, [&](int64_t j) { return gr[j] * yr[j]; }));
    for (int64_t j = 0; j < D; ++j) d[j] += yr[j] * (gr[j] - dot);
  }
}

// ---------------------------------------------------------------------------
// layernorm: y = (x - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps), biased var.

template <class T>
void layernorm_forward(T* y,            // y: (N, D)
                       T* mean,         // mean: (N)
                       T* rstd,         // rstd: (N)
                       const T* x,      // x: (N, D)
                       const T* w,      // w: (D)
                       const T* b,      // b: (D), or null
                       int64_t N, int64_t D, double eps) {
#pragma omp parallel for schedule(static) if (N * D >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    const double m = sum8(D, [&](int64_t j) { return static_cast<double>(xr[j]); }) / static_cast<double>(D);
    // Variance from the deviations (a second pass), not E[x^2] - m^2: no
    // cancellation when |mean| >> std.
    const double v = sum8(D, [&](int64_t j) {
                       const double c = static_cast<double>(xr[j]) - m;
                       return c * c;
                     }) / static_cast<double>(D);
    const T mt = static_cast<T>(m), st = static_cast<T>(1.0 / std::sqrt(v + eps));
    if (b)
      for (int64_t j = 0; j < D; ++j) yr[j] = (xr[j] - mt) * st * w[j] + b[j];
    else
      for (int64_t j = 0; j < D; ++j) yr[j] = (xr[j] - mt) * st * w[j];
    mean[r] = mt;
    rstd[r] = st;
  }
}

// In the forward pass y = norm * w + b with norm = (x - mu) * rstd, where mu and
// rstd depend on every x_j of the row. With dnorm = dy * w:
//   dL/dx_i = rstd * (dnorm_i - mean_j(dnorm_j) - norm_i * mean_j(dnorm_j * norm_j))
// (the second term through mu, the third through rstd), and over the rows
//   dw += sum_r dy * norm,  db += sum_r dy.
template <class T>
void layernorm_backward(T* dx,          // dx: (N, D), or null
                        T* dw,          // dw: (D), or null
                        T* db,          // db: (D), or null
                        const T* dy,    // dy: (N, D)
                        const T* x,     // x: (N, D)
                        const T* w,     // w: (D)
                        const T* mean,  // mean: (N)
                        const T* rstd,  // rstd: (N)
                        int64_t N, int64_t D) {
  const bool params = dw || db;
  RowBlockPartials part(params ? 2 : 0, D);
#pragma omp parallel num_threads(part.threads()) if (N * D >= kParallelMin)
  {
    const int t = omp_get_thread_num();
    const auto [r0, r1] = RowBlockPartials::rows(N, t, omp_get_num_threads());
    double* pw = params ? part.slot(t, 0) : nullptr;
    double* pb = params ? part.slot(t, 1) : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * D;
      const T* gr = dy + r * D;
      const T m = mean[r], s = rstd[r];
      if (dx) {
        const double inv_d = 1.0 / static_cast<double>(D);
        const T dnorm_mean = static_cast<T>(sum8(D, [&](int64_t j) { return gr[j] * w[j]; }) * inv_d);
        const T dnorm_norm_mean =
            static_cast<T>(sum8(D, [&](int64_t j) { return (gr[j] * w[j]) * ((xr[j] - m) * s); }) * inv_d);
        T* d = dx + r * D;
        for (int64_t j = 0; j < D; ++j) {
          const T norm = (xr[j] - m) * s;
          d[j] += (gr[j] * w[j] - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
      }
      if (params)
        for (int64_t j = 0; j < D; ++j) {
          pw[j] += static_cast<double>(gr[j] * ((xr[j] - m) * s));
          pb[j] += static_cast<double>(gr[j]);
        }
    }
  }
  if (dw) part.add_into(0, dw);
  if (db) part.add_into(1, db);
}

// ---------------------------------------------------------------------------
// rmsnorm: y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).

template <class T>
void rmsnorm_forward(T* y,        // y: (N, D)
                     T* rstd,     // rstd: (N)
                     const T* x,  // x: (N, D)
                     const T* w,  // w: (D)
                     int64_t N, int64_t D, double eps) {
#pragma omp parallel for schedule(static) if (N * D >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    const double ms = sum8(D, [&](int64_t j) {
                        const double v = static_cast<double>(xr[j]);
                        return v * v;
                      }) / static_cast<double>(D);
    const T st = static_cast<T>(1.0 / std::sqrt(ms + eps));
    for (int64_t j = 0; j < D; ++j) yr[j] = xr[j] * st * w[j];
    rstd[r] = st;
  }
}

// In the forward pass y = xhat * w with xhat = x * r, r = (mean(x^2) + eps)^(-1/2),
// so dr/dx_i = -r^3 x_i / D. With dxhat = dy * w:
//   dL/dx_i = r dxhat_i - (r^3 x_i / D) sum_j dxhat_j x_j
//           = r * (dxhat_i - xhat_i * mean_j(dxhat_j * xhat_j)),
// and over the rows dw += sum_r dy * xhat.
template <class T>
void rmsnorm_backward(T* dx,          // dx: (N, D), or null
                      T* dw,          // dw: (D), or null
                      const T* dy,    // dy: (N, D)
                      const T* x,     // x: (N, D)
                      const T* w,     // w: (D)
                      const T* rstd,  // rstd: (N)
                      int64_t N, int64_t D) {
  RowBlockPartials part(dw ? 1 : 0, D);
#pragma omp parallel num_threads(part.threads()) if (N * D >= kParallelMin)
  {
    const int t = omp_get_thread_num();
    const auto [r0, r1] = RowBlockPartials::rows(N, t, omp_get_num_threads());
    double* pw = dw ? part.slot(t, 0) : nullptr;
    for (int64_t r = r0; r < r1; ++r) {
      const T* xr = x + r * D;
      const T* gr = dy + r * D;
      const T s = rstd[r];
      if (dx) {
        const T c = static_cast<T>(sum8(D, [&](int64_t j) { return (gr[j] * w[j]) * (xr[j] * s); }) /
                                   static_cast<double>(D));
        T* d = dx + r * D;
        for (int64_t j = 0; j < D; ++j) d[j] += (gr[j] * w[j] - (xr[j] * s) * c) * s;
      }
      if (dw)
        for (int64_t j = 0; j < D; ++j) pw[j] += static_cast<double>(gr[j] * (xr[j] * s));
    }
  }
  if (dw) part.add_into(0, dw);
}

// Entry checks shared by layernorm and rmsnorm: x (..., D) with D > 0, params (D).
int64_t check_norm_args(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_ndim_at_least(op, "x", x, 1);
  check_same_dtype(op, {&x, &weight, &bias});
  const int64_t D = x.size(-1);
  if (D == 0) throw ShapeError(std::string(op) + ": x " + shape_str(x.shape()) + " has an empty last axis");
  check_shape(op, "weight", weight, {D});
  if (bias.defined()) check_shape(op, "bias", bias, {D});
  return D;
}

std::shared_ptr<GradCell> cell_if_grad(const Tensor& t) {
  return t.defined() && t.requires_grad() ? t.grad_cell() : nullptr;
}

template <class T>
T* buffer_of(const std::shared_ptr<GradCell>& cell) {
  return cell ? cell->buffer().template data<T>() : nullptr;
}

}  // namespace

Tensor softmax(const Tensor& x) {
  check_ndim_at_least("softmax", "x", x, 1);
  const int64_t D = x.size(-1), N = rows_of(x);
  Tensor y = Tensor::empty_like(x);
  dispatch_float(x.dtype(), "softmax", [&](auto tag) {
    using T = decltype(tag);
    softmax_forward<T>(y.data<T>(), x.data<T>(), N, D);
  });
  if (!any_requires_grad({&x})) return y;
  record({&y}, [cell = x.grad_cell(), y_val = y.detach(), N, D](const std::vector<Tensor>& grads) {
    dispatch_float(y_val.dtype(), "softmax", [&](auto tag) {
      using T = decltype(tag);
      softmax_backward<T>(buffer_of<T>(cell), grads[0].data<T>(), y_val.data<T>(), N, D);
    });
  });
  return y;
}

Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  const int64_t D = check_norm_args("layernorm", x, weight, bias);
  const int64_t N = rows_of(x);
  Tensor y = Tensor::empty_like(x);
  Tensor mean = Tensor::empty({N}, x.dtype()), rstd = Tensor::empty({N}, x.dtype());
  dispatch_float(x.dtype(), "layernorm", [&](auto tag) {
    using T = decltype(tag);
    layernorm_forward<T>(y.data<T>(), mean.data<T>(), rstd.data<T>(), x.data<T>(), weight.data<T>(),
                         bias.defined() ? bias.data<T>() : nullptr, N, D, eps);
  });
  if (!any_requires_grad({&x, &weight, &bias})) return y;
  record({&y}, [dx_cell = cell_if_grad(x), dw_cell = cell_if_grad(weight), db_cell = cell_if_grad(bias),
                x_val = x.detach(), w_val = weight.detach(), mean, rstd, N, D](const std::vector<Tensor>& grads) {
    dispatch_float(x_val.dtype(), "layernorm", [&](auto tag) {
      using T = decltype(tag);
      layernorm_backward<T>(buffer_of<T>(dx_cell), buffer_of<T>(dw_cell), buffer_of<T>(db_cell),
                            grads[0].data<T>(), x_val.data<T>(), w_val.data<T>(), mean.data<T>(), rstd.data<T>(),
                            N, D);
    });
  });
  return y;
}

Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps) {
  const int64_t D = check_norm_args("rmsnorm", x, weight, Tensor());
  const int64_t N = rows_of(x);
  Tensor y = Tensor::empty_like(x);
  Tensor rstd = Tensor::empty({N}, x.dtype());
  dispatch_float(x.dtype(), "rmsnorm", [&](auto tag) {
    using T = decltype(tag);
    rmsnorm_forward<T>(y.data<T>(), rstd.data<T>(), x.data<T>(), weight.data<T>(), N, D, eps);
  });
  if (!any_requires_grad({&x, &weight})) return y;
  record({&y}, [dx_cell = cell_if_grad(x), dw_cell = cell_if_grad(weight), x_val = x.detach(),
                w_val = weight.detach(), rstd, N, D](const std::vector<Tensor>& grads) {
    dispatch_float(x_val.dtype(), "rmsnorm", [&](auto tag) {
      using T = decltype(tag);
      rmsnorm_backward<T>(buffer_of<T>(dx_cell), buffer_of<T>(dw_cell), grads[0].data<T>(), x_val.data<T>(),
                          w_val.data<T>(), rstd.data<T>(), N, D);
    });
  });
  return y;
}

}  // namespace seqmix
