// cross_entropy: fused log-softmax + negative log-likelihood, forward and backward;
// count_correct: the accuracy of the same logits.
//
// For a row r with logits x (V) and label y:
//   lse_r  = max_j x_j + log sum_j exp(x_j - max_j x_j)
//   loss_r = lse_r - x_y
// and the result is the mean of loss_r over the rows whose label is not
// kIgnoreLabel (0 when there is none). The forward keeps only lse (one number
// per row), never the (rows, V) probabilities: the backward recomputes them,
// which costs one exp per logit but saves a tensor as large as the logits.
//
// Speed: the exps dominate both passes. float32 uses exp_f32 below, a
// branch-free polynomial that lets the row loops vectorise; against std::exp
// at rows = 2048, V = 8192 on one thread it took the forward from 4.4 to 2.0
// ns per logit and the backward from 2.1 to 1.8 (the backward streams three
// (rows, V) arrays and is mostly memory-bound). float64 keeps std::exp.
//
// Backward stores the logits' gradient when it is the first contribution
// (GradCell::buffer_for_write) and accumulates (+=) otherwise.
//
// Determinism: rows are summed in fixed chunks of kChunk rows, each chunk into
// its own double partial, and the partials are added in chunk order; the loss
// is therefore bit-identical for any thread count.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

constexpr int64_t kChunk = 16;  // rows per partial sum

// exp(x) for float32 without a library call, so that the loops over a row
// vectorise (glibc's expf is a scalar call, and -O3 without -ffast-math never
// vectorises it). x = k ln2 + r with k = round(x / ln2), |r| <= ln2 / 2, ln2
// split in two (Cody-Waite: k * kLn2Hi is exact for |k| < 2^15), exp(r) by its
// Taylor polynomial to degree 7 (truncation error r^8 / 8! < 6e-9), and 2^k
// built in the exponent bits. Measured: at most 1.7 ulp from exp over
// [-87, 88]. Below -87 (where 2^k would leave the normal range) the result is
// 0, -inf gives 0 and NaN gives NaN; x must not exceed 88 (the callers pass
// x - max <= 0 and x - lse <= ~0).
//
// The special cases are integer masks on the bit pattern rather than float
// selects: GCC does not if-convert a float compare under -ftrapping-math,
// and a loop with a branch does not vectorise.
inline float exp_f32(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // 355 / 512: 9 significant bits
  constexpr float kLn2Lo = -2.12194440054690583e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  constexpr uint32_t kMinus87 = 0xC2AE0000u;  // bits of -87.0f
  const uint32_t xb = std::bit_cast<uint32_t>(x);
  // x < -87 or x = -inf: a negative float's bits grow with its magnitude.
  const uint32_t under = 0u - static_cast<uint32_t>((xb > kMinus87) & (xb <= 0xFF800000u));
  const uint32_t nan = 0u - static_cast<uint32_t>((xb & 0x7FFFFFFFu) > 0x7F800000u);
  const uint32_t keep = ~(under | nan);
  const float xc = std::bit_cast<float>((xb & keep) | (kMinus87 & under));  // NaN -> 0, then restored
  const float k = (xc * kLog2e + kRound) - kRound;
  const float r = (xc - k * kLn2Hi) - k * kLn2Lo;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float two_k = std::bit_cast<float>((static_cast<uint32_t>(static_cast<int32_t>(k)) + 127u) << 23);
  const uint32_t vb = std::bit_cast<uint32_t>(p * two_k);
  return std::bit_cast<float>((vb & keep) | (xb & nan));
}

// float64 keeps the library exp: the gradient checks run in float64 and want
// exact semantics; float32 is the training path.
template <class T>
inline T exp_t(T x) {
  if constexpr (std::is_same_v<T, float>)
    return exp_f32(x);
  else
    return std::exp(x);
}

