// Elementwise binary ops (add, sub) with trailing-shape broadcasting, and
// scale. Each op's forward and hand-written backward sit side by side.
//
// Broadcasting: the smaller operand's shape equals a trailing suffix of the other's
// (b (D) against a (B, L, D)), or the shapes are equal. The output is then `rows`
// repeats of an n-element block, n = the smaller operand's numel, and the smaller
// operand is read with row stride 0. Either operand may be the smaller one.
//
// Backward accumulates (+=) into gradient buffers, or stores (=) on a gradient's
// first contribution (GradCell::buffer_for_write), and skips inputs that need no
// gradient; a closure keeps an operand's values only if some needed gradient reads them (add and sub keep none). The gradient of a
// broadcast operand sums over the rows: each thread owns a contiguous range of
// columns and walks every row in order, so there are no atomics and each column's
// sum has the same order for any thread count.
#include <omp.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

// Below this many elements the OpenMP fork costs more than the loop saves.
constexpr int64_t kParallelMin = 1 << 14;

struct Broadcast {
  Shape out_shape;
  int64_t rows = 0;      // repeats of the n-element block
  int64_t n = 0;         // elements per block
  int64_t a_stride = 0;  // row stride of a: n, or 0 when a is the broadcast operand
  int64_t b_stride = 0;
};

bool is_trailing_suffix(const Shape& small, const Shape& big) {
  return small.size() <= big.size() && std::equal(small.begin(), small.end(), big.end() - small.size());
}

Broadcast broadcast_dims(const char* op, const Tensor& a, const Tensor& b) {
  if (!a.defined() || !b.defined()) throw ShapeError(std::string(op) + ": an operand is undefined");
  check_same_dtype(op, {&a, &b});
  Broadcast d;
  if (is_trailing_suffix(b.shape(), a.shape())) {  // includes equal shapes (then rows == 1)
    d.out_shape = a.shape();
    d.n = b.numel();
    d.a_stride = d.n;
    d.b_stride = 0;
  } else if (is_trailing_suffix(a.shape(), b.shape())) {
    d.out_shape = b.shape();
    d.n = a.numel();
    d.a_stride = 0;
    d.b_stride = d.n;
  } else {
    throw ShapeError(std::string(op) + ": cannot broadcast a " + shape_str(a.shape()) + " with b " +
                     shape_str(b.shape()) + ": expected equal shapes, or one shape equal to a trailing suffix " +
                     "of the other (e.g. (D) against (B, L, D))");
  }
  const int64_t total = shape_numel(d.out_shape);
  d.rows = d.n == 0 ? 0 : total / d.n;
  return d;
}

// out[r, j] = f(a[r*as + j], b[r*bs + j]).
template <class T, class F>
void binary_forward(T* __restrict out,  // out: (rows, n)
                    const T* a,         // a: (rows, n), or (n) with as = 0
                    const T* b,         // b: (rows, n), or (n) with bs = 0
                    int64_t rows, int64_t n, int64_t as, int64_t bs, F f) {
  if (rows == 1) {  // equal shapes: one flat loop, split across threads
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t j = 0; j < n; ++j) out[j] = f(a[j], b[j]);
    return;
  }
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a + r * as;
    const T* br = b + r * bs;
    T* o = out + r * n;
    for (int64_t j = 0; j < n; ++j) o[j] = f(ar[j], br[j]);
  }
}

// dx = or += term(g, a, b) elementwise, dx of the output's shape (xs != 0).
template <bool Overwrite, class T, class F>
void binary_backward_full(T* dx, const T* g, const T* a, const T* b, int64_t rows, int64_t n, int64_t as, int64_t bs,
                          F term) {
  if (rows == 1) {  // equal shapes: one flat loop, split across threads
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t j = 0; j < n; ++j) dx[j] = (Overwrite ? T(0) : dx[j]) + term(g[j], a[j], b[j]);
    return;
  }
#pragma omp parallel for schedule(static) if (rows * n >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = g + r * n;
    const T* ar = a + r * as;
    const T* br = b + r * bs;
    T* d = dx + r * n;
    for (int64_t j = 0; j < n; ++j) d[j] = (Overwrite ? T(0) : d[j]) + term(gr[j], ar[j], br[j]);
  }
}

// Gradient of one operand: dx += term(g, a, b) elementwise, summed over the rows
// when that operand is the broadcast one (xs == 0). term already includes g. With
// overwrite (the gradient's first contribution) it stores instead of adding.
template <class T, class F>
void binary_backward(T* dx,       // dx: (rows, n), or (n) with xs = 0
                     const T* g,  // g: (rows, n)
                     const T* a,  // a: (rows, n), or (n) with as = 0
                     const T* b,  // b: (rows, n), or (n) with bs = 0
                     int64_t rows, int64_t n, int64_t as, int64_t bs, int64_t xs, bool overwrite, F term) {
  if (rows == 1 || xs != 0) {
    if (overwrite) binary_backward_full<true>(dx, g, a, b, rows, n, as, bs, term);
    else binary_backward_full<false>(dx, g, a, b, rows, n, as, bs, term);
    return;
  }
  // Broadcast operand: thread t owns columns [j0, j1) and sums every row into a
  // double accumulator, in row order. The inner loop runs over contiguous memory.
#pragma omp parallel if (rows * n >= kParallelMin)
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t j0 = n * t / nt, j1 = n * (t + 1) / nt;
    std::vector<double> acc(static_cast<size_t>(j1 - j0), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* gr = g + r * n;
      const T* ar = a + r * as;
      const T* br = b + r * bs;
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += term(gr[j], ar[j], br[j]);
    }
    for (int64_t j = j0; j < j1; ++j) dx[j] = (overwrite ? T(0) : dx[j]) + static_cast<T>(acc[j - j0]);
  }
}

