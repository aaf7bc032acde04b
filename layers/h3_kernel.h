// The sequence-mixing core of H3 (docs/mixers.md#h3) as two fused differentiable ops,
// plus the recurrent step that shares their inner loops.
//
//   h3_shift_conv: kt = SSM_shift(k), a causal depthwise filter of length N
//                  whose taps f_d[l] = sum_m B[d,m] C[d,m+l] are built from the
//                  parameters inside the op (lag 0 also carries ssm_shift.D).
//   h3_diag_mix:   o[t, h*dh+d2] = sum_d1 q[t,h*dh+d1] * y[t,h,d1,d2], where
//                  y = K_h * kv + D_h kv and kv[t,h,d1,d2] = kt[t,h*dh+d1] v[t,h*dh+d2],
//                  computed with the complex diagonal recurrence for long sequences and
//                  with the materialised kernel K as a Toeplitz GEMM for short ones
//                  (the method note and threshold are in h3_diag.cpp).
//
// The shift op is in h3_shift.cpp, the diagonal op and the recurrent step in h3_diag.cpp,
// the diagonal op's short-sequence (Toeplitz) kernels in h3_diag_toeplitz.cpp.
// Reference twin (plain loops, the tests' oracle): tests/support/reference_h3.h, the whole
// layer as reference_h3_forward / reference_h3_backward and these ops as
// ref_h3_shift_forward / ref_h3_shift_backward and ref_h3_diag_forward / ref_h3_diag_backward.
//
// Both ops record one tape node each; their backward accumulates (+=) into the
// gradient buffers of the inputs and parameters that require a gradient and
// skips the others. Every parameter gradient is exact (no truncated kernel).
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace seqmix {

// The nine SSM parameters of one H3 layer (docs/mixers.md#h3 names in comments), all of
// one float dtype. N = d_state, Nh = N/2 complex modes, H = D/head_dim heads.
struct H3SsmParams {
  Tensor shift_B;     // ssm_shift.B       (D, N)
  Tensor shift_C;     // ssm_shift.C       (D, N)
  Tensor shift_D;     // ssm_shift.D       (D)
  Tensor log_dt;      // ssm_diag.log_dt   (H)
  Tensor inv_A_real;  // ssm_diag.inv_A_real (H, Nh)
  Tensor A_imag;      // ssm_diag.A_imag   (H, Nh)
  Tensor diag_B;      // ssm_diag.B        (H, Nh, 2)  (re, im)
  Tensor diag_C;      // ssm_diag.C        (H, Nh, 2)
  Tensor diag_D;      // ssm_diag.D        (H)
  int64_t head_dim = 1;
};

// Validates the parameter shapes against d_model D; throws ShapeError naming `op`.
void h3_check_params(const char* op, const H3SsmParams& p, int64_t D);

// k: (B, L, D) -> kt: (B, L, D). Differentiable in k, shift_B, shift_C, shift_D.
Tensor h3_shift_conv(const Tensor& k, const H3SsmParams& p);

// How h3_diag_mix computes the diagonal SSM: both methods give the same result to
// rounding; `automatic` takes the faster one for the sizes (h3_diag_method).
enum class H3DiagMethod { automatic, recurrence, toeplitz };

// The method `automatic` uses for batch B, length L, d_state N, head_dim dh (the width
// does not move the crossover: both forms scale with it alike).
H3DiagMethod h3_diag_method(int64_t B, int64_t L, int64_t N, int64_t dh);

// q, kt, v: (B, L, D) -> o: (B, L, D). Differentiable in q, kt, v and the six
// ssm_diag parameters. `method` other than automatic is for tests and benchmarks.
Tensor h3_diag_mix(const Tensor& q, const Tensor& kt, const Tensor& v, const H3SsmParams& p,
                   H3DiagMethod method = H3DiagMethod::automatic);

// Recurrent state of the SSM core for a batch of sequences (no projections):
//   kbuf: (B, N-1, D)      k_{t-1-i} in row i (newest first), zeros before t = 0
//   x:    (B, Nh, 2, C)    the complex diagonal states (re row, im row), C = D*head_dim,
//                          virtual channel c = h*dh*dh + d1*dh + d2. They are kept
//                          as xi = x / Bbar (xi_t = Abar xi_{t-1} + u_t,
//                          y_t = 2 Re(Ct xi_t) + D u_t with Ct = C Bbar): the documented
//                          state up to a constant factor per mode, same size.
//   taps, tables: the shift filter and the discretised diagonal coefficients,
//                 built from the parameters at the first step (t = 0) and reused:
//                 a state decodes with the parameters it started with.
struct H3CoreState {
  Tensor kbuf;
  Tensor x;
  Tensor taps;    // (N, D)
  Tensor tables;  // (4*Nh*C + C)
  int64_t t = 0;
};
H3CoreState h3_core_state(int64_t batch, int64_t D, int64_t N, int64_t head_dim, DType dt);

// One step of both SSMs and the q contraction: q, k, v: (B, D) -> o: (B, D).
// Uses the same inner loops as the parallel ops (so the two forms agree to
// rounding), records nothing, advances the state by one token.
Tensor h3_core_step(H3CoreState& s, const Tensor& q, const Tensor& k, const Tensor& v, const H3SsmParams& p);

// Discretised diagonal SSM per head and mode (double), as docs/mixers.md#h3 writes it:
// Abar = (1 + dtA/2)/(1 - dtA/2), Bbar = B dt/(1 - dtA/2), C as stored.
struct H3DiagCoeffs {
  int64_t H = 0, Nh = 0;
  std::vector<double> ar, ai;  // Abar (H, Nh)
  std::vector<double> br, bi;  // Bbar (H, Nh)
  std::vector<double> cr, ci;  // C    (H, Nh)
  std::vector<double> d;       // D    (H)
};
H3DiagCoeffs h3_diag_coeffs(const H3SsmParams& p);

// Shift filter f_d[l] (D, N) row-major in double, without ssm_shift.D.
std::vector<double> h3_shift_filter(const H3SsmParams& p);

}  // namespace seqmix