// Eight float lanes as one value: + and ?: on it compile to one vector
// instruction (ymm). Written out because GCC vectorised the plain 8-lane loops
// below badly at -march with AVX-512 (16 lanes per register): it added the 8
// lanes with scalar adds and shuffles, which was most of sum_exp's time.
typedef float f32x8 __attribute__((vector_size(32)));

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// sum_j exp(x[j] - m), in blocks of kBlock: each block's exps go to a small
// buffer (a loop that vectorises), are summed in 8 interleaved lanes (lane l
// takes e[l], e[l + 8], ... in order, so the sum is fixed and deterministic),
// and the block sums are added in double.
template <class T>
double sum_exp(const T* x,  // x: (V)
               T m, int64_t V) {
  constexpr int64_t kBlock = 256, kLanes = 8;
  alignas(64) T e[kBlock];
  double s = 0;
  for (int64_t j0 = 0; j0 < V; j0 += kBlock) {
    const int64_t n = std::min(kBlock, V - j0);
    for (int64_t j = 0; j < n; ++j) e[j] = exp_t(x[j0 + j] - m);
    T lanes[kLanes] = {};
    int64_t j = 0;
    if constexpr (std::is_same_v<T, float>) {
      f32x8 acc = {};
      for (; j + kLanes <= n; j += kLanes) acc += load8(e + j);
      for (int64_t l = 0; l < kLanes; ++l) lanes[l] = acc[l];
    } else {
      for (; j + kLanes <= n; j += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) lanes[l] += e[j + l];
    }
    for (; j < n; ++j) lanes[0] += e[j];
    double b = 0;
    for (int64_t l = 0; l < kLanes; ++l) b += static_cast<double>(lanes[l]);
    s += b;
  }
  return s;
}

// max_j x[j] in 8 interleaved lanes (one long dependency chain otherwise). A
// NaN never replaces a lane (x > lane is false), so it is skipped, as by the
// scan in first_argmax_is.
template <class T>
T row_max(const T* x,  // x: (V), V >= 1
          int64_t V) {
  constexpr int64_t kLanes = 8;
  T lanes[kLanes];
  for (int64_t l = 0; l < kLanes; ++l) lanes[l] = x[0];
  int64_t j = 0;
  if constexpr (std::is_same_v<T, float>) {
    f32x8 mx = load8(lanes);
    for (; j + kLanes <= V; j += kLanes) {
      const f32x8 v = load8(x + j);
      mx = v > mx ? v : mx;
    }
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] = mx[l];
  } else {
    for (; j + kLanes <= V; j += kLanes)
      for (int64_t l = 0; l < kLanes; ++l) lanes[l] = x[j + l] > lanes[l] ? x[j + l] : lanes[l];
  }
  for (; j < V; ++j) lanes[0] = x[j] > lanes[0] ? x[j] : lanes[0];
  T m = lanes[0];
  for (int64_t l = 1; l < kLanes; ++l) m = lanes[l] > m ? lanes[l] : m;
  return m;
}

