// The fused attention core (layers/attention_kernel.h) at its block boundaries: sequence
// lengths one below, at and one above a block of attention_block_rows() rows and past two
// blocks, a single token, heads whose width (5, 17) is not a multiple of the vector width;
// float32 against the plain-loop oracle (forward and backward, with and without dropout),
// and float64 finite-difference gradient checks across a block boundary (the layer's own
// gradient checks stay inside one block).
//
// Tolerance for float32 against the float64 oracle as in test_mixer_attention.cpp:
// |got - ref| <= 2e-5 (|ref| + max|ref|).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/attention_kernel.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/op_testing.h"
#include "tests/support/reference_attention.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(t.item(i)));
  return m;
}

::testing::AssertionResult close32(const Tensor& got, const Tensor& ref) {
  const double tol = 2e-5;
  return allclose(got, ref, tol, tol * std::max(max_abs(ref), 1e-30));
}

TEST(AttentionKernel, MatchesReferenceAtBlockBoundaries) {
  const int64_t R = attention_block_rows();
  for (int64_t L : {int64_t(1), R - 1, R, R + 1, 2 * R + 3})
    for (auto [D, H] : {std::pair<int64_t, int64_t>{15, 3}, {34, 2}})
      for (double p : {0.0, 0.2}) {
        if (p > 0 && L != R + 1) continue;  // dropout once, across the boundary
        SCOPED_TRACE("L " + std::to_string(L) + " D " + std::to_string(D) + " H " + std::to_string(H) + " p " +
                     std::to_string(p));
        Generator gen(100 + L + D);
        // Entries up to 2: peaked rows, so the running maximum moves between key blocks.
        Tensor qkv = rand_f32({2, L, 3 * D}, gen, -2, 2, true);
        Generator drop(41, 9);
        Tensor o = causal_attention(qkv, H, p, drop);
        RefAttentionDropout dr;
        if (p > 0) dr = {p, 41, 9};
        EXPECT_TRUE(close32(o, reference_attention_core(qkv, H, dr)));
        Tensor r = rand_f32(o.shape(), gen);
        backward_weighted(o, r);
        EXPECT_TRUE(close32(qkv.grad(), reference_attention_core_backward(qkv, r, H, dr)));
      }
}

// Central differences in float64 through two query blocks and two key blocks: the
// backward's recomputed probabilities, its dK/dV sums over query blocks and its dQ sums
// over key blocks all cross the boundary.
TEST(AttentionKernel, GradCheckFloat64AcrossABlockBoundary) {
  const int64_t R = attention_block_rows(), L = R + 3, D = 10, H = 2;  // dh = 5
  ThreadCount one(1);  // thousands of tiny evaluations: a thread team per call costs more than each
  for (double p : {0.0, 0.25}) {
    Generator gen(7);
    Tensor qkv = rand_f64({1, L, 3 * D}, gen, -1.5, 1.5);
    auto f = [&](const std::vector<Tensor>& in) {
      Generator drop(5);  // the same mask at every evaluation
      return causal_attention(in[0], H, p, drop);
    };
    GradCheckOptions opt;
    opt.max_elements_per_input = 1200;  // of 3930, a seeded subset spread over both blocks
    EXPECT_TRUE(gradcheck(f, {qkv}, opt)) << "dropout " << p;
  }
}

}  // namespace
