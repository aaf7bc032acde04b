// Small row-major GEMMs with leading dimensions, for the fused attention kernels
// (attention_kernel.cpp, linear_attention_kernel.cpp), called from inside their
// OpenMP loops.
//
// float32 goes through oneDNN's dnnl_sgemm: it takes leading dimensions (so the
// kernels read heads in place) and may run concurrently on several threads,
// each call then being single-threaded. core/gemm.h's gemm() cannot be used
// there: it shares one oneDNN primitive, and with it one scratchpad, between
// threads, and returns wrong results when two threads call it at once.
// float64 uses plain loops: it serves the gradient checks.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include <oneapi/dnnl/dnnl.h>

namespace seqmix {

// C (M x N, leading dimension ldc) = alpha op(A) op(B) + beta C, where op(A) is
// (M x K): A stored (M x K), or (K x M) with ta, leading dimension lda; likewise
// op(B) (K x N) from B stored (K x N), or (N x K) with tb. beta = 0 ignores C.
inline void gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success) throw std::runtime_error("gemm_ld: dnnl_sgemm failed with status " + std::to_string(st));
}

inline void gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
                    const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += (ta ? A[k * lda + m] : A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
      C[m * ldc + n] = alpha * acc + (beta == 0.0 ? 0.0 : beta * C[m * ldc + n]);
    }
}

}  // namespace seqmix
