// Fused causal linear attention (docs/mixers.md#linear_attention): a chunked forward and an exact
// chunked backward, one tape node for the whole core.
//
// Notation per head (d = dk = dv): Fq = phi(q), Fk = phi(k), phi = elu + 1. The
// value rows get a constant 1 appended, V' = [v, 1] (d + 1 columns), and the
// state S' = [S, z] (d x (d + 1)), so that one product gives numerator and
// normaliser together:
//   N'_t = Fq_t^T S'_t = [num_t, den_t - eps],   S'_t = sum_{s <= t} Fk_s V'_s^T
//   o_t = num_t / den_t
// Chunks of C = kLinearAttentionChunk tokens. With S'_c the state before chunk c,
// for the rows of chunk c
//   N' = Fq_c S'_c + tril(Fq_c Fk_c^T) V'_c         (tril keeps s <= t)
//   S'_{c+1} = S'_c + Fk_c^T V'_c
// Each (b, h) is one task that sweeps its chunks in order, holding only the
// current S' (d x (d + 1)): every product is a GEMM of C rows, and no state is
// stored for the backward at all. The forward keeps the packed feature maps Fq,
// Fk (B, H, L, d), V' (B, H, L, d + 1) and the normalisers (B, H, L).
//
// Backward (derivation in linear_attention_backward): per (b, h), a forward sweep
// rebuilds S'_c chunk by chunk for dq, and a reverse sweep builds its
// reverse-time counterpart R_c = sum over later chunks of Fq^T G' for dk and dv
// (the two-sweep causal-product gradient of the paper, in chunks). It accumulates
// (+=) into the gradient buffers of q, k and v and skips those that need none.
//
// Why per (b, h) and not chunk-parallel with a prefix sum over chunk states:
// with few wide heads (H = 1, d = 256) the states of all chunks are 4x the
// activations, and allocating and faulting in such buffers cost more than the
// GEMMs. Training batches give B * H >= the number of threads.
//
// Determinism: a task owns all rows of its (b, h) and sums in chunk order; the
// result does not depend on the thread count.
#include "layers/linear_attention_kernel.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/tape.h"
#include "core/gemm.h"
#include "layers/mamba_math.h"

namespace seqmix {

namespace {

constexpr int64_t kChunk = kLinearAttentionChunk;
// Below this many multiply-adds (B H L d (d + C)) the kernel runs on the calling
// thread: forking a team costs more than the work (gradient checks).
constexpr int64_t kParallelWork = int64_t(1) << 16;

struct Dims {
  int64_t B, L, H, d, D;
  int64_t BH() const { return B * H; }
  int64_t nC() const { return (L + kChunk - 1) / kChunk; }
  int64_t dv1() const { return d + 1; }
  bool parallel() const { return B * H * L * d * (d + kChunk) >= kParallelWork; }
};

// phi(x) = elu(x) + 1: x + 1 for x > 0, e^x otherwise (e^x directly, not
// (e^x - 1) + 1, which would lose the low bits for very negative x).
template <class T>
inline T phi(T x) {
  return x > T(0) ? x + T(1) : std::exp(x);
}

// phi'(x) = 1 for x > 0 and e^x = phi(x) otherwise. For x > 0, phi(x) = x + 1 >= 1
// (also after rounding); for x <= 0, phi(x) = e^x <= 1. So phi'(x) = min(1, phi(x))
// in both cases, and the backward needs only the saved feature map.
template <class T>
inline T phi_grad_from_phi(T f) {
  return f < T(1) ? f : T(1);
}

// dst[i] = phi(src[i]) for i < n. float: the branch-free exp of mamba_math (1.7 ulp) and a
// selection on bit patterns, so that the loop vectorises (libm's expf, one scalar call
// per element, was 6% of the layer's time); float64 (gradient checks): phi() with libm.
inline void phi_row(float* dst, const float* src, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float x = src[i];
    const int32_t pos = -static_cast<int32_t>(std::bit_cast<int32_t>(x) > 0);  // all ones iff x > 0
    dst[i] = mamba_math::select_bits(pos, x + 1.0f, mamba_math::exp_neg_f32(mamba_math::select_bits(pos, 0.0f, x)));
  }
}
inline void phi_row(double* dst, const double* src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = phi(src[i]);
}

// Fq, Fk: (B, H, L, d) = phi of q, k: (B, L, D); Vp: (B, H, L, d + 1) = [v, 1].
template <class T>
void pack_features(T* Fq, T* Fk, T* Vp, const T* q, const T* k, const T* v, const Dims& dm) {
  const int64_t d = dm.d;
#pragma omp parallel for schedule(static) if (dm.parallel())
  for (int64_t row = 0; row < dm.B * dm.L; ++row) {
    const int64_t b = row / dm.L, t = row % dm.L;
    for (int64_t h = 0; h < dm.H; ++h) {
      const int64_t src = row * dm.D + h * d;
      const int64_t dst = ((b * dm.H + h) * dm.L + t);
      phi_row(Fq + dst * d, q + src, d);
      phi_row(Fk + dst * d, k + src, d);
      std::copy_n(v + src, d, Vp + dst * (d + 1));
      Vp[dst * (d + 1) + d] = T(1);
    }
  }
}

// Zeroes the strictly upper triangle (s > t) of an (n x n) block.
template <class T>
void keep_lower(T* A, int64_t n) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = t + 1; s < n; ++s) A[t * n + s] = 0;
}

