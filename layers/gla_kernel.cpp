// gla_chunk_attention (layers/gla.h): the chunked recurrence of gated linear attention,
// forward and backward side by side. Backward accumulates (+=) into gradient buffers
// (the tape zeroes them once per step) and skips inputs that need no gradient.
//
// Notation for one (batch, head) and one chunk of n <= 64 positions i = 0..n-1:
//   g_i   = logsigmoid(u_i) / N            (dk, <= 0), u the gate logits, N the normaliser
//   b_i   = g_0 + ... + g_i                (cumulative log-gate inside the chunk, non-increasing)
//   G     = b_{n-1}                        (the chunk's total log-decay)
//   q^_i  = scale * q_i
//   S0    = state entering the chunk, S1 = state leaving it (dk x dv)
// Then, exactly as the step-by-step recurrence,
//   o_i = (q^_i * e^{b_i})^T S0 + sum_{j<=i} A_ij v_j,   A_ij = sum_d q^_id k_jd e^{b_id - b_jd}
//   S1  = diag(e^G) S0 + sum_j (k_j * e^{G - b_j}) v_j^T.
// Every exponent above is <= 0 (b is non-increasing and j <= i), so nothing can
// overflow however strong the gates are. A is computed in sub-chunks of 16: for
// rows in sub-chunk I (first row I0) and columns j < I0,
//   e^{b_i - b_I0} * e^{b_I0 - b_j} = e^{b_i - b_j},   both factors <= 1,
// so that block is a plain product of rescaled q and k; inside the diagonal 16x16
// block the decay is formed pairwise. Only the states entering each chunk are kept
// for the backward; everything inside a chunk is recomputed.
//
// The decays inside a sub-chunk, and to a sub-chunk's first row, are running products
// of a = e^g over the positions between j and i (at most 63 factors, each <= 1: a
// relative error of a few 1e-7 in float32, and one multiply where an exp would cost
// twenty operations). e^{b_i} and e^{G - b_j} are exps of sums taken over the
// positions in between only (b, and a reverse cumulative sum for G - b_j), never the
// difference of two cumulative sums: after a run of strong gates b is large (|b| ~ 1e4
// in float32 has an ulp of 1e-3), and a difference would lose the small exponents of
// the weak gates that follow.
//
// The chunk-sized products (o = (q^ e^b) S0, o += A v, the state update and their
// backward twins) go through chunk_gemm (core's gemm_ld, oneDNN's sgemm); the sub-chunk
// scores are plain loops over dk that vectorise.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/gemm.h"
#include "core/tape.h"
#include "layers/gla_kernel.h"
#include "layers/gla_math.h"

