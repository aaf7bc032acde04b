// matmul and linear: forward and backward through core/gemm.h (oneDNN for
// float32). Backward accumulates (+=) into gradient buffers and skips the
// gradient of an input that needs none: each skipped input is a skipped GEMM.
#include <algorithm>

#include "core/gemm.h"
#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

struct MatmulDims {
  int64_t batch, M, N, K;
  bool shared_b;
};

MatmulDims matmul_dims(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  check_same_dtype("matmul", {&a, &b});
  check_ndim_at_least("matmul", "a", a, 2);
  check_ndim_at_least("matmul", "b", b, 2);
  MatmulDims d;
  d.M = ta ? a.size(-1) : a.size(-2);
  d.K = ta ? a.size(-2) : a.size(-1);
  int64_t kb = tb ? b.size(-1) : b.size(-2);
  d.N = tb ? b.size(-2) : b.size(-1);
  if (kb != d.K)
    throw ShapeError("matmul: inner dimensions differ: a " + shape_str(a.shape()) + (ta ? "^T" : "") + ", b " +
                     shape_str(b.shape()) + (tb ? "^T" : ""));
  d.batch = a.numel() / (d.M * d.K == 0 ? 1 : d.M * d.K);
  if (d.M * d.K == 0) d.batch = shape_numel(Shape(a.shape().begin(), a.shape().end() - 2));
  d.shared_b = b.ndim() == 2;
  if (!d.shared_b && Shape(a.shape().begin(), a.shape().end() - 2) != Shape(b.shape().begin(), b.shape().end() - 2))
    throw ShapeError("matmul: batch dimensions differ: a " + shape_str(a.shape()) + ", b " + shape_str(b.shape()));
  return d;
}

