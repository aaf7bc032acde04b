// Fused causal multi-head attention (docs/mixers.md#attention): a FlashAttention forward and
// backward for the CPU, one tape node for the whole core.
//
// Layout. q, k and v are read in place from the (B, L, 3D) projection: the rows
// of one head form a (rows x dh) matrix with leading dimension 3D, which the
// small GEMMs take directly, and the gradients are accumulated (+=) straight into
// the gradient buffer of qkv the same way. The backward keeps qkv, the output O
// and the per-row log-sum-exp: no (L, L) matrix survives the forward.
//
// Forward, per (b, h) and query block i (kBlock rows), over key blocks j <= i:
//   S = scale Q_i K_j^T                  (scale = 1/sqrt(dh))
//   m' = max(m, rowmax S)                the running maximum
//   P = exp(S - m'), l = l e^{m - m'} + rowsum P, acc = acc e^{m - m'} + P V_j
// then O_i = acc / l and lse_i = m + log l.
//
// Backward (derivation next to block_backward): P is recomputed from lse block
// by block. dK_j and dV_j sum over query blocks, dQ_i over key blocks; instead of
// atomics either one thread owns a whole (b, h) (per_head), or a first pass over
// key blocks computes dK, dV and a second over query blocks dQ (two_pass).
//
// Small GEMMs: gemm_ld (core/gemm.h), oneDNN's sgemm with leading
// dimensions for float32, plain loops for float64.
//
// Determinism: every parallel task writes only rows it owns, and the summation
// order inside a task is fixed (blocks in ascending order), so the result does
// not depend on which thread runs a task. That is why the loops may use a
// dynamic schedule (the triangular work makes static chunks unbalanced): the
// output is bit-identical for any thread count, and per_head and two_pass agree
// bit for bit.
#include "layers/attention_kernel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "core/gemm.h"
#include "core/tape.h"
#include "layers/mamba_math.h"

namespace seqmix {

namespace {

// Query and key blocks have the same size, aligned to each other, so every row of
// a processed block has at least one visible key (the diagonal block contains j = i).
// 128 rows: a (128 x 128) score block (64 KB) and the (128 x dh) accumulator stay in
// L2, and each sgemm call (about 1 us of fixed cost, plus packing) does up to
// 128*128*dh FMAs. Measured against 64 rows, one thread, GFLOP per CPU-second:
// 64x64x64 N,T 75, N,N 98; 128x128x64 N,T 105, 128x64x128 N,N 102; the diagonal
// blocks then compute 12% masked pairs instead of 6%, well paid for.
constexpr int64_t kBlock = 128;

// ---- exp over a row of scores ----
// The softmax spends one exp per (i, j) pair, as many as the FMAs of a gemm with
// K = 1, so a scalar libm call per element would cost more than the gemms for
// small dh. GCC does not vectorise expf without -ffast-math; mamba_math's
// branch-free exp (Cody-Waite reduction and a degree-6 polynomial, 1.7 ulp, +0 below
// -87) does, at the full vector width (16 lanes with AVX-512, 8 with AVX2).
// Arguments here are <= 0: scores minus a running maximum, or minus the log-sum-exp,
// which is at least the row maximum.

// x[c] = exp(x[c] - shift) for c < n.
inline void exp_shifted(float* x, int64_t n, float shift) {
#pragma omp simd
  for (int64_t c = 0; c < n; ++c) x[c] = mamba_math::exp_neg_f32(x[c] - shift);
}

// float64 serves the gradient checks: libm exactness matters more than speed.
inline void exp_shifted(double* x, int64_t n, double shift) {
  for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c] - shift);
}

// max(init, x[0..n)). The maximum is exact in any order, so the lanes are free.
template <class T>
inline T row_max(const T* x, int64_t n, T init) {
  T m = init;
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < n; ++c) m = x[c] > m ? x[c] : m;
  return m;
}

// Below this many multiply-adds (B H L^2 dh) the kernel runs on the calling
// thread: forking a team costs more than the work (gradient checks, decoding).
constexpr int64_t kParallelWork = int64_t(1) << 16;

struct Dims {
  int64_t B, L, H, dh, D;
  bool parallel() const { return B * H * L * L * dh >= kParallelWork; }
  int64_t BH() const { return B * H; }
  int64_t nblk() const { return (L + kBlock - 1) / kBlock; }
  // Offset of row t of head h of batch b in a (B, L, 3D) buffer; add D for k, 2D for v.
  int64_t qkv_row(int64_t bh, int64_t t) const { return ((bh / H) * L + t) * 3 * D + (bh % H) * dh; }
  // Offset of row t of head h of batch b in a (B, L, D) buffer.
  int64_t out_row(int64_t bh, int64_t t) const { return ((bh / H) * L + t) * D + (bh % H) * dh; }
};

