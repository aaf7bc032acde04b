// Shape ops: reshape, split, gather_rows.
//
// All of them move data without arithmetic, so the backward of each is the
// adjoint index map: the output gradient is copied (added) back to where the
// value came from. Backward accumulates (+=) into gradient buffers (the tape
// zeroes them once per step) and skips inputs that need no gradient.
//
// The backward closures capture the input's GradCell, not the input itself:
// none of these backwards reads input values, so the forward activation can be
// freed as soon as the caller drops it.
//
// split views a tensor as (outer, A, inner) around the chosen axis (A = size(axis))
// and moves contiguous bands of A-rows: one band copy kernel (copy_band) serves its
// forward and its backward.
#include <algorithm>
#include <cstring>
#include <string>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

// Below this many elements a parallel region costs more than the copy.
constexpr int64_t kParallelMin = 1 << 15;

int64_t normalize_axis(const char* op, int64_t axis, const Shape& shape) {
  const int64_t n = static_cast<int64_t>(shape.size());
  const int64_t a = axis < 0 ? axis + n : axis;
  if (a < 0 || a >= n)
    throw ShapeError(std::string(op) + ": axis " + std::to_string(axis) + " is out of range for shape " +
                     shape_str(shape) + " (expected -" + std::to_string(n) + " <= axis < " + std::to_string(n) + ")");
  return a;
}

int64_t prod(const Shape& s, int64_t begin, int64_t end) {
  int64_t p = 1;
  for (int64_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

// Copies (Acc = false) or adds (Acc = true) the rows [src_off, src_off + len) of
// src, viewed as (outer, src_A, inner), into the rows [dst_off, dst_off + len) of
// dst, viewed as (outer, dst_A, inner). For each outer index the band is one
// contiguous run of len * inner elements on both sides; runs are cut into fixed
// pieces so that outer = 1 (a split along axis 0) still uses every thread. Each
// destination element is written by exactly one task: no races, no atomics.
template <class T, bool Acc>
void copy_band(T* dst,        // dst: (outer, dst_A, inner)
               const T* src,  // src: (outer, src_A, inner)
               int64_t outer, int64_t inner, int64_t dst_A, int64_t dst_off, int64_t src_A, int64_t src_off,
               int64_t len) {
  const int64_t run = len * inner;
  if (run == 0 || outer == 0) return;
  constexpr int64_t kPiece = 1 << 14;
  const int64_t pieces = (run + kPiece - 1) / kPiece;
  const int64_t tasks = outer * pieces;
#pragma omp parallel for schedule(static) if (outer * run > kParallelMin)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t o = task / pieces;
    const int64_t begin = (task % pieces) * kPiece;
    const int64_t end = std::min(run, begin + kPiece);
    T* d = dst + (o * dst_A + dst_off) * inner;
    const T* s = src + (o * src_A + src_off) * inner;
    if constexpr (Acc) {
      for (int64_t i = begin; i < end; ++i) d[i] += s[i];
    } else {
      std::memcpy(d + begin, s + begin, static_cast<size_t>(end - begin) * sizeof(T));
    }
  }
}

}  // namespace

// ---- reshape ----

Tensor reshape(const Tensor& x, const Shape& shape) {
  if (!x.defined()) throw ShapeError("reshape: input is undefined");
  Shape resolved = shape;
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0)
        throw ShapeError("reshape: shape " + shape_str(shape) + " has more than one -1 (input " +
                         shape_str(x.shape()) + ")");
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      throw ShapeError("reshape: shape " + shape_str(shape) + " has a negative dimension other than -1");
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      throw ShapeError("reshape: cannot view " + shape_str(x.shape()) + " (" + std::to_string(x.numel()) +
                       " elements) as " + shape_str(shape) + ": the -1 dimension cannot be inferred");
    resolved[infer] = x.numel() / known;
  } else if (known != x.numel()) {
    throw ShapeError("reshape: cannot view " + shape_str(x.shape()) + " (" + std::to_string(x.numel()) +
                     " elements) as " + shape_str(shape) + " (" + std::to_string(known) + " elements)");
  }
  Tensor y = view_as_shape(x, resolved);
  if (!any_requires_grad({&x})) return y;
  // d x = d y read in x's shape: the same flat elements, so a flat add.
  record({&y}, [gx = x.grad_cell()](const std::vector<Tensor>& g) {
    dispatch_float(gx->dtype, "reshape backward", [&](auto tag) {
      using T = decltype(tag);
      const int64_t n = g[0].numel();
      copy_band<T, true>(gx->buffer().template data<T>(), g[0].data<T>(), 1, 1, n, 0, n, 0, n);
    });
  });
  return y;
}

