// gla_chunk_attention (layers/gla.h): the recurrence of gated linear attention in two
// forms, each with its forward and backward side by side: the chunked form (chunks of 64
// positions, below) and the recurrent form (step by step, further down), chosen by the
// head size (kRecurrentState). Backward accumulates (+=) into gradient buffers (the tape
// zeroes them once per step) and skips inputs that need no gradient.
//
// Why two: the chunked form does about C/2 (dk + dv) multiply-adds per position and head
// in chunk-sized products, the recurrent form 2 dk dv forward (about 7 dk dv backward) in
// loops over dv. At small heads (the Zoology study: dk 4..16, dv 8..32) the recurrent form
// does less work and has no per-chunk overhead: one thread, B=64, L=64, H=4, dk 4, dv 8,
// forward+backward 1.0 ms against the chunked form's 16.8 (bench/bench_gla.cpp). It stays
// ahead up to dk dv = 4096 (dk = dv = 64); above that its state no longer fits the caches.
// Both keep only the states entering each chunk of 64 positions for the backward, and
// both give the same results for any number of threads.
//
// ---------------- the chunked form ----------------
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

// ---------------- the recurrent form ----------------
//
// S_t = diag(a_t) S_{t-1} + k_t v_t^T,  o_t = q^_t^T S_t, one step at a time as the
// definition (and as GlaMixer::step), for every head of a sequence together. The state
// is (H, dk, dv), row x of head h holding the dv value channels, so every loop runs over
// dv along the rows of v, o and do as they lie in memory; q, k and a enter one scalar at
// a time, and nothing is transposed or reduced in the forward.
//
// Exponents: no e^{b_i - b_j} is formed at all. Each step multiplies the state (or, in
// the backward, its gradient) by that step's a = e^g <= 1, with g from the gate logit
// alone, so decays are running products of factors <= 1, as in the chunked form, and
// nothing can overflow however strong the gates are.
//
// The forward keeps the state entering every chunk of C steps, (B, nc, H, dk, dv): as
// many numbers as the chunked form keeps. The backward recomputes one chunk's states
// from it with the forward's arithmetic (step_heads), then runs the steps in reverse.

// The backward's dot products over dv run in kW lanes of partial sums (one 256-bit vector
// of float), added up at the end in a fixed order.
constexpr int64_t kW = 8;

template <class T>
T sum_w(const T* p) {
  return ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
}

// a[i] = e^{g_i} for a row of gate logits, with the same logsigmoid and exp as the
// chunked form and the recurrent step of layers/gla.cpp; also dg/du when ds is non-null.
template <class T>
void gate_row(T* a, T* ds, const T* u, int64_t n, T norm) {
  if (ds) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) ds[i] = sigmoid_neg(u[i]) / norm;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) a[i] = exp_nonpos(log_sigmoid(u[i]) / norm);
}

// S_new = diag(a) S_old + k v^T for every head (S_new may be S_old); a, k: (H*dk),
// v: (H*dv), S: (H, dk, dv). With o non-null also o = (scale q)^T S_new, o: (H*dv).
template <class T, int64_t kDv>
void step_heads(T* Snew, const T* Sold, const T* q, const T* k, const T* a, const T* v, T* o, const GlaDims& d,
                T scale) {
  const int64_t dk = d.dk, dv = kDv ? kDv : d.dv;
  if (o) std::fill(o, o + d.H * dv, T(0));
  for (int64_t h = 0; h < d.H; ++h) {
    const T* vh = v + h * dv;
    T* oh = o ? o + h * dv : nullptr;
    for (int64_t x = 0; x < dk; ++x) {
      const int64_t i = h * dk + x;
      const T ax = a[i], kx = k[i];
      const T* so = Sold + i * dv;
      T* sn = Snew + i * dv;
      if (oh) {
        const T qx = scale * q[i];
#pragma omp simd
        for (int64_t e = 0; e < dv; ++e) {
          const T s = ax * so[e] + kx * vh[e];
          sn[e] = s;
          oh[e] += qx * s;
        }
      } else {
#pragma omp simd
        for (int64_t e = 0; e < dv; ++e) sn[e] = ax * so[e] + kx * vh[e];
      }
    }
  }
}

// Multiply-adds of the recurrent forward: below kParallelWork it runs on one thread.
int64_t recurrent_work(const GlaDims& d) { return d.B * d.L * d.H * d.dk * d.dv; }