// Attention dropout: element (bh, i, j) is kept iff u(counter) >= p with
// counter = start + (bh*L + i)*L + j, a pure function of the reserved range.
struct DropoutMask {
  bool on = false;
  double p = 0;
  uint64_t seed = 0, start = 0;

  // mk[c] = (kept ? 1/(1-p) : 0) for keys j0 .. j0+n-1 of row i of head bh.
  template <class T>
  void row(T* mk, int64_t bh, int64_t L, int64_t i, int64_t j0, int64_t n) const {
    const T inv_keep = static_cast<T>(1.0 / (1.0 - p));
    const uint64_t base = start + static_cast<uint64_t>((bh * L + i) * L + j0);
    for (int64_t c = 0; c < n; ++c)
      mk[c] = u64_to_unit(hash_counter(seed, base + static_cast<uint64_t>(c))) >= p ? inv_keep : T(0);
  }
};

// Number of keys of block j0 (nk columns) visible to query i: keys j <= i.
inline int64_t visible(int64_t i, int64_t j0, int64_t nk) { return std::clamp<int64_t>(i - j0 + 1, 0, nk); }

// ---- forward ----

// out: (B, L, D); lse: (B, H, L); qkv: (B, L, 3D).
template <class T>
void attention_forward(T* out, T* lse, const T* qkv, const Dims& d, const DropoutMask& dr, T scale) {
  const int64_t L = d.L, dh = d.dh, ld = 3 * d.D, nblk = d.nblk();
#pragma omp parallel if (d.parallel())
  {
    std::vector<T> S(kBlock * kBlock), acc(kBlock * dh), m(kBlock), l(kBlock), mk(kBlock);
    // Tasks in order of decreasing work (the last query block sees the most keys).
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < d.BH() * nblk; ++task) {
      const int64_t bh = task / nblk, ib = nblk - 1 - task % nblk;
      const int64_t i0 = ib * kBlock, nq = std::min(kBlock, L - i0);
      const T* Qi = qkv + d.qkv_row(bh, i0);
      std::fill(m.begin(), m.end(), -std::numeric_limits<T>::infinity());
      std::fill(l.begin(), l.end(), T(0));
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t jb = 0; jb <= ib; ++jb) {
        const int64_t j0 = jb * kBlock, nk = std::min(kBlock, i0 + nq - j0);
        const T* Kj = qkv + d.qkv_row(bh, j0) + d.D;
        const T* Vj = Kj + d.D;
        gemm_ld(false, true, nq, nk, dh, scale, Qi, ld, Kj, ld, T(0), S.data(), nk);  // S = scale Q_i K_j^T
        for (int64_t r = 0; r < nq; ++r) {
          T* s = S.data() + r * nk;
          const int64_t nv = visible(i0 + r, j0, nk);  // >= 1: blocks are aligned
          const T mx = row_max(s, nv, m[r]);
          exp_shifted(s, nv, mx);
          for (int64_t c = nv; c < nk; ++c) s[c] = 0;
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = 0; c < nv; ++c) sum += s[c];
          const T alpha = std::exp(m[r] - mx);  // 0 on the first block (m = -inf)
          l[r] = l[r] * alpha + sum;
          m[r] = mx;
          if (alpha != T(1)) {
            T* a = acc.data() + r * dh;
            for (int64_t e = 0; e < dh; ++e) a[e] *= alpha;
          }
          // Dropout multiplies the normalised probabilities: l sums the undropped
          // ones, only the product with V sees the mask.
          if (dr.on) {
            dr.row(mk.data(), bh, L, i0 + r, j0, nv);
            for (int64_t c = 0; c < nv; ++c) s[c] *= mk[c];
          }
        }
        gemm_ld(false, false, nq, dh, nk, T(1), S.data(), nk, Vj, ld, T(1), acc.data(), dh);  // acc += P V_j
      }
      for (int64_t r = 0; r < nq; ++r) {
        T* o = out + d.out_row(bh, i0 + r);
        const T inv = T(1) / l[r];
        for (int64_t e = 0; e < dh; ++e) o[e] = acc[r * dh + e] * inv;
        lse[bh * L + i0 + r] = m[r] + std::log(l[r]);
      }
    }
  }
}

// ---- backward ----