// ---- forward ----

// out: (B, L, D); den: (B, H, L); Fq, Fk: (B, H, L, d); Vp: (B, H, L, d + 1).
template <class T>
void linear_attention_forward(T* out, T* den, const T* Fq, const T* Fk, const T* Vp, const Dims& dm, T eps) {
  const int64_t L = dm.L, d = dm.d, d1 = dm.dv1(), nC = dm.nC();
#pragma omp parallel if (dm.parallel())
  {
    std::vector<T> S(d * d1), A(kChunk * kChunk), N(kChunk * d1);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < dm.BH(); ++bh) {
      const int64_t b = bh / dm.H, h = bh % dm.H;
      std::fill(S.begin(), S.end(), T(0));
      for (int64_t c = 0; c < nC; ++c) {
        const int64_t t0 = c * kChunk, n = std::min(kChunk, L - t0);
        const T* fq = Fq + (bh * L + t0) * d;
        const T* fk = Fk + (bh * L + t0) * d;
        const T* vp = Vp + (bh * L + t0) * d1;
        // N' = Fq_c S'_c (S'_0 = 0), then N' += tril(Fq_c Fk_c^T) V'_c.
        if (c > 0) {
          gemm_ld(false, false, n, d1, d, T(1), fq, d, S.data(), d1, T(0), N.data(), d1);
        } else {
          std::fill(N.begin(), N.end(), T(0));
        }
        gemm_ld(false, true, n, n, d, T(1), fq, d, fk, d, T(0), A.data(), n);
        keep_lower(A.data(), n);
        gemm_ld(false, false, n, d1, n, T(1), A.data(), n, vp, d1, T(1), N.data(), d1);
        for (int64_t r = 0; r < n; ++r) {
          const T dn = N[r * d1 + d] + eps;
          den[bh * L + t0 + r] = dn;
          T* o = out + (b * L + t0 + r) * dm.D + h * d;
          const T inv = T(1) / dn;
          for (int64_t j = 0; j < d; ++j) o[j] = N[r * d1 + j] * inv;
        }
        if (c + 1 < nC) gemm_ld(true, false, d, d1, n, T(1), fk, d, vp, d1, T(1), S.data(), d1);  // S' += Fk^T V'
      }
    }
  }
}

// ---- backward ----