// Forward, one sequence per task (all its heads: a task reads whole rows). o: (B, L, H*dv);
// states: (B, nc, H, dk, dv), the state entering each segment of C steps, or null when no
// backward will run.
template <class T, int64_t kDv>
void gla_recurrent_forward(T* o, T* states, const T* q, const T* k, const T* v, const T* u, const GlaDims& d,
                           T scale, T norm) {
  const int64_t Dk = d.H * d.dk, Dv = d.H * d.dv, state = d.H * d.dk * d.dv;
#pragma omp parallel if (d.B > 1 && recurrent_work(d) >= kParallelWork)
  {
    std::vector<T> S(state), a(Dk);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < d.B; ++b) {
      std::fill(S.begin(), S.end(), T(0));
      for (int64_t t = 0; t < d.L; ++t) {
        if (states && t % C == 0) std::copy(S.begin(), S.end(), states + (b * d.nc + t / C) * state);
        const int64_t row = b * d.L + t;
        gate_row(a.data(), static_cast<T*>(nullptr), u + row * Dk, Dk, norm);
        step_heads<T, kDv>(S.data(), S.data(), q + row * Dk, k + row * Dk, a.data(), v + row * Dv, o + row * Dv, d,
                           scale);
      }
    }
  }
}

// Backward, the reverse-mode recurrence from the last step to the first; dS is the
// gradient with respect to S_t, collected from the later steps:
//   G = dS + q^_t do_t^T;  dq^_t = S_t do_t;  dk_t = G v_t;  dv_t = G^T k_t;
//   dg_t = a_t * rowsum(G * S_{t-1})  (g = log a);  dS = diag(a_t) G  (w.r.t. S_{t-1}).
// du = dg * sigmoid(-u) / N, dq = scale * dq^. Each segment first recomputes its
// states S_t from its checkpoint with the forward's arithmetic (step_heads).
// Outputs (+=, null when not wanted): dq_out, dk_out, du_out (B, L, H*dk), dv_out (B, L, H*dv).
template <class T, int64_t kDv>
void gla_recurrent_backward(T* dq_out, T* dk_out, T* dv_out, T* du_out, const T* dO, const T* states, const T* q,
                            const T* k, const T* v, const T* u, const GlaDims& d, T scale, T norm) {
  const int64_t dk = d.dk, dv = kDv ? kDv : d.dv, Dk = d.H * dk, Dv = d.H * dv, state = d.H * dk * dv;
#pragma omp parallel if (d.B > 1 && recurrent_work(d) >= kParallelWork)
  {
    // Sseg[0] is the checkpoint, Sseg[1 + t - t0] = S_t; a and dg/du of the segment's rows.
    std::vector<T> Sseg((C + 1) * state), dSv(state), aseg(C * Dk), dsseg(C * Dk), dvrow(Dv);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < d.B; ++b) {
      T* dS = dSv.data();
      std::fill(dSv.begin(), dSv.end(), T(0));
      for (int64_t c = d.nc - 1; c >= 0; --c) {
        const int64_t t0 = c * C, t1 = std::min(d.L, t0 + C);
        const T* S0 = states + (b * d.nc + c) * state;
        std::copy(S0, S0 + state, Sseg.begin());
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t row = b * d.L + t;
          T* a = &aseg[(t - t0) * Dk];
          gate_row(a, &dsseg[(t - t0) * Dk], u + row * Dk, Dk, norm);
          step_heads<T, kDv>(&Sseg[(t - t0 + 1) * state], &Sseg[(t - t0) * state], q + row * Dk, k + row * Dk, a,
                             v + row * Dv, static_cast<T*>(nullptr), d, scale);
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t row = b * d.L + t;
          const T* St = &Sseg[(t - t0 + 1) * state];
          const T* Sp = &Sseg[(t - t0) * state];
          const T* a = &aseg[(t - t0) * Dk];
          const T* ds = &dsseg[(t - t0) * Dk];
          const T *qr = q + row * Dk, *kr = k + row * Dk, *vr = v + row * Dv, *dor = dO + row * Dv;
          T* dvr = dvrow.data();
          std::fill(dvr, dvr + Dv, T(0));
          for (int64_t h = 0; h < d.H; ++h) {
            const T* vh = vr + h * dv;
            const T* doh = dor + h * dv;
            T* dvh = dvr + h * dv;
            for (int64_t x = 0; x < dk; ++x) {
              const int64_t i = h * dk + x;
              const T ax = a[i], kx = kr[i], qx = scale * qr[i];
              T* g = dS + i * dv;
              const T* st = St + i * dv;
              const T* sp = Sp + i * dv;
              // Three dot products over dv (dq^, dk, dg) beside the updates of dv and dS.
              T pq[kW] = {}, pk[kW] = {}, pa[kW] = {};
              int64_t e0 = 0;
              for (; e0 + kW <= dv; e0 += kW) {
#pragma omp simd
                for (int64_t l = 0; l < kW; ++l) {
                  const int64_t e = e0 + l;
                  const T ge = g[e] + qx * doh[e];
                  pq[l] += st[e] * doh[e];
                  pk[l] += ge * vh[e];
                  pa[l] += ge * sp[e];
                  dvh[e] += ge * kx;
                  g[e] = ax * ge;
                }
              }
              T tq = 0, tk = 0, ta = 0;  // the last dv % kW channels
              for (; e0 < dv; ++e0) {
                const T ge = g[e0] + qx * doh[e0];
                tq += st[e0] * doh[e0];
                tk += ge * vh[e0];
                ta += ge * sp[e0];
                dvh[e0] += ge * kx;
                g[e0] = ax * ge;
              }
              if (dq_out) dq_out[row * Dk + i] += scale * (sum_w(pq) + tq);
              if (dk_out) dk_out[row * Dk + i] += sum_w(pk) + tk;
              if (du_out) du_out[row * Dk + i] += ax * (sum_w(pa) + ta) * ds[i];
            }
          }
          if (dv_out) {
            T* dst = dv_out + row * Dv;
#pragma omp simd
            for (int64_t e = 0; e < Dv; ++e) dst[e] += dvr[e];
          }
        }
      }
    }
  }
}