namespace seqmix {

namespace {

using gla_math::exp_nonpos;
using gla_math::flush_tiny;
using gla_math::log_sigmoid;
using gla_math::sigmoid_neg;

constexpr int64_t C = kGlaChunk;
constexpr int64_t kSub = kGlaSubChunk;

struct GlaDims {
  int64_t B, L, H, dk, dv, nc;  // nc: number of chunks
};

// Below about 2^18 multiply-adds a parallel region costs more than it saves (a fork
// and a barrier, and on a loaded machine a wait for a descheduled thread), so small
// problems, such as every evaluation of a gradient check, run on one thread.
constexpr int64_t kParallelWork = int64_t(1) << 18;

int64_t chunk_work(const GlaDims& d) { return d.B * d.H * d.L * (d.dk * d.dv + C * (d.dk + d.dv)); }

// Chunk-sized products C (M x N) (+)= op(A) op(B), row-major and dense, with the
// transposes of core/gemm.h's GemmShape (batch 1), through core's gemm_ld: for float32
// oneDNN's sgemm, at 64 x 64 x 32 3-7 times faster than plain SSE loops and
// single-threaded inside the parallel loop, with no per-shape primitive to look up;
// for float64 a serial loop, so that no parallel region opens for each small product.
template <class T>
void chunk_gemm(const GemmShape& s, const T* A, const T* B, T* Cm, bool accumulate) {
  gemm_ld(s.trans_a, s.trans_b, s.M, s.N, s.K, T(1), A, s.trans_a ? s.M : s.K, B, s.trans_b ? s.K : s.N,
          accumulate ? T(1) : T(0), Cm, s.N);
}

// Scratch for one chunk of one (batch, head); one per thread. Rows are positions.
template <class T>
struct ChunkWork {
  int64_t dk, dv;
  // (C, dk): q^, k, g, a = e^g, b, rs = G - b, e^b, e^rs, q^ e^b, k e^rs, dg/du (backward).
  std::vector<T> q, k, g, a, b, rs, eb, er, qe, kd, dsig;
  std::vector<T> eq, qr, ek, kr;  // (C, dk): sub-chunk rescalings, see chunk_scores
  std::vector<T> v, o, dO, dv_;   // (C, dv)
  std::vector<T> dq, dk_, db, tq; // (C, dk): gradients and a GEMM result
  std::vector<T> A, dA;           // (n, n), dense with row stride n
  std::vector<T> S, dS;           // (dk, dv)
  std::vector<T> run, tmp;        // (dk)
  ChunkWork(int64_t dk_in, int64_t dv_in, bool backward) : dk(dk_in), dv(dv_in) {
    for (auto* p : {&q, &k, &g, &a, &b, &rs, &eb, &er, &qe, &kd, &eq, &qr, &ek, &kr}) p->assign(C * dk, T(0));
    for (auto* p : {&v, &o}) p->assign(C * dv, T(0));
    A.assign(C * C, T(0));
    S.assign(dk * dv, T(0));
    run.assign(dk, T(0));
    tmp.assign(dk, T(0));
    if (backward) {
      for (auto* p : {&dsig, &dq, &dk_, &db, &tq}) p->assign(C * dk, T(0));
      for (auto* p : {&dO, &dv_}) p->assign(C * dv, T(0));
      dA.assign(C * C, T(0));
      dS.assign(dk * dv, T(0));
    }
  }
};

// Copies positions [t0, t0+n) of head h of sequence bb into the chunk buffers, forms
// the log-gate g (logsigmoid and the normaliser fused here; in the backward also
// dg/du = sigmoid(-u) / N), its inclusive cumulative sum b, its exclusive reverse
// cumulative sum rs_j = G - b_j, and the decays to and from the chunk boundaries.
// q, k, u: (B, L, H*dk); v: (B, L, H*dv).
template <class T>
void load_chunk(ChunkWork<T>& w, const T* q, const T* k, const T* v, const T* u, const GlaDims& d, int64_t bb,
                int64_t h, int64_t t0, int64_t n, T scale, T norm, bool backward) {
  const int64_t dk = d.dk, dv = d.dv, Dk = d.H * dk, Dv = d.H * dv;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = bb * d.L + t0 + i;
    const T* qi = q + row * Dk + h * dk;
    const T* ki = k + row * Dk + h * dk;
    const T* ui = u + row * Dk + h * dk;
    T* Q = &w.q[i * dk];
    T* Gi = &w.g[i * dk];
#pragma omp simd
    for (int64_t x = 0; x < dk; ++x) {
      Q[x] = scale * qi[x];
      Gi[x] = log_sigmoid(ui[x]) / norm;
    }
    if (backward) {
      T* ds = &w.dsig[i * dk];
#pragma omp simd
      for (int64_t x = 0; x < dk; ++x) ds[x] = sigmoid_neg(ui[x]) / norm;
    }
    std::copy(ki, ki + dk, &w.k[i * dk]);
    std::copy(v + row * Dv + h * dv, v + row * Dv + h * dv + dv, &w.v[i * dv]);
  }
  std::copy(w.g.begin(), w.g.begin() + dk, w.b.begin());
  for (int64_t i = 1; i < n; ++i)
#pragma omp simd
    for (int64_t x = 0; x < dk; ++x) w.b[i * dk + x] = w.b[(i - 1) * dk + x] + w.g[i * dk + x];
  std::fill(w.rs.data() + (n - 1) * dk, w.rs.data() + n * dk, T(0));
  for (int64_t i = n - 2; i >= 0; --i)
#pragma omp simd
    for (int64_t x = 0; x < dk; ++x) w.rs[i * dk + x] = w.rs[(i + 1) * dk + x] + w.g[(i + 1) * dk + x];
  const T *Q = w.q.data(), *K = w.k.data(), *G = w.g.data(), *B = w.b.data(), *R = w.rs.data();
  T *a = w.a.data(), *eb = w.eb.data(), *er = w.er.data(), *qe = w.qe.data(), *kd = w.kd.data();
#pragma omp simd
  for (int64_t i = 0; i < n * dk; ++i) {
    a[i] = exp_nonpos(G[i]);
    eb[i] = exp_nonpos(B[i]);
    er[i] = exp_nonpos(R[i]);
    qe[i] = Q[i] * eb[i];
    kd[i] = K[i] * er[i];
  }
}

// Scores A_ij (j <= i, zero above the diagonal) of the chunk, and in the backward also
// the intra-chunk parts of dq^ and dk given dA (rows of A and dA have stride n):
//   dq^_i += sum_{j<=i} dA_ij k_j * e^{b_i - b_j},   dk_j += sum_{i>=j} dA_ij q^_i * e^{b_i - b_j}.
// Off-diagonal sub-chunk blocks use qr_i = q^_i e^{b_i - b_I0}, kr_j = k_j e^{b_I0 - b_j}:
//   A_ij = qr_i . kr_j,  dq^_i += e^{b_i - b_I0} * sum_j dA_ij kr_j,  dk_j += e^{b_I0 - b_j} * sum_i dA_ij qr_i.
template <class T, bool kBackward>
void chunk_scores(ChunkWork<T>& w, int64_t n) {
  const int64_t dk = w.dk;
  T* tmp = w.tmp.data();
  T* run = w.run.data();  // a running product of a = e^g: the decay
  for (int64_t I0 = 0; I0 < n; I0 += kSub) {
    const int64_t I1 = std::min(n, I0 + kSub);
    // eq_i = e^{b_i - b_I0}: the product of a over (I0, i].
    std::fill(run, run + dk, T(1));
    for (int64_t i = I0; i < I1; ++i) {
      const T* Ai = &w.a[i * dk];
      const T* Q = &w.q[i * dk];
      T* eq = &w.eq[i * dk];
      T* qr = &w.qr[i * dk];
      if (i > I0)
#pragma omp simd
        for (int64_t x = 0; x < dk; ++x) run[x] = flush_tiny(run[x] * Ai[x]);
#pragma omp simd
      for (int64_t x = 0; x < dk; ++x) {
        eq[x] = run[x];
        qr[x] = Q[x] * run[x];
      }
    }
    // ek_j = e^{b_I0 - b_j}: the product of a over (j, I0], for j < I0.
    std::fill(run, run + dk, T(1));
    for (int64_t j = I0 - 1; j >= 0; --j) {
      const T* An = &w.a[(j + 1) * dk];
      const T* K = &w.k[j * dk];
      T* ek = &w.ek[j * dk];
      T* kr = &w.kr[j * dk];
#pragma omp simd
      for (int64_t x = 0; x < dk; ++x) {
        run[x] = flush_tiny(run[x] * An[x]);
        ek[x] = run[x];
        kr[x] = K[x] * run[x];
      }
    }
    for (int64_t i = I0; i < I1; ++i) {
      const T* qr = &w.qr[i * dk];
      T* Ai = &w.A[i * n];
      for (int64_t j = 0; j < I0; ++j) {
        const T* kr = &w.kr[j * dk];
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t x = 0; x < dk; ++x) acc += qr[x] * kr[x];
        Ai[j] = acc;
      }
    }
    if constexpr (kBackward) {
      for (int64_t i = I0; i < I1 && I0 > 0; ++i) {
        const T* dAi = &w.dA[i * n];
        std::fill(tmp, tmp + dk, T(0));
        for (int64_t j = 0; j < I0; ++j) {
          const T a = dAi[j];
          const T* kr = &w.kr[j * dk];
#pragma omp simd
          for (int64_t x = 0; x < dk; ++x) tmp[x] += a * kr[x];
        }
        const T* eq = &w.eq[i * dk];
        T* dq = &w.dq[i * dk];
#pragma omp simd
        for (int64_t x = 0; x < dk; ++x) dq[x] += eq[x] * tmp[x];
      }
      for (int64_t j = 0; j < I0; ++j) {
        std::fill(tmp, tmp + dk, T(0));
        for (int64_t i = I0; i < I1; ++i) {
          const T a = w.dA[i * n + j];
          const T* qr = &w.qr[i * dk];
#pragma omp simd
          for (int64_t x = 0; x < dk; ++x) tmp[x] += a * qr[x];
        }
        const T* ek = &w.ek[j * dk];
        T* dkj = &w.dk_[j * dk];
#pragma omp simd
        for (int64_t x = 0; x < dk; ++x) dkj[x] += ek[x] * tmp[x];
      }
    }
    // Diagonal block, pairwise decays e^{b_i - b_j} <= 1: j runs down from i, and the
    // decay multiplies in a over (j, i].
    for (int64_t i = I0; i < I1; ++i) {
      const T* Q = &w.q[i * dk];
      T* Ai = &w.A[i * n];
      std::fill(run, run + dk, T(1));
      for (int64_t j = i; j >= I0; --j) {
        const T* K = &w.k[j * dk];
        if (j < i) {
          const T* An = &w.a[(j + 1) * dk];
#pragma omp simd
          for (int64_t x = 0; x < dk; ++x) run[x] = flush_tiny(run[x] * An[x]);
        }
        T acc = 0;
        if constexpr (kBackward) {
          const T da = w.dA[i * n + j];
          T* dq = &w.dq[i * dk];
          T* dkj = &w.dk_[j * dk];
#pragma omp simd reduction(+ : acc)
          for (int64_t x = 0; x < dk; ++x) {
            acc += Q[x] * K[x] * run[x];
            dq[x] += da * K[x] * run[x];
            dkj[x] += da * Q[x] * run[x];
          }
        } else {
#pragma omp simd reduction(+ : acc)
          for (int64_t x = 0; x < dk; ++x) acc += Q[x] * K[x] * run[x];
        }
        Ai[j] = acc;
      }
      std::fill(Ai + i + 1, Ai + n, T(0));  // causal: o_i += A_i. v sees no later position
    }
  }
}