// delta: (B, H, L) = sum over the head's dh columns of O * dO; O, dO: (B, L, D).
template <class T>
void row_dots(T* delta, const T* O, const T* dO, const Dims& d) {
#pragma omp parallel for schedule(static) if (d.parallel())
  for (int64_t row = 0; row < d.B * d.L; ++row) {
    const int64_t b = row / d.L, t = row % d.L;
    for (int64_t h = 0; h < d.H; ++h) {
      const T* o = O + row * d.D + h * d.dh;
      const T* g = dO + row * d.D + h * d.dh;
      T acc = 0;
      for (int64_t e = 0; e < d.dh; ++e) acc += o[e] * g[e];
      delta[(b * d.H + h) * d.L + t] = acc;
    }
  }
}

// Recomputes block (i, j) of one head. In the forward pass
//   P = exp(S - lse) (the softmax of S = scale Q K^T), Pd = P * M (M: the dropout
//   mask scaled by 1/(1-p), all ones without dropout), O = Pd V.
// So with dO given:
//   dV = Pd^T dO, and the gradient of Pd is dPd = dO V^T, that of P is dP = dPd * M.
//   The softmax backward per row: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik), and
//   sum_k P_ik dP_ik = sum_k Pd_ik (dO_i . v_k) = dO_i . O_i = delta_i, which was
//   computed once per row from O and dO.
//   Finally S = scale Q K^T: dQ = scale dS K and dK = scale dS^T Q.
// On return P holds Pd (for dV) and dS holds dS; masked entries are 0.
// Q, K, V rows have leading dimension ldq, dO rows ldo.
template <class T>
void block_backward(T* P /*(nq, nk)*/, T* dS /*(nq, nk)*/, T* mk /*(nk)*/, const T* Qi /*(nq, dh)*/,
                    const T* Kj /*(nk, dh)*/, const T* Vj /*(nk, dh)*/, const T* dOi /*(nq, dh)*/,
                    const T* lse_i /*(nq)*/, const T* delta_i /*(nq)*/, int64_t ldq, int64_t ldo, int64_t bh,
                    int64_t L, int64_t i0, int64_t nq, int64_t j0, int64_t nk, int64_t dh, T scale,
                    const DropoutMask& dr) {
  // The same call as in the forward, so S (and P) are recomputed bit for bit.
  gemm_ld(false, true, nq, nk, dh, scale, Qi, ldq, Kj, ldq, T(0), P, nk);   // S = scale Q_i K_j^T
  gemm_ld(false, true, nq, nk, dh, T(1), dOi, ldo, Vj, ldq, T(0), dS, nk);  // dPd = dO_i V_j^T
  for (int64_t r = 0; r < nq; ++r) {
    T* p = P + r * nk;
    T* ds = dS + r * nk;
    const int64_t nv = visible(i0 + r, j0, nk);
    const T delta = delta_i[r];
    exp_shifted(p, nv, lse_i[r]);
    if (dr.on) {
      dr.row(mk, bh, L, i0 + r, j0, nv);
      for (int64_t c = 0; c < nv; ++c) {
        ds[c] = p[c] * (ds[c] * mk[c] - delta);
        p[c] *= mk[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < nv; ++c) ds[c] = p[c] * (ds[c] - delta);
    }
    for (int64_t c = nv; c < nk; ++c) p[c] = ds[c] = 0;
  }
}

// dqkv: (B, L, 3D), accumulated (+=); qkv: (B, L, 3D); dO: (B, L, D);
// lse, delta: (B, H, L).
template <class T>
void attention_backward(T* dqkv, const T* qkv, const T* dO, const T* lse, const T* delta, const Dims& d,
                        const DropoutMask& dr, bool per_head, T scale) {
  const int64_t L = d.L, dh = d.dh, nblk = d.nblk(), ld = 3 * d.D;

  // One block pair: recompute, then the requested gradient GEMMs.
  auto pair = [&](T* P, T* dS, T* mk, int64_t bh, int64_t ib, int64_t jb, bool key_grads, bool query_grad) {
    const int64_t i0 = ib * kBlock, nq = std::min(kBlock, L - i0);
    const int64_t j0 = jb * kBlock, nk = std::min(kBlock, i0 + nq - j0);
    const int64_t qi = d.qkv_row(bh, i0), kj = d.qkv_row(bh, j0) + d.D, vj = kj + d.D;
    const T* dOi = dO + d.out_row(bh, i0);
    block_backward(P, dS, mk, qkv + qi, qkv + kj, qkv + vj, dOi, lse + bh * L + i0, delta + bh * L + i0, ld, d.D,
                   bh, L, i0, nq, j0, nk, dh, scale, dr);
    if (key_grads) {
      gemm_ld(true, false, nk, dh, nq, T(1), P, nk, dOi, d.D, T(1), dqkv + vj, ld);       // dV_j += Pd^T dO_i
      gemm_ld(true, false, nk, dh, nq, scale, dS, nk, qkv + qi, ld, T(1), dqkv + kj, ld);  // dK_j += scale dS^T Q_i
    }
    if (query_grad)
      gemm_ld(false, false, nq, dh, nk, scale, dS, nk, qkv + kj, ld, T(1), dqkv + qi, ld);  // dQ_i += scale dS K_j
  };

#pragma omp parallel if (d.parallel())
  {
    std::vector<T> P(kBlock * kBlock), dS(kBlock * kBlock), mk(kBlock);
    if (per_head) {
      // Key blocks outer, query blocks inner: dK_j, dV_j complete in the inner
      // loop; dQ_i receives key blocks in ascending order, as in two_pass.
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < d.BH(); ++bh)
        for (int64_t jb = 0; jb < nblk; ++jb)
          for (int64_t ib = jb; ib < nblk; ++ib) pair(P.data(), dS.data(), mk.data(), bh, ib, jb, true, true);
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < d.BH() * nblk; ++task) {  // key block jb meets nblk - jb query blocks
        const int64_t bh = task / nblk, jb = task % nblk;
        for (int64_t ib = jb; ib < nblk; ++ib) pair(P.data(), dS.data(), mk.data(), bh, ib, jb, true, false);
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < d.BH() * nblk; ++task) {  // query block ib meets ib + 1 key blocks
        const int64_t bh = task / nblk, ib = nblk - 1 - task % nblk;
        for (int64_t jb = 0; jb <= ib; ++jb) pair(P.data(), dS.data(), mk.data(), bh, ib, jb, false, true);
      }
    }
  }
}

}  // namespace