// The recurrent form up to dk dv = 4096 per head. Forward+backward, one thread, B=8,
// L=1024, CPU ms (bench/bench_gla.cpp --shape): dk 32, dv 64 (4 heads): 45 against the
// chunked form's 85; dk = dv = 64: 86 against 133; dk 64, dv 128: 161 against 158;
// dk = dv = 128 (2 heads): 157 against 125. Past that size the recurrent form streams a
// state larger than the caches every step, where the chunked form's products reuse what
// they load.
constexpr int64_t kRecurrentState = 4096;

// The recurrent form with dv known to the compiler for the usual head widths: the loops
// over dv are then whole vectors, with no loop control or remainder (at dv = 8 that
// control cost more than the arithmetic).
template <class T>
void recurrent_forward(T* o, T* states, const T* q, const T* k, const T* v, const T* u, const GlaDims& d, T scale,
                       T norm) {
  auto f = d.dv == 8 ? gla_recurrent_forward<T, 8>
           : d.dv == 16 ? gla_recurrent_forward<T, 16>
           : d.dv == 32 ? gla_recurrent_forward<T, 32>
           : d.dv == 64 ? gla_recurrent_forward<T, 64>
                        : gla_recurrent_forward<T, 0>;
  f(o, states, q, k, v, u, d, scale, norm);
}

template <class T>
void recurrent_backward(T* dq, T* dk, T* dv, T* du, const T* dO, const T* states, const T* q, const T* k, const T* v,
                        const T* u, const GlaDims& d, T scale, T norm) {
  auto f = d.dv == 8 ? gla_recurrent_backward<T, 8>
           : d.dv == 16 ? gla_recurrent_backward<T, 16>
           : d.dv == 32 ? gla_recurrent_backward<T, 32>
           : d.dv == 64 ? gla_recurrent_backward<T, 64>
                        : gla_recurrent_backward<T, 0>;
  f(dq, dk, dv, du, dO, states, q, k, v, u, d, scale, norm);
}

}  // namespace

Tensor gla_chunk_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& gate_logits,
                           int64_t num_heads, double scale, double gate_logit_normalizer, GlaForm form) {
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
  const bool recurrent =
      form == GlaForm::kRecurrent || (form == GlaForm::kAuto && d.dk * d.dv <= kRecurrentState);
  // The states entering each chunk, (B*H, nc, dk, dv) for the chunked form and (B, nc, H,
  // dk, dv) for the recurrent one: all that is kept besides the inputs.
  Tensor states = need_grad ? Tensor::empty({B * d.H, d.nc, d.dk, d.dv}, q.dtype()) : Tensor();
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    auto run = recurrent ? recurrent_forward<T> : gla_chunk_forward<T>;
    run(o.data<T>(), need_grad ? states.data<T>() : nullptr, q.data<T>(), k.data<T>(), v.data<T>(),
        gate_logits.data<T>(), d, T(scale), T(gate_logit_normalizer));
  });
  if (!need_grad) return o;
  record({&o}, [q, k, v, gate_logits, states, d, scale, gate_logit_normalizer,
                recurrent](const std::vector<Tensor>& g) {
    dispatch_float(q.dtype(), "gla_chunk_attention backward", [&](auto tag) {
      using T = decltype(tag);
      auto buf = [](const Tensor& t) { return t.requires_grad() ? t.grad_buffer().template data<T>() : nullptr; };
      auto run = recurrent ? recurrent_backward<T> : gla_chunk_backward<T>;
      run(buf(q), buf(k), buf(v), buf(gate_logits), g[0].data<T>(), states.data<T>(), q.data<T>(), k.data<T>(),
          v.data<T>(), gate_logits.data<T>(), d, T(scale), T(gate_logit_normalizer));
    });
  });
  return o;
}

}  // namespace seqmix
