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

}  // namespace seqmix
