// Linear attention (docs/mixers.md#linear_attention), what is specific to it: the fused
// chunked core against the plain-loop oracle (float32, forward and backward, L up to 300
// across several chunks), skipped and accumulated gradients, the initialisation and the
// option rules. The layer's gradient check, twin, recurrent form, causality and determinism
// are the shared suite's (tests/test_mixer_suite.cpp).
//
// Tolerance rule for float32 against a float64 result: |got - ref| <= tol *
// (|ref| + max|ref|) with tol = 2e-5, a relative error of 2e-5 measured against
// the tensor's own scale (gradients near zero carry the absolute rounding of the
// large ones). Float32 rounding is 6e-8; the state sums run over at most 300
// tokens.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/linear_attention.h"
#include "layers/linear_attention_kernel.h"
#include "tests/support/case_names.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_linear_attention.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

constexpr double kTol32 = 2e-5;

// scale_floor: a lower bound for the scale, for gradients that are small only by
// cancellation (at L = 1, o = v up to eps, so dq and dk are ~1e-8 differences of
// O(1) terms and carry float32 rounding of the O(1) terms).
::testing::AssertionResult close32(const Tensor& got, const Tensor& ref, double tol = kTol32,
                                   double scale_floor = 1e-30) {
  return allclose(got, ref, tol, tol * std::max(max_abs(ref), scale_floor));
}


// ---- the fused core against the oracle, float32 ----

struct CoreCase {
  int64_t B, L, D, H;
};
void PrintTo(const CoreCase& c, std::ostream* os) {
  *os << seqmix::testing::case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"D", double(c.D)}, {"H", double(c.H)}});
}

class LinearAttentionCore : public ::testing::TestWithParam<CoreCase> {};

TEST_P(LinearAttentionCore, MatchesReferenceForwardAndBackwardFloat32) {
  const CoreCase c = GetParam();
  const double eps = 1e-6;
  Generator gen(17 + c.L);
  // U(-1.5, 1.5): both branches of phi, and normalisers of very different sizes.
  Tensor q = rand_f32({c.B, c.L, c.D}, gen, -1.5, 1.5, true);
  Tensor k = rand_f32({c.B, c.L, c.D}, gen, -1.5, 1.5, true);
  Tensor v = rand_f32({c.B, c.L, c.D}, gen, -1.5, 1.5, true);
  Tensor o = causal_linear_attention(q, k, v, c.H, eps);
  EXPECT_TRUE(close32(o, reference_linear_attention_core(q, k, v, c.H, eps)));
  Tensor r = rand_f32(o.shape(), gen);
  backward_weighted(o, r);
  LinearAttentionGrads ref = reference_linear_attention_core_backward(q, k, v, r, c.H, eps);
  // Inputs and dout are O(1), so are the terms every gradient is summed from.
  EXPECT_TRUE(close32(q.grad(), ref.dq, kTol32, 1.0));
  EXPECT_TRUE(close32(k.grad(), ref.dk, kTol32, 1.0));
  EXPECT_TRUE(close32(v.grad(), ref.dv, kTol32, 1.0));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearAttentionCore,
                         ::testing::Values(CoreCase{1, 1, 8, 1}, CoreCase{2, 7, 12, 3}, CoreCase{1, 64, 16, 2},
                                           CoreCase{1, 65, 16, 2}, CoreCase{3, 130, 24, 4}, CoreCase{2, 129, 64, 1},
                                           CoreCase{1, 300, 32, 2}),
                         [](const ::testing::TestParamInfo<CoreCase>& i) {
                           return "B" + std::to_string(i.param.B) + "_L" + std::to_string(i.param.L) + "_D" +
                                  std::to_string(i.param.D) + "_H" + std::to_string(i.param.H);
                         });