// Rows of M (dk, dv) scaled by e^G, the chunk's total decay (eG: (dk)).
template <class T>
void scale_rows(T* M, const T* eG, int64_t dk, int64_t dv) {
  for (int64_t x = 0; x < dk; ++x) {
    const T s = eG[x];
#pragma omp simd
    for (int64_t e = 0; e < dv; ++e) M[x * dv + e] *= s;
  }
}

// Forward over every (batch, head). o: (B, L, H*dv); states: (B*H, nc, dk, dv), the
// state entering each chunk, or null when no backward will run.
template <class T>
void gla_chunk_forward(T* o, T* states, const T* q, const T* k, const T* v, const T* u, const GlaDims& d, T scale,
                       T norm) {
  const int64_t dk = d.dk, dv = d.dv, Dv = d.H * dv;
#pragma omp parallel if (chunk_work(d) >= kParallelWork)
  {
    ChunkWork<T> w(dk, dv, false);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
      const int64_t bb = bh / d.H, h = bh % d.H;
      T* S = w.S.data();
      std::fill(w.S.begin(), w.S.end(), T(0));
      for (int64_t c = 0; c < d.nc; ++c) {
        const int64_t t0 = c * C, n = std::min(C, d.L - t0);
        if (states) std::copy(w.S.begin(), w.S.end(), states + (bh * d.nc + c) * dk * dv);
        load_chunk(w, q, k, v, u, d, bb, h, t0, n, scale, norm, false);
        // Inter-chunk part: o = (q^ e^b) S0 (S0 = 0 in the first chunk).
        if (c == 0)
          std::fill(w.o.begin(), w.o.begin() + n * dv, T(0));
        else
          chunk_gemm(GemmShape{1, n, dv, dk, false, false}, w.qe.data(), S, w.o.data(), false);
        chunk_scores<T, false>(w, n);
        // Intra-chunk part: o += A v (A is lower triangular).
        chunk_gemm(GemmShape{1, n, dv, n, false, false}, w.A.data(), w.v.data(), w.o.data(), true);
        for (int64_t i = 0; i < n; ++i)
          std::copy(&w.o[i * dv], &w.o[i * dv] + dv, o + (bb * d.L + t0 + i) * Dv + h * dv);
        // S1 = diag(e^G) S0 + (k e^{G-b})^T v; the state after the last chunk is not needed.
        if (c + 1 < d.nc) {
          scale_rows(S, &w.eb[(n - 1) * dk], dk, dv);
          chunk_gemm(GemmShape{1, dk, dv, n, true, false}, w.kd.data(), w.v.data(), S, true);
        }
      }
    }
  }
}

