// embedding: a row lookup, forward and backward.
//
// Forward copies row ids[n] of the weight to output row n. Backward is the
// scatter-add dW[ids[n]] += dy[n], which accumulates (+=) into the weight's
// gradient buffer (the tape zeroes it once per step). A repeated id (padding,
// frequent tokens) sends several rows of dy into one row of dW; instead of
// atomics the positions are bucketed by id with a stable counting sort, and each
// thread owns whole rows of dW and adds its positions in ascending order. The
// summation order of every dW row is therefore fixed by the ids alone: results
// are bit-identical for any thread count and any schedule.
#include <cstring>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

constexpr int64_t kParallelMin = 1 << 15;

// "(1, 4)" for flat index 6 of shape (2, 5): where a bad id sits, in the
// caller's coordinates.
std::string multi_index(int64_t flat, const Shape& shape) {
  Shape idx(shape.size());
  for (size_t i = shape.size(); i-- > 0;) {
    idx[i] = shape[i] ? flat % shape[i] : 0;
    flat = shape[i] ? flat / shape[i] : 0;
  }
  return shape_str(idx);
}

// out[n, :] = weight[ids[n], :]
template <class T>
void embedding_forward(T* out,           // out: (N, D)
                       const int32_t* ids,  // ids: (N)
                       const T* weight,  // weight: (V, D)
                       int64_t N, int64_t D) {
#pragma omp parallel for schedule(static) if (N * D > kParallelMin)
  for (int64_t n = 0; n < N; ++n)
    std::memcpy(out + n * D, weight + static_cast<int64_t>(ids[n]) * D, static_cast<size_t>(D) * sizeof(T));
}

// dweight[v, :] += sum over n with ids[n] == v of dout[n, :], in ascending n.
template <class T>
void embedding_backward(T* dweight,          // dweight: (V, D)
                        const T* dout,       // dout: (N, D)
                        const int32_t* ids,  // ids: (N), values in [0, V)
                        int64_t N, int64_t V, int64_t D) {
  // Counting sort of positions by id: bucket v holds order[first[v] .. first[v+1]),
  // positions in ascending order because the fill pass walks n upwards.
  std::vector<int64_t> first(static_cast<size_t>(V) + 1, 0);
  for (int64_t n = 0; n < N; ++n) ++first[ids[n] + 1];
  for (int64_t v = 0; v < V; ++v) first[v + 1] += first[v];
  std::vector<int64_t> order(static_cast<size_t>(N));
  {
    std::vector<int64_t> next(first.begin(), first.end() - 1);
    for (int64_t n = 0; n < N; ++n) order[next[ids[n]]++] = n;
  }
  std::vector<int32_t> used;  // the distinct ids, so the parallel loop skips empty rows
  for (int64_t v = 0; v < V; ++v)
    if (first[v + 1] > first[v]) used.push_back(static_cast<int32_t>(v));
  const int64_t U = static_cast<int64_t>(used.size());
  // Dynamic scheduling balances a frequent id (a long bucket) against many rare
  // ones; it cannot change a result, because each row is owned by one thread and
  // summed in bucket order.
#pragma omp parallel for schedule(dynamic, 8) if (N * D > kParallelMin)
  for (int64_t u = 0; u < U; ++u) {
    const int64_t v = used[u];
    T* row = dweight + v * D;
    for (int64_t k = first[v]; k < first[v + 1]; ++k) {
      const T* src = dout + order[k] * D;
      for (int64_t d = 0; d < D; ++d) row[d] += src[d];
    }
  }
}

}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& weight) {
  if (!ids.defined() || ids.dtype() != DType::i32)
    throw ShapeError(std::string("embedding: ids must be an int32 tensor, got ") +
                     (ids.defined() ? dtype_name(ids.dtype()) : "undefined"));
  if (!weight.defined() || weight.ndim() != 2)
    throw ShapeError("embedding: weight has shape " +
                     (weight.defined() ? shape_str(weight.shape()) : std::string("undefined")) + ", expected (V, D)");
  const int64_t V = weight.size(0), D = weight.size(1), N = ids.numel();
  const int32_t* id = ids.i32();
  // A serial scan: cheap next to the copy, and it reports the first bad id.
  for (int64_t n = 0; n < N; ++n)
    if (id[n] < 0 || id[n] >= V)
      throw ShapeError("embedding: id " + std::to_string(id[n]) + " at position " + std::to_string(n) + " (index " +
                       multi_index(n, ids.shape()) + " of ids " + shape_str(ids.shape()) +
                       ") is out of range for a vocabulary of V = " + std::to_string(V) + " (weight " +
                       shape_str(weight.shape()) + ")");
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor y = Tensor::empty(out_shape, weight.dtype());
  dispatch_float(weight.dtype(), "embedding", [&](auto tag) {
    using T = decltype(tag);
    embedding_forward<T>(y.data<T>(), id, weight.data<T>(), N, D);
  });
  if (!any_requires_grad({&weight})) return y;
  // The backward needs the ids and the weight's gradient cell, not the weight.
  record({&y}, [ids, gw = weight.grad_cell(), N, V, D](const std::vector<Tensor>& g) {
    dispatch_float(gw->dtype, "embedding backward", [&](auto tag) {
      using T = decltype(tag);
      embedding_backward<T>(gw->buffer().template data<T>(), g[0].data<T>(), ids.i32(), N, V, D);
    });
  });
  return y;
}

}  // namespace seqmix