TEST(LinearAttentionCore, SkipsInputsWithoutGradAndAccumulates) {
  Generator gen(2);
  Tensor q = rand_f32({2, 70, 8}, gen, -1, 1, true);
  Tensor k = rand_f32({2, 70, 8}, gen, -1, 1, false);
  Tensor v = rand_f32({2, 70, 8}, gen, -1, 1, true);
  Tensor r = rand_f32({2, 70, 8}, gen);
  backward_weighted(causal_linear_attention(q, k, v, 2, 1e-6), r);
  EXPECT_FALSE(k.grad().defined());
  LinearAttentionGrads ref = reference_linear_attention_core_backward(q, k, v, r, 2, 1e-6);
  EXPECT_TRUE(close32(q.grad(), ref.dq));
  EXPECT_TRUE(close32(v.grad(), ref.dv));
  // A second backward without zero_grad adds the same gradient again.
  backward_weighted(causal_linear_attention(q, k, v, 2, 1e-6), r);
  Tensor twice = Tensor::from_vector(ref.dv.shape(), ref.dv.to_f64_vector());
  for (int64_t i = 0; i < twice.numel(); ++i) twice.f64()[i] *= 2;
  EXPECT_TRUE(close32(v.grad(), twice));
}

TEST(LinearAttentionCore, RejectsBadShapes) {
  Tensor a = Tensor::zeros({2, 3, 12});
  EXPECT_THROW(causal_linear_attention(a, a, Tensor::zeros({2, 4, 12}), 1, 1e-6), ShapeError);
  EXPECT_THROW(causal_linear_attention(a, a, a, 5, 1e-6), ShapeError);
  EXPECT_THROW(causal_linear_attention(Tensor::zeros({6, 12}), Tensor::zeros({6, 12}), Tensor::zeros({6, 12}), 1, 1e-6),
               ShapeError);
}

// ---- the layer ----

LayerInit init_of(Generator& gen, DType dt, int64_t n_layers = 1) { return LayerInit{&gen, n_layers, dt}; }

// Names and shapes are the shared suite's (tests/test_mixer_suite.cpp); here the values.
TEST(LinearAttentionLayer, Initialisation) {
  const int64_t D = 64;
  Generator gen(12);
  LinearAttentionMixer layer(D, LinearAttentionOptions{4, 1e-6}, init_of(gen, DType::f32, /*n_layers=*/3));
  NamedTensors p = params_of(layer);
  ASSERT_EQ(p.size(), 8u);
  const char* names[] = {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                         "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"};
  auto stats = [](const Tensor& t, double& mean, double& sd) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += t.item(i);
    mean = s / t.numel();
    for (int64_t i = 0; i < t.numel(); ++i) s2 += (t.item(i) - mean) * (t.item(i) - mean);
    sd = std::sqrt(s2 / t.numel());
  };
  for (size_t i = 0; i < 8; i += 2) {
    // 4096 draws: sd within 5% (over 4 sigma), mean within 4 sigma.
    const double want = i == 6 ? 0.02 / std::sqrt(2.0 * 3) : 0.02;
    double mean, sd;
    stats(p[i].second, mean, sd);
    EXPECT_NEAR(sd, want, want * 0.05) << names[i];
    EXPECT_NEAR(mean, 0.0, 4 * want / 64.0) << names[i];
    EXPECT_EQ(max_abs(p[i + 1].second), 0.0) << names[i + 1];
  }
}

// The option rules (the shared suite checks the inputs and states).
TEST(LinearAttentionLayer, RejectsBadOptions) {
  Generator gen(1);
  EXPECT_THROW(LinearAttentionMixer(10, LinearAttentionOptions{3, 1e-6}, init_of(gen, DType::f32)), ShapeError);
  EXPECT_THROW(LinearAttentionMixer(8, LinearAttentionOptions{0, 1e-6}, init_of(gen, DType::f32)), ShapeError);
  EXPECT_THROW(LinearAttentionMixer(8, LinearAttentionOptions{1, -1.0}, init_of(gen, DType::f32)), ShapeError);
}

}  // namespace