// Backward. dS is the gradient of the loss with respect to the state leaving the
// current chunk (zero after the last chunk), carried from the last chunk to the first:
//   dS0 = diag(e^G) dS1 + sum_i (q^_i e^{b_i}) do_i^T.
// Inside a chunk, with dA_ij = do_i . v_j (j <= i):
//   dv_j  = sum_{i>=j} A_ij do_i + (k_j e^{G - b_j})^T dS1
//   dq^_i = e^{b_i} * (S0 do_i) + sum_{j<=i} dA_ij k_j e^{b_i - b_j}
//   dk_j  = e^{G - b_j} * (dS1 v_j) + sum_{i>=j} dA_ij q^_i e^{b_i - b_j}
// The log-gate: every e^{b_i} or e^{b_i - b_j} carries q^_i or k_j along with it, so
// d/db_i collects +q^_i * dq^_i from each factor e^{+b_i} and -k_i * dk_i from each
// e^{-b_i}; G = b_{n-1} also scales S0 and every state contribution, which sum to S1:
//   db_i = q^_i * dq^_i - k_i * dk_i  (+ rowsum(S1 * dS1) for i = n-1).
// b_i = g_0 + ... + g_i, so dg_j = sum_{i>=j} db_i (a reverse cumulative sum), and
// du = dg * sigmoid(-u) / N. Finally dq = scale * dq^.
// Outputs (+=, null when not wanted): dq_out, dk_out, du_out (B, L, H*dk), dv_out (B, L, H*dv).
template <class T>
void gla_chunk_backward(T* dq_out, T* dk_out, T* dv_out, T* du_out, const T* dO, const T* states, const T* q,
                        const T* k, const T* v, const T* u, const GlaDims& d, T scale, T norm) {
  const int64_t dk = d.dk, dv = d.dv, Dk = d.H * dk, Dv = d.H * dv;
#pragma omp parallel if (chunk_work(d) >= kParallelWork)
  {
    ChunkWork<T> w(dk, dv, true);
#pragma omp for schedule(static)
    for (int64_t bh = 0; bh < d.B * d.H; ++bh) {
      const int64_t bb = bh / d.H, h = bh % d.H;
      T* dS = w.dS.data();
      std::fill(w.dS.begin(), w.dS.end(), T(0));
      for (int64_t c = d.nc - 1; c >= 0; --c) {
        const int64_t t0 = c * C, n = std::min(C, d.L - t0);
        const T* S0 = states + (bh * d.nc + c) * dk * dv;
        const bool has_next = c + 1 < d.nc;  // dS1 = 0 after the last chunk
        const T* S1 = has_next ? states + (bh * d.nc + c + 1) * dk * dv : nullptr;
        load_chunk(w, q, k, v, u, d, bb, h, t0, n, scale, norm, true);
        for (int64_t i = 0; i < n; ++i) {
          const T* src = dO + (bb * d.L + t0 + i) * Dv + h * dv;
          std::copy(src, src + dv, &w.dO[i * dv]);
        }
        std::fill(w.dq.begin(), w.dq.end(), T(0));
        std::fill(w.dk_.begin(), w.dk_.end(), T(0));
        // dA = do v^T (only j <= i is read).
        chunk_gemm(GemmShape{1, n, n, dv, false, true}, w.dO.data(), w.v.data(), w.dA.data(), false);
        chunk_scores<T, true>(w, n);
        // dv = A^T do.
        chunk_gemm(GemmShape{1, n, dv, n, true, false}, w.A.data(), w.dO.data(), w.dv_.data(), false);
        if (c > 0) {  // dq^ += e^b * (do S0^T); S0 = 0 in the first chunk
          chunk_gemm(GemmShape{1, n, dk, dv, false, true}, w.dO.data(), S0, w.tq.data(), false);
#pragma omp simd
          for (int64_t i = 0; i < n * dk; ++i) w.dq[i] += w.eb[i] * w.tq[i];
        }
        if (has_next) {
          // dk += e^{G-b} * (v dS1^T);  dv += (k e^{G-b}) dS1.
          chunk_gemm(GemmShape{1, n, dk, dv, false, true}, w.v.data(), dS, w.tq.data(), false);
#pragma omp simd
          for (int64_t i = 0; i < n * dk; ++i) w.dk_[i] += w.er[i] * w.tq[i];
          chunk_gemm(GemmShape{1, n, dv, dk, false, false}, w.kd.data(), dS, w.dv_.data(), true);
        }
        // db, then dg by a reverse cumulative sum (in place in db).
#pragma omp simd
        for (int64_t i = 0; i < n * dk; ++i) w.db[i] = w.q[i] * w.dq[i] - w.k[i] * w.dk_[i];
        if (has_next) {
          for (int64_t x = 0; x < dk; ++x) {
            const T* S1x = S1 + x * dv;
            const T* dSx = dS + x * dv;
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int64_t e = 0; e < dv; ++e) acc += S1x[e] * dSx[e];
            w.db[(n - 1) * dk + x] += acc;
          }
        }
        for (int64_t i = n - 2; i >= 0; --i)
#pragma omp simd
          for (int64_t x = 0; x < dk; ++x) w.db[i * dk + x] += w.db[(i + 1) * dk + x];
        // dS0 = diag(e^G) dS1 + (q^ e^b)^T do, after every use of dS1 above.
        if (c > 0) {
          scale_rows(dS, &w.eb[(n - 1) * dk], dk, dv);
          chunk_gemm(GemmShape{1, dk, dv, n, true, false}, w.qe.data(), w.dO.data(), dS, true);
        }
        // Scatter (+=) into the gradient buffers of the inputs that want them.
        for (int64_t i = 0; i < n; ++i) {
          const int64_t row = bb * d.L + t0 + i;
          if (dq_out) {
            T* dst = dq_out + row * Dk + h * dk;
#pragma omp simd
            for (int64_t x = 0; x < dk; ++x) dst[x] += scale * w.dq[i * dk + x];
          }
          if (dk_out) {
            T* dst = dk_out + row * Dk + h * dk;
#pragma omp simd
            for (int64_t x = 0; x < dk; ++x) dst[x] += w.dk_[i * dk + x];
          }
          if (dv_out) {
            T* dst = dv_out + row * Dv + h * dv;
#pragma omp simd
            for (int64_t e = 0; e < dv; ++e) dst[e] += w.dv_[i * dv + e];
          }
          if (du_out) {
            T* dst = du_out + row * Dk + h * dk;
#pragma omp simd
            for (int64_t x = 0; x < dk; ++x) dst[x] += w.db[i * dk + x] * w.dsig[i * dk + x];
          }
        }
      }
    }
  }
}

}  // namespace