// Gradients, with G'_t the gradient of N'_t:
//   o_t = num_t / den_t and den_t = N'_t[d] + eps, so
//   G'_t[j] = dO_t[j] / den_t (j < d),   G'_t[d] = -(dO_t . num_t) / den_t^2 = -(dO_t . o_t) / den_t.
// With loss = sum_t G'_t . N'_t and N'_t = sum_{s <= t} (Fq_t . Fk_s) V'_s:
//   dFq_t = sum_{s <= t} (G'_t . V'_s) Fk_s
//         = [tril(G'_c V'_c^T) Fk_c]_t + S'_c G'_t            (earlier chunks through S'_c)
//   dFk_s = sum_{t >= s} (G'_t . V'_s) Fq_t
//         = [tril(G'_c V'_c^T)^T Fq_c]_s + R_c V'_s            R_c = sum_{t in later chunks} Fq_t G'_t^T
//   dV'_s = sum_{t >= s} (Fq_t . Fk_s) G'_t
//         = [tril(Fq_c Fk_c^T)^T G'_c]_s + R_c^T Fk_s          (only the first d columns: V' ends in a constant)
// and finally dq = dFq phi'(q) = dFq min(1, Fq), likewise dk.
//
// dq, dk, dv: (B, L, D) gradient buffers, each may be null (not required);
// Fq, Fk: (B, H, L, d); Vp: (B, H, L, d + 1); den: (B, H, L); out, dO: (B, L, D).
template <class T>
void linear_attention_backward(T* dq, T* dk, T* dv, const T* Fq, const T* Fk, const T* Vp, const T* den,
                               const T* out, const T* dO, const Dims& dm) {
  const int64_t L = dm.L, d = dm.d, d1 = dm.dv1(), nC = dm.nC();
#pragma omp parallel if (dm.parallel())
  {
    std::vector<T> G(L * d1), S(d * d1), M(kChunk * kChunk), A(kChunk * kChunk), g(kChunk * d);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < dm.BH(); ++bh) {
      const int64_t b = bh / dm.H, h = bh % dm.H;
      // G' of this head: (L, d + 1).
      for (int64_t t = 0; t < L; ++t) {
        const T* go = dO + (b * L + t) * dm.D + h * d;
        const T* o = out + (b * L + t) * dm.D + h * d;
        T* gp = G.data() + t * d1;
        const T inv = T(1) / den[bh * L + t];
        T dot = 0;
        for (int64_t j = 0; j < d; ++j) {
          gp[j] = go[j] * inv;
          dot += go[j] * o[j];
        }
        gp[d] = -dot * inv;
      }
      auto chunk = [&](int64_t c, int64_t& t0, int64_t& n, const T*& fq, const T*& fk, const T*& vp, const T*& gp) {
        t0 = c * kChunk;
        n = std::min(kChunk, L - t0);
        fq = Fq + (bh * L + t0) * d;
        fk = Fk + (bh * L + t0) * d;
        vp = Vp + (bh * L + t0) * d1;
        gp = G.data() + t0 * d1;
      };
      // grad rows t0 .. t0 + n of this head += local (times phi'(x) = min(1, phi) when feat is given).
      auto scatter = [&](T* grad, int64_t t0, int64_t n, const T* feat) {
        for (int64_t r = 0; r < n; ++r) {
          T* gr = grad + (b * L + t0 + r) * dm.D + h * d;
          const T* lr = g.data() + r * d;
          if (feat) {
            const T* fr = feat + r * d;
            for (int64_t i = 0; i < d; ++i) gr[i] += lr[i] * phi_grad_from_phi(fr[i]);
          } else {
            for (int64_t i = 0; i < d; ++i) gr[i] += lr[i];
          }
        }
      };
      int64_t t0, n;
      const T *fq, *fk, *vp, *gp;
      if (dq) {  // forward sweep: dFq_c = tril(G'_c V'_c^T) Fk_c + G'_c S'_c^T, then S' += Fk_c^T V'_c
        std::fill(S.begin(), S.end(), T(0));
        for (int64_t c = 0; c < nC; ++c) {
          chunk(c, t0, n, fq, fk, vp, gp);
          gemm_ld(false, true, n, n, d1, T(1), gp, d1, vp, d1, T(0), M.data(), n);
          keep_lower(M.data(), n);
          gemm_ld(false, false, n, d, n, T(1), M.data(), n, fk, d, T(0), g.data(), d);
          if (c > 0) gemm_ld(false, true, n, d, d1, T(1), gp, d1, S.data(), d1, T(1), g.data(), d);
          scatter(dq, t0, n, fq);
          if (c + 1 < nC) gemm_ld(true, false, d, d1, n, T(1), fk, d, vp, d1, T(1), S.data(), d1);
        }
      }
      if (dk || dv) {  // reverse sweep with R (held in S): R_c = 0 for the last chunk
        std::fill(S.begin(), S.end(), T(0));
        for (int64_t c = nC - 1; c >= 0; --c) {
          chunk(c, t0, n, fq, fk, vp, gp);
          const bool later = c + 1 < nC;
          if (dk) {  // dFk_c = tril(G'_c V'_c^T)^T Fq_c + V'_c R_c^T
            gemm_ld(false, true, n, n, d1, T(1), gp, d1, vp, d1, T(0), M.data(), n);
            keep_lower(M.data(), n);
            gemm_ld(true, false, n, d, n, T(1), M.data(), n, fq, d, T(0), g.data(), d);
            if (later) gemm_ld(false, true, n, d, d1, T(1), vp, d1, S.data(), d1, T(1), g.data(), d);
            scatter(dk, t0, n, fk);
          }
          if (dv) {  // dV_c = tril(Fq_c Fk_c^T)^T G'_c + Fk_c R_c, first d columns
            gemm_ld(false, true, n, n, d, T(1), fq, d, fk, d, T(0), A.data(), n);
            keep_lower(A.data(), n);
            gemm_ld(true, false, n, d, n, T(1), A.data(), n, gp, d1, T(0), g.data(), d);
            if (later) gemm_ld(false, false, n, d, d, T(1), fk, d, S.data(), d1, T(1), g.data(), d);
            scatter(dv, t0, n, nullptr);
          }
          if (c > 0) gemm_ld(true, false, d, d1, n, T(1), fq, d, gp, d1, T(1), S.data(), d1);  // R += Fq_c^T G'_c
        }
      }
    }
  }
}

}  // namespace