int64_t attention_block_rows() { return kBlock; }

Tensor causal_attention(const Tensor& qkv, int64_t num_heads, double dropout_p, Generator& gen,
                        AttentionBackwardAlgo algo) {
  if (qkv.ndim() != 3 || qkv.size(2) % 3 != 0)
    throw ShapeError("causal_attention: qkv must be (B, L, 3D), got " + shape_str(qkv.shape()));
  const int64_t D = qkv.size(2) / 3;
  if (num_heads < 1 || D % num_heads != 0)
    throw ShapeError("causal_attention: d_model " + std::to_string(D) + " is not divisible by num_heads " +
                     std::to_string(num_heads));
  if (!(dropout_p >= 0.0 && dropout_p < 1.0))
    throw ShapeError("causal_attention: dropout must be in [0, 1), got " + std::to_string(dropout_p));
  const Dims d{qkv.size(0), qkv.size(1), num_heads, D / num_heads, D};
  const DType dt = qkv.dtype();

  Tensor out = Tensor::empty({d.B, d.L, D}, dt);
  Tensor lse = Tensor::empty({d.B, d.H, d.L}, dt);
  DropoutMask dr;
  if (dropout_p > 0.0 && d.L > 0) {
    dr.on = true;
    dr.p = dropout_p;
    dr.seed = gen.seed();
    dr.start = gen.reserve(static_cast<uint64_t>(d.BH() * d.L * d.L));
  }
  const double scale = 1.0 / std::sqrt(static_cast<double>(d.dh));
  dispatch_float(dt, "causal_attention", [&](auto tag) {
    using T = decltype(tag);
    attention_forward(out.data<T>(), lse.data<T>(), qkv.data<T>(), d, dr, static_cast<T>(scale));
  });
  if (!any_requires_grad({&qkv})) return out;

  const int nthreads = omp_get_max_threads();
  const bool per_head = algo == AttentionBackwardAlgo::per_head ||
                        (algo == AttentionBackwardAlgo::automatic &&
                         (d.BH() % nthreads == 0 || d.BH() >= 4 * nthreads));
  record({&out}, [qkv, out, lse, d, dr, per_head, scale](const std::vector<Tensor>& g) {
    const Tensor& dO = g[0];
    dispatch_float(out.dtype(), "causal_attention backward", [&](auto tag) {
      using T = decltype(tag);
      Tensor delta = Tensor::empty({d.B, d.H, d.L}, out.dtype());
      row_dots(delta.data<T>(), out.data<T>(), dO.data<T>(), d);
      attention_backward(qkv.grad_buffer().template data<T>(), qkv.data<T>(), dO.data<T>(), lse.data<T>(),
                         delta.data<T>(), d, dr, per_head, static_cast<T>(scale));
    });
  });
  return out;
}

}  // namespace seqmix