Tensor gla_chunk_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate_logits,
                           int64_t num_heads, double scale, double gate_logit_normalizer) {
  const char* op = "gla_chunk_attention";
  check_same_dtype(op, {&q, &k, &v, &gate_logits});
  if (q.ndim() != 3) throw ShapeError(std::string(op) + ": q must be (B, L, H*dk), got " + shape_str(q.shape()));
  const int64_t B = q.size(0), L = q.size(1), Dk = q.size(2);
  check_shape(op, "k", k, q.shape());
  check_shape(op, "gate_logits", gate_logits, q.shape());
  if (v.ndim() != 3 || v.size(0) != B || v.size(1) != L)
    throw ShapeError(std::string(op) + ": v must be (" + std::to_string(B) + ", " + std::to_string(L) +
                     ", H*dv), got " + shape_str(v.shape()));
  const int64_t Dv = v.size(2);
  if (num_heads <= 0 || Dk % num_heads != 0 || Dv % num_heads != 0 || Dk == 0 || Dv == 0)
    throw ShapeError(std::string(op) + ": num_heads " + std::to_string(num_heads) +
                     " must divide the key width " + std::to_string(Dk) + " and the value width " +
                     std::to_string(Dv) + " (both positive)");
  if (!(gate_logit_normalizer > 0))
    throw ShapeError(std::string(op) + ": gate_logit_normalizer must be positive, got " +
                     std::to_string(gate_logit_normalizer));
  const GlaDims d{B, L, num_heads, Dk / num_heads, Dv / num_heads, (L + C - 1) / C};
  const bool need_grad = any_requires_grad({&q, &k, &v, &gate_logits});
  Tensor o = Tensor::empty({B, L, Dv}, q.dtype());
  // The states entering each chunk: all that is kept besides the inputs.
  Tensor states = need_grad ? Tensor::empty({B * d.H, d.nc, d.dk, d.dv}, q.dtype()) : Tensor();
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    gla_chunk_forward<T>(o.data<T>(), need_grad ? states.data<T>() : nullptr, q.data<T>(), k.data<T>(), v.data<T>(),
                         gate_logits.data<T>(), d, T(scale), T(gate_logit_normalizer));
  });
  if (!need_grad) return o;
  record({&o}, [q, k, v, gate_logits, states, d, scale, gate_logit_normalizer](const std::vector<Tensor>& g) {
    dispatch_float(q.dtype(), "gla_chunk_attention backward", [&](auto tag) {
      using T = decltype(tag);
      auto buf = [](const Tensor& t) { return t.requires_grad() ? t.grad_buffer().template data<T>() : nullptr; };
      gla_chunk_backward<T>(buf(q), buf(k), buf(v), buf(gate_logits), g[0].data<T>(), states.data<T>(),
                            q.data<T>(), k.data<T>(), v.data<T>(), gate_logits.data<T>(), d, T(scale),
                            T(gate_logit_normalizer));
    });
  });
  return o;
}

}  // namespace seqmix