Tensor causal_linear_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t num_heads, double eps) {
  check_same_dtype("causal_linear_attention", {&q, &k, &v});
  if (q.ndim() != 3) throw ShapeError("causal_linear_attention: q must be (B, L, D), got " + shape_str(q.shape()));
  check_shape("causal_linear_attention", "k", k, q.shape());
  check_shape("causal_linear_attention", "v", v, q.shape());
  const int64_t D = q.size(2);
  if (num_heads < 1 || D % num_heads != 0)
    throw ShapeError("causal_linear_attention: d_model " + std::to_string(D) + " is not divisible by num_heads " +
                     std::to_string(num_heads));
  const Dims dm{q.size(0), q.size(1), num_heads, D / num_heads, D};
  const DType dt = q.dtype();
  Tensor Fq = Tensor::empty({dm.B, dm.H, dm.L, dm.d}, dt);
  Tensor Fk = Tensor::empty({dm.B, dm.H, dm.L, dm.d}, dt);
  Tensor Vp = Tensor::empty({dm.B, dm.H, dm.L, dm.dv1()}, dt);
  Tensor den = Tensor::empty({dm.B, dm.H, dm.L}, dt);
  Tensor out = Tensor::empty({dm.B, dm.L, D}, dt);
  dispatch_float(dt, "causal_linear_attention", [&](auto tag) {
    using T = decltype(tag);
    pack_features(Fq.data<T>(), Fk.data<T>(), Vp.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), dm);
    linear_attention_forward(out.data<T>(), den.data<T>(), Fq.data<T>(), Fk.data<T>(), Vp.data<T>(), dm,
                             static_cast<T>(eps));
  });
  if (!any_requires_grad({&q, &k, &v})) return out;
  // The closure holds the gradient cells of q, k, v, not their values: the packed
  // feature maps carry everything the backward needs.
  auto cell = [](const Tensor& t) { return t.requires_grad() ? t.grad_cell() : nullptr; };
  record({&out}, [Fq, Fk, Vp, den, out, cq = cell(q), ck = cell(k), cv = cell(v),
                  dm](const std::vector<Tensor>& g) {
    dispatch_float(out.dtype(), "causal_linear_attention backward", [&](auto tag) {
      using T = decltype(tag);
      auto buf = [](const std::shared_ptr<GradCell>& c) { return c ? c->buffer().template data<T>() : nullptr; };
      linear_attention_backward(buf(cq), buf(ck), buf(cv), Fq.data<T>(), Fk.data<T>(), Vp.data<T>(), den.data<T>(),
                                out.data<T>(), g[0].data<T>(), dm);
    });
  });
  return out;
}

}  // namespace seqmix
