// Raw GEMM kernels shared by the matmul op and by fused layer kernels.
//
// C[b] (M x N) (+)= op(A[b]) op(B[b]) for b < batch, row-major, where op(A) is A
// (M x K, leading dimension K) or, with trans_a, A^T of a stored (K x M) matrix;
// likewise B is (K x N) or, with trans_b, a stored (N x K). batch_stride_b = 0
// shares one B across the batch. accumulate adds into C (backward passes).
#pragma once

#include <cstdint>

namespace seqmix {

struct GemmShape {
  int64_t batch = 1;
  int64_t M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  int64_t batch_stride_a = -1;  // -1: dense (M*K)
  int64_t batch_stride_b = -1;  // -1: dense (K*N); 0: shared
  int64_t batch_stride_c = -1;  // -1: dense (M*N)
};

// float32 through oneDNN's matmul primitive (primitives cached by shape).
void gemm(const GemmShape& s, const float* A, const float* B, float* C, bool accumulate);
// float64 and the float32 test oracle: plain loops, OpenMP over rows.
void gemm(const GemmShape& s, const double* A, const double* B, double* C, bool accumulate);
void gemm_naive(const GemmShape& s, const float* A, const float* B, float* C, bool accumulate);

// Thread safety: gemm() may be called from several threads at once (each thread brings its
// own oneDNN scratchpad; see gemm.cpp). Inside a parallel region it runs on the calling
// thread.
//
// One small product with leading dimensions, for fused kernels that read operands in place
// (heads side by side in a row) from inside their own OpenMP loops, and for shapes that
// change at every call (a KV cache), where gemm()'s per-shape primitives do not pay:
// C (M x N, leading dimension ldc) = alpha op(A) op(B) + beta C, row-major, where op(A)
// (M x K) is A stored (M x K), or (K x M) with ta, leading dimension lda; likewise op(B)
// (K x N) from B stored (K x N), or (N x K) with tb. beta = 0 ignores C. float32 calls
// oneDNN's dnnl_sgemm (safe concurrently; single-threaded inside a parallel region);
// float64 is a serial plain loop, for the gradient checks.
void gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc);
void gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
             const double* B, int64_t ldb, double beta, double* C, int64_t ldc);

}  // namespace seqmix