// Writes lse[r] for every non-ignored row and returns sum_r (lse_r - x[r, y_r])
// over those rows, in double.
template <class T>
double cross_entropy_forward(T* lse,                 // lse: (R); 0 for ignored rows
                             const T* logits,        // logits: (R, V)
                             const int32_t* labels,  // labels: (R)
                             int64_t R, int64_t V) {
  const int64_t chunks = (R + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (R * V > (1 << 14))
  for (int64_t c = 0; c < chunks; ++c) {
    double acc = 0;
    const int64_t r1 = std::min(R, (c + 1) * kChunk);
    for (int64_t r = c * kChunk; r < r1; ++r) {
      if (labels[r] == kIgnoreLabel) {
        lse[r] = 0;
        continue;
      }
      const T* x = logits + r * V;
      const T m = row_max(x, V);
      const double l = static_cast<double>(m) + std::log(sum_exp(x, m, V));
      lse[r] = static_cast<T>(l);
      acc += l - static_cast<double>(x[labels[r]]);
    }
    partial[c] = acc;
  }
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

// d loss / d x[r, j] = (softmax(x_r)_j - [j == y_r]) / count for every
// non-ignored row (loss_r = lse_r - x_{r,y}, d lse_r / d x_j = exp(x_j - lse_r),
// and the mean divides by count); ignored rows did not enter the loss and get 0.
// With the upstream scalar g folded in: dlogits += (p - onehot) * (g / count), or
// with `overwrite` (the gradient's first contribution, in an uninitialised buffer)
// dlogits = the same, which saves zeroing (rows, V) floats and reading them back.
template <class T>
void cross_entropy_backward(T* dlogits,             // dlogits: (R, V)
                            const T* lse,           // lse: (R)
                            const T* logits,        // logits: (R, V)
                            const int32_t* labels,  // labels: (R)
                            T scale,                // g / count
                            int64_t R, int64_t V, bool overwrite) {
#pragma omp parallel for schedule(static) if (R * V > (1 << 14))
  for (int64_t r = 0; r < R; ++r) {
    const T* x = logits + r * V;
    T* dx = dlogits + r * V;
    if (labels[r] == kIgnoreLabel) {
      if (overwrite) std::fill(dx, dx + V, T(0));
      continue;
    }
    const T l = lse[r];
    if (overwrite)
      for (int64_t j = 0; j < V; ++j) dx[j] = exp_t(x[j] - l) * scale;
    else
      for (int64_t j = 0; j < V; ++j) dx[j] += exp_t(x[j] - l) * scale;
    dx[labels[r]] -= scale;
  }
}

// Whether the first index of a largest x[j] is y, as the scan `if (x[j] > x[best])
// best = j` from best = 0 decides it, without the scan's serial dependency (which
// made it 9% of an MQAR step at V = 8192): the maximum by row_max, then y must
// attain it and no earlier index may (a count, which vectorises). A NaN in x[0]
// holds the scan at 0, as nothing compares greater than NaN; a later NaN is never
// chosen, and row_max skips it the same way.
template <class T>
bool first_argmax_is(const T* x,  // x: (V)
                     int64_t V, int32_t y) {
  const T m = row_max(x, V);
  if (m != m) return y == 0;
  if (x[y] != m) return false;
  int64_t earlier = 0;
  for (int64_t j = 0; j < y; ++j) earlier += x[j] == m;
  return earlier == 0;
}

// Checks logits (..., V) against labels (...) for `op` and returns the number of
// rows that are not ignored. A serial pass: it reports the first bad label by
// position.
int64_t count_labelled(const char* op, const Tensor& logits, const Tensor& labels) {
  check_ndim_at_least(op, "logits", logits, 1);
  if (!labels.defined() || labels.dtype() != DType::i32)
    throw ShapeError(std::string(op) + ": labels must be an int32 tensor, got " +
                     (labels.defined() ? dtype_name(labels.dtype()) : "undefined"));
  const Shape rows_shape(logits.shape().begin(), logits.shape().end() - 1);
  if (labels.shape() != rows_shape)
    throw ShapeError(std::string(op) + ": labels have shape " + shape_str(labels.shape()) + ", expected " +
                     shape_str(rows_shape) + " (the logits shape " + shape_str(logits.shape()) +
                     " without its last axis)");
  const int64_t V = logits.size(-1), R = labels.numel();
  const int32_t* y = labels.i32();
  int64_t count = 0;
  for (int64_t r = 0; r < R; ++r) {
    if (y[r] == kIgnoreLabel) continue;
    if (y[r] < 0 || y[r] >= V)
      throw ShapeError(std::string(op) + ": label " + std::to_string(y[r]) + " at position " + std::to_string(r) +
                       " is outside [0, " + std::to_string(V) + ") for logits " + shape_str(logits.shape()) +
                       " (only " + std::to_string(kIgnoreLabel) + " may be outside, to ignore a position)");
    ++count;
  }
  return count;
}

}  // namespace

int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  count_labelled("count_correct", logits, labels);
  const int64_t V = logits.size(-1), R = labels.numel();
  const int32_t* y = labels.i32();
  int64_t correct = 0;
  dispatch_float(logits.dtype(), "count_correct", [&](auto tag) {
    using T = decltype(tag);
    const T* x = logits.data<T>();
#pragma omp parallel for reduction(+ : correct) schedule(static) if (R * V > (1 << 14))
    for (int64_t r = 0; r < R; ++r)
      if (y[r] != kIgnoreLabel) correct += first_argmax_is(x + r * V, V, y[r]);
  });
  return correct;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  const int64_t count = count_labelled("cross_entropy", logits, labels);
  const int64_t V = logits.size(-1), R = labels.numel();
  const int32_t* y = labels.i32();
  Tensor lse = Tensor::empty({R}, logits.dtype());
  Tensor loss = Tensor::zeros({}, logits.dtype());
  dispatch_float(logits.dtype(), "cross_entropy", [&](auto tag) {
    using T = decltype(tag);
    const double total = cross_entropy_forward<T>(lse.data<T>(), logits.data<T>(), y, R, V);
    loss.data<T>()[0] = count ? static_cast<T>(total / static_cast<double>(count)) : T(0);
  });
  if (!any_requires_grad({&logits})) return loss;
  record({&loss}, [logits, labels, lse, count, R, V](const std::vector<Tensor>& g) {
    dispatch_float(logits.dtype(), "cross_entropy backward", [&](auto tag) {
      using T = decltype(tag);
      bool fresh = false;
      Tensor& buffer = logits.grad_cell()->buffer_for_write(fresh);  // allocated even when every label is ignored
      if (count == 0) {
        if (fresh) buffer.fill(0.0);
        return;
      }
      const T scale = static_cast<T>(static_cast<double>(g[0].data<T>()[0]) / static_cast<double>(count));
      cross_entropy_backward<T>(buffer.template data<T>(), lse.data<T>(), logits.data<T>(), labels.i32(), scale, R, V,
                                fresh);
    });
  });
  return loss;
}

}  // namespace seqmix
