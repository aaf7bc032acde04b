// dropout: inverted dropout with a counter-based mask, forward and backward.
//
// Element i of a call is kept iff u64_to_unit(hash_counter(seed, start + i)) >= p,
// where start is a block of numel counters reserved from the Generator. The
// mask is a pure function of (seed, start, i), so it does not depend on the
// thread count or the schedule, and the backward regenerates it instead of
// storing it. Why regenerate: dropout sits on every residual branch (docs/model.md), so
// a stored mask would keep one byte (or bit) per activation per site alive
// until the backward, and a second code path (mask packing) would need its own
// tests; recomputing costs two 64-bit mixes per element, the same as the
// forward (measured ~3.5 ns per element on one thread of the 2-core reference
// machine; SSE4.2 has no 64-bit vector multiply, so the hash stays scalar).
// If dropout ever shows up in a profile, a packed bit mask is the next step.
//
// Kept units are scaled by 1/(1-p) so that E[y] = x; the backward is the same
// map applied to dy (dy/dx = mask / (1-p) elementwise) and accumulates (+=)
// into the gradient buffer (the tape zeroes it once per step).
#include <string>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

namespace {

// out[i] (+)= keep(i) ? in[i] * scale : 0
template <class T, bool Acc>
void dropout_apply(T* out,       // out: (n)
                   const T* in,  // in: (n)
                   uint64_t seed, uint64_t start, double p, T scale, int64_t n) {
#pragma omp parallel for schedule(static) if (n > (1 << 14))
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = u64_to_unit(hash_counter(seed, start + static_cast<uint64_t>(i))) >= p;
    const T v = keep ? in[i] * scale : T(0);
    if constexpr (Acc)
      out[i] += v;
    else
      out[i] = v;
  }
}

}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  if (!x.defined()) throw ShapeError("dropout: input is undefined");
  if (!(p >= 0.0 && p < 1.0))
    throw ShapeError("dropout: p = " + std::to_string(p) + " for input " + shape_str(x.shape()) +
                     ", expected 0 <= p < 1");
  dispatch_float(x.dtype(), "dropout", [](auto) {});  // rejects int32 even on the identity path
  if (!training || p == 0.0) return x;
  const int64_t n = x.numel();
  const uint64_t seed = gen.seed();
  const uint64_t start = gen.reserve(static_cast<uint64_t>(n));
  Tensor y = Tensor::empty(x.shape(), x.dtype());
  dispatch_float(x.dtype(), "dropout", [&](auto tag) {
    using T = decltype(tag);
    dropout_apply<T, false>(y.data<T>(), x.data<T>(), seed, start, p, static_cast<T>(1.0 / (1.0 - p)), n);
  });
  if (!any_requires_grad({&x})) return y;
  record({&y}, [gx = x.grad_cell(), seed, start, p, n](const std::vector<Tensor>& g) {
    dispatch_float(gx->dtype, "dropout backward", [&](auto tag) {
      using T = decltype(tag);
      dropout_apply<T, true>(gx->buffer().template data<T>(), g[0].data<T>(), seed, start, p,
                             static_cast<T>(1.0 / (1.0 - p)), n);
    });
  });
  return y;
}

}  // namespace seqmix