template <class T>
void run_gemm(const GemmShape& s, const T* A, const T* B, T* C, bool acc) {
  gemm(s, A, B, C, acc);
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const MatmulDims d = matmul_dims(a, b, ta, tb);
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  out_shape.push_back(d.M);
  out_shape.push_back(d.N);
  Tensor c = Tensor::empty(out_shape, a.dtype());
  // With one B shared by every batch and A not transposed, the batch folds into M:
  // one large GEMM instead of many small ones.
  const bool fold = d.shared_b && !ta;
  dispatch_float(a.dtype(), "matmul", [&](auto tag) {
    using T = decltype(tag);
    GemmShape s{fold ? 1 : d.batch, fold ? d.batch * d.M : d.M, d.N, d.K, ta, tb};
    if (d.shared_b) s.batch_stride_b = 0;
    run_gemm<T>(s, a.data<T>(), b.data<T>(), c.data<T>(), false);
  });
  if (!any_requires_grad({&a, &b})) return c;
  record({&c}, [a, b, ta, tb, d, fold](const std::vector<Tensor>& g) {
    const Tensor& dc = g[0];
    dispatch_float(a.dtype(), "matmul backward", [&](auto tag) {
      using T = decltype(tag);
      const T* A = a.data<T>();
      const T* B = b.data<T>();
      const T* dC = dc.data<T>();
      const int64_t batch = fold ? 1 : d.batch;
      const int64_t M = fold ? d.batch * d.M : d.M;
      if (a.requires_grad()) {
        bool fresh = false;
        T* dA = a.grad_cell()->buffer_for_write(fresh).template data<T>();
        GemmShape s;
        if (!ta) {  // dA (M,K) = dC (M,N) op(B)^T
          s = GemmShape{batch, M, d.K, d.N, false, !tb};
          s.batch_stride_a = M * d.N;
          s.batch_stride_b = d.shared_b ? 0 : d.K * d.N;
          s.batch_stride_c = M * d.K;
          run_gemm<T>(s, dC, B, dA, !fresh);
        } else {  // dA stored (K,M) = op(B) dC^T
          s = GemmShape{batch, d.K, M, d.N, tb, true};
          s.batch_stride_a = d.shared_b ? 0 : d.K * d.N;
          s.batch_stride_b = M * d.N;
          s.batch_stride_c = M * d.K;
          run_gemm<T>(s, B, dC, dA, !fresh);
        }
      }
      if (b.requires_grad()) {
        bool fresh = false;
        T* dB = b.grad_cell()->buffer_for_write(fresh).template data<T>();
        // A shared B sums its gradient over the batch: one GEMM per batch entry,
        // each accumulating, unless the batch was folded into M.
        const int64_t loops = (d.shared_b && !fold) ? batch : 1;
        const int64_t inner_batch = (d.shared_b && !fold) ? 1 : batch;
        for (int64_t l = 0; l < loops; ++l) {
          const T* Al = A + l * M * d.K;
          const T* dCl = dC + l * M * d.N;
          GemmShape s;
          if (!tb) {  // dB (K,N) = op(A)^T dC
            s = GemmShape{inner_batch, d.K, d.N, M, !ta, false};
            run_gemm<T>(s, Al, dCl, dB, !fresh || l > 0);
          } else {  // dB stored (N,K) = dC^T op(A)
            s = GemmShape{inner_batch, d.N, d.K, M, true, ta};
            run_gemm<T>(s, dCl, Al, dB, !fresh || l > 0);
          }
        }
      }
    });
  });
  return c;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias) {
  check_same_dtype("linear", {&x, &w, &bias});
  check_ndim_at_least("linear", "x", x, 1);
  if (w.ndim() != 2 || w.size(1) != x.size(-1))
    throw ShapeError("linear: weight " + shape_str(w.shape()) + " does not fit input " + shape_str(x.shape()) +
                     " (expected (out, " + std::to_string(x.size(-1)) + "))");
  const int64_t out_f = w.size(0), in_f = w.size(1);
  if (bias.defined()) check_shape("linear", "bias", bias, {out_f});
  const int64_t rows = x.numel() / (in_f == 0 ? 1 : in_f);
  Shape out_shape = x.shape();
  out_shape.back() = out_f;
  Tensor y = Tensor::empty(out_shape, x.dtype());
  dispatch_float(x.dtype(), "linear", [&](auto tag) {
    using T = decltype(tag);
    T* Y = y.data<T>();
    gemm(GemmShape{1, rows, out_f, in_f, false, true}, x.data<T>(), w.data<T>(), Y, false);
    if (bias.defined()) {
      const T* bv = bias.data<T>();
#pragma omp parallel for schedule(static) if (rows * out_f > 32768)
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t o = 0; o < out_f; ++o) Y[r * out_f + o] += bv[o];
    }
  });
  if (!any_requires_grad({&x, &w, &bias})) return y;
  record({&y}, [x, w, bias, rows, in_f, out_f](const std::vector<Tensor>& g) {
    dispatch_float(x.dtype(), "linear backward", [&](auto tag) {
      using T = decltype(tag);
      const T* dY = g[0].data<T>();
      // A gradient's first contribution is stored, later ones added (GradCell::buffer_for_write).
      bool fresh = false;
      if (x.requires_grad()) {  // dx (rows,in) += dy (rows,out) W (out,in)
        T* dX = x.grad_cell()->buffer_for_write(fresh).template data<T>();
        gemm(GemmShape{1, rows, in_f, out_f, false, false}, dY, w.data<T>(), dX, !fresh);
      }
      if (w.requires_grad()) {  // dW (out,in) += dy^T (out,rows) x (rows,in)
        T* dW = w.grad_cell()->buffer_for_write(fresh).template data<T>();
        gemm(GemmShape{1, out_f, in_f, rows, true, false}, dY, x.data<T>(), dW, !fresh);
      }
      if (bias.defined() && bias.requires_grad()) {
        // db sums dy over rows. Each thread owns a block of 64 columns and walks
        // the rows in order (contiguous, vectorised): no atomics and a fixed
        // summation order, so results are bit-identical across runs.
        T* dB = bias.grad_cell()->buffer_for_write(fresh).template data<T>();
        const bool add_to = !fresh;
        const int64_t blocks = (out_f + 63) / 64;
#pragma omp parallel for schedule(static) if (rows * out_f > 32768)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t o0 = blk * 64, o1 = std::min(out_f, o0 + 64);
          T acc[64] = {};
          for (int64_t r = 0; r < rows; ++r) {
            const T* row = dY + r * out_f;
#pragma omp simd
            for (int64_t o = o0; o < o1; ++o) acc[o - o0] += row[o];
          }
          for (int64_t o = o0; o < o1; ++o) dB[o] = add_to ? dB[o] + acc[o - o0] : acc[o - o0];
        }
      }
    });
  });
  return y;
}

}  // namespace seqmix