// ---- split ----

std::vector<Tensor> split(const Tensor& x, int64_t axis, const std::vector<int64_t>& sizes) {
  if (!x.defined()) throw ShapeError("split: input is undefined");
  const int64_t ax = normalize_axis("split", axis, x.shape());
  const int64_t A = x.shape()[ax];
  if (sizes.empty()) throw ShapeError("split: no sizes given for input " + shape_str(x.shape()));
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0) throw ShapeError("split: negative size in " + shape_str(sizes));
    total += s;
  }
  if (total != A)
    throw ShapeError("split: sizes " + shape_str(sizes) + " add up to " + std::to_string(total) + ", but axis " +
                     std::to_string(axis) + " of " + shape_str(x.shape()) + " has size " + std::to_string(A));
  const int64_t outer = prod(x.shape(), 0, ax), inner = prod(x.shape(), ax + 1, x.ndim());
  std::vector<int64_t> offsets(sizes.size());
  for (size_t k = 0, off = 0; k < sizes.size(); off += sizes[k], ++k) offsets[k] = static_cast<int64_t>(off);

  std::vector<Tensor> outs;
  outs.reserve(sizes.size());
  dispatch_float(x.dtype(), "split", [&](auto tag) {
    using T = decltype(tag);
    for (size_t k = 0; k < sizes.size(); ++k) {
      Shape s = x.shape();
      s[ax] = sizes[k];
      Tensor o = Tensor::empty(s, x.dtype());
      copy_band<T, false>(o.data<T>(), x.data<T>(), outer, inner, sizes[k], 0, A, offsets[k], sizes[k]);
      outs.push_back(std::move(o));
    }
  });
  if (!any_requires_grad({&x})) return outs;

  // One node for all outputs (record() takes a fixed list, so the node is built
  // here). Output k came from rows [off_k, off_k + size_k) of the split axis, so
  // its gradient is added back into those rows; an output that nothing flowed
  // into (undefined gradient) contributes nothing.
  TapeNode node;
  for (Tensor& o : outs) {
    o.set_requires_grad(true);
    node.outputs.push_back(o.grad_cell());
  }
  node.backward = [gx = x.grad_cell(), sizes, offsets, outer, inner, A](const std::vector<Tensor>& g) {
    dispatch_float(gx->dtype, "split backward", [&](auto tag) {
      using T = decltype(tag);
      T* dx = gx->buffer().template data<T>();
      for (size_t k = 0; k < sizes.size(); ++k)
        if (g[k].defined())
          copy_band<T, true>(dx, g[k].data<T>(), outer, inner, A, offsets[k], sizes[k], 0, sizes[k]);
    });
  };
  tape().push(std::move(node));
  return outs;
}

// ---- gather_rows ----

// gather_rows(x, index) is embedding(index, x) restricted to a 1-D index: the
// same forward copy and the same deterministic bucketed scatter-add backward
// (core/ops_embedding.cpp), so the kernel lives in one place. The checks are
// repeated here so that errors name gather_rows and its arguments.
Tensor gather_rows(const Tensor& x, const Tensor& index) {
  if (!x.defined() || x.ndim() != 2)
    throw ShapeError("gather_rows: x has shape " + (x.defined() ? shape_str(x.shape()) : std::string("undefined")) +
                     ", expected (N, D)");
  if (!index.defined() || index.dtype() != DType::i32 || index.ndim() != 1)
    throw ShapeError("gather_rows: index must be a 1-D int32 tensor, got " +
                     (index.defined() ? std::string(dtype_name(index.dtype())) + " " + shape_str(index.shape())
                                      : std::string("undefined")));
  const int64_t N = x.size(0);
  const int32_t* idx = index.i32();
  for (int64_t m = 0; m < index.numel(); ++m)
    if (idx[m] < 0 || idx[m] >= N)
      throw ShapeError("gather_rows: index " + std::to_string(idx[m]) + " at position " + std::to_string(m) +
                       " is out of range for x of shape " + shape_str(x.shape()) + " (expected 0 <= index < " +
                       std::to_string(N) + ")");
  return embedding(index, x);
}

}  // namespace seqmix
