// gla_norm_gate (layers/gla.h): GLA's output gate, forward and backward side by side,
// y = rmsnorm_per_head(o) * weight * swish(g) (fla's FusedRMSNormGated with swish).
// Backward accumulates (+=) into gradient buffers and skips inputs that need none.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/tape.h"
#include "layers/gla_kernel.h"
#include "layers/gla_math.h"

namespace seqmix {

namespace {

using gla_math::sigmoid;

// Elementwise work below which one thread is faster than a parallel region.
constexpr int64_t kParallelElems = int64_t(1) << 15;

// y = o * r * w * swish(g), r = rsqrt(mean(o^2) + eps) over each group of dv channels
// (one group per position and head). rstd (groups) is kept for the backward.
// y, o, g: (groups, dv); w: (dv).
template <class T>
void norm_gate_forward(T* y, T* rstd, const T* o, const T* g, const T* w, int64_t groups, int64_t dv, double eps) {
#pragma omp parallel for schedule(static) if (groups * dv >= kParallelElems)
  for (int64_t r = 0; r < groups; ++r) {
    const T* oi = o + r * dv;
    const T* gi = g + r * dv;
    T* yi = y + r * dv;
    double ms = 0;
    for (int64_t e = 0; e < dv; ++e) ms += double(oi[e]) * double(oi[e]);
    const T rs = T(1.0 / std::sqrt(ms / double(dv) + eps));
    if (rstd) rstd[r] = rs;
#pragma omp simd
    for (int64_t e = 0; e < dv; ++e) yi[e] = oi[e] * rs * w[e] * (gi[e] * sigmoid(gi[e]));
  }
}

// With n = o * r and s = swish(g) = g sigmoid(g):
//   dn = dy * w * s;  do = r * (dn - n * mean(dn * n))    (rmsnorm: dr/do = -r^3 o / dv)
//   dg = dy * n * w * sigmoid(g) * (1 + g (1 - sigmoid(g)))
//   dw = the sum over groups of dy * n * s.
// One pass over fixed blocks of groups: each block keeps its own dw partial (double),
// and the partials are summed in block order, so dw does not depend on the threads.
// do_, dg: (groups, dv) or null; dw: (dv) or null; the rest as in the forward.
template <class T>
void norm_gate_backward(T* do_, T* dg, T* dw, const T* dy, const T* rstd, const T* o, const T* g, const T* w,
                        int64_t groups, int64_t dv) {
  if (groups == 0) return;
  const int64_t nblk = std::min<int64_t>(64, groups);
  std::vector<double> part(dw ? nblk * dv : 0, 0.0);
#pragma omp parallel for schedule(static) if (groups * dv >= kParallelElems)
  for (int64_t blk = 0; blk < nblk; ++blk) {
    std::vector<T> dn(dv), sg(dv);
    double* p = dw ? &part[blk * dv] : nullptr;
    for (int64_t r = groups * blk / nblk; r < groups * (blk + 1) / nblk; ++r) {
      const T* oi = o + r * dv;
      const T* gi = g + r * dv;
      const T* dyi = dy + r * dv;
      const T rs = rstd[r];
#pragma omp simd
      for (int64_t e = 0; e < dv; ++e) {
        sg[e] = sigmoid(gi[e]);
        dn[e] = dyi[e] * w[e] * gi[e] * sg[e];
      }
      if (dg) {
        T* dgi = dg + r * dv;
#pragma omp simd
        for (int64_t e = 0; e < dv; ++e) dgi[e] += dyi[e] * (oi[e] * rs) * w[e] * sg[e] * (T(1) + gi[e] * (T(1) - sg[e]));
      }
      if (p)
        for (int64_t e = 0; e < dv; ++e) p[e] += double(dyi[e] * gi[e] * sg[e]) * double(oi[e] * rs);
      if (do_) {
        double dot = 0;
        for (int64_t e = 0; e < dv; ++e) dot += double(dn[e]) * double(oi[e] * rs);
        const T m = T(dot / double(dv));
        T* doi = do_ + r * dv;
#pragma omp simd
        for (int64_t e = 0; e < dv; ++e) doi[e] += rs * (dn[e] - oi[e] * rs * m);
      }
    }
  }
  if (dw)
    for (int64_t blk = 0; blk < nblk; ++blk)
      for (int64_t e = 0; e < dv; ++e) dw[e] += T(part[blk * dv + e]);
}

}  // namespace

Tensor gla_norm_gate(const Tensor& o, const Tensor& g, const Tensor& weight, int64_t num_heads, double eps) {
  const char* op = "gla_norm_gate";
  check_same_dtype(op, {&o, &g, &weight});
  check_ndim_at_least(op, "o", o, 1);
  check_shape(op, "g", g, o.shape());
  const int64_t Dv = o.size(-1);
  if (num_heads <= 0 || Dv % num_heads != 0)
    throw ShapeError(std::string(op) + ": num_heads " + std::to_string(num_heads) + " must divide the width " +
                     std::to_string(Dv) + " of o " + shape_str(o.shape()));
  const int64_t dv = Dv / num_heads;
  check_shape(op, "weight", weight, {dv});
  const int64_t groups = dv == 0 ? 0 : o.numel() / dv;
  const bool need_grad = any_requires_grad({&o, &g, &weight});
  Tensor y = Tensor::empty(o.shape(), o.dtype());
  Tensor rstd = need_grad ? Tensor::empty({groups}, o.dtype()) : Tensor();
  dispatch_float(o.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    norm_gate_forward<T>(y.data<T>(), need_grad ? rstd.data<T>() : nullptr, o.data<T>(), g.data<T>(),
                         weight.data<T>(), groups, dv, eps);
  });
  if (!need_grad) return y;
  record({&y}, [o, g, weight, rstd, groups, dv](const std::vector<Tensor>& gr) {
    dispatch_float(o.dtype(), "gla_norm_gate backward", [&](auto tag) {
      using T = decltype(tag);
      auto buf = [](const Tensor& t) { return t.requires_grad() ? t.grad_buffer().template data<T>() : nullptr; };
      norm_gate_backward<T>(buf(o), buf(g), buf(weight), gr[0].data<T>(), rstd.data<T>(), o.data<T>(), g.data<T>(),
                            weight.data<T>(), groups, dv);
    });
  });
  return y;
}

}  // namespace seqmix