// Each op: the forward f(a, b), the gradient terms g * d(out)/da and g * d(out)/db,
// and which operand values those terms read (so the closure keeps only those).
struct AddOp {
  static constexpr const char* name = "add";
  static constexpr bool da_reads_a = false, da_reads_b = false, db_reads_a = false, db_reads_b = false;
  template <class T> static T f(T a, T b) { return a + b; }
  template <class T> static T da(T g, T, T) { return g; }
  template <class T> static T db(T g, T, T) { return g; }
};

struct SubOp {
  static constexpr const char* name = "sub";
  static constexpr bool da_reads_a = false, da_reads_b = false, db_reads_a = false, db_reads_b = false;
  template <class T> static T f(T a, T b) { return a - b; }
  template <class T> static T da(T g, T, T) { return g; }
  template <class T> static T db(T g, T, T) { return -g; }
};

template <class Op>
Tensor binary_op(const Tensor& a, const Tensor& b) {
  const Broadcast d = broadcast_dims(Op::name, a, b);
  Tensor out = Tensor::empty(d.out_shape, a.dtype());
  dispatch_float(a.dtype(), Op::name, [&](auto tag) {
    using T = decltype(tag);
    binary_forward<T>(out.data<T>(), a.data<T>(), b.data<T>(), d.rows, d.n, d.a_stride, d.b_stride,
                      [](T x, T y) { return Op::f(x, y); });
  });
  if (!any_requires_grad({&a, &b})) return out;

  const bool ga = a.requires_grad(), gb = b.requires_grad();
  const bool keep_a = (ga && Op::da_reads_a) || (gb && Op::db_reads_a);
  const bool keep_b = (ga && Op::da_reads_b) || (gb && Op::db_reads_b);
  record({&out}, [d, a_cell = ga ? a.grad_cell() : nullptr, b_cell = gb ? b.grad_cell() : nullptr,
                  a_val = keep_a ? a.detach() : Tensor(), b_val = keep_b ? b.detach() : Tensor()](
                     const std::vector<Tensor>& grads) {
    dispatch_float(grads[0].dtype(), Op::name, [&](auto tag) {
      using T = decltype(tag);
      const T* G = grads[0].data<T>();
      // An operand the terms do not read is not kept; G with stride n stands in for
      // it so that every pointer the kernel forms is valid.
      const T* A = a_val.defined() ? a_val.data<T>() : G;
      const T* B = b_val.defined() ? b_val.data<T>() : G;
      const int64_t as = a_val.defined() ? d.a_stride : d.n;
      const int64_t bs = b_val.defined() ? d.b_stride : d.n;
      bool fresh = false;
      if (a_cell) {
        T* dA = a_cell->buffer_for_write(fresh).template data<T>();
        binary_backward<T>(dA, G, A, B, d.rows, d.n, as, bs, d.a_stride, fresh,
                           [](T g, T x, T y) { return Op::da(g, x, y); });
      }
      if (b_cell) {
        T* dB = b_cell->buffer_for_write(fresh).template data<T>();
        binary_backward<T>(dB, G, A, B, d.rows, d.n, as, bs, d.b_stride, fresh,
                           [](T g, T x, T y) { return Op::db(g, x, y); });
      }
    });
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op<AddOp>(a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op<SubOp>(a, b); }

// y = s x, so dx += s dy.
Tensor scale(const Tensor& x, double s) {
  if (!x.defined()) throw ShapeError("scale: x is undefined");
  Tensor y = Tensor::empty_like(x);
  const int64_t n = x.numel();
  dispatch_float(x.dtype(), "scale", [&](auto tag) {
    using T = decltype(tag);
    const T* X = x.data<T>();
    T* Y = y.data<T>();
    const T sv = static_cast<T>(s);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) Y[i] = sv * X[i];
  });
  if (!any_requires_grad({&x})) return y;
  record({&y}, [cell = x.grad_cell(), s, n](const std::vector<Tensor>& grads) {
    dispatch_float(grads[0].dtype(), "scale", [&](auto tag) {
      using T = decltype(tag);
      const T* G = grads[0].data<T>();
      T* dX = cell->buffer().template data<T>();
      const T sv = static_cast<T>(s);
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) dX[i] += sv * G[i];
    });
  });
  return y;
}

}  // namespace seqmix
