// Causal multi-head attention (docs/mixers.md#attention), what is specific to it: the fused
// core against the plain-loop oracle (float32, forward and backward, with and without
// dropout, L up to 300), its two backward algorithms, the dropout mask, the initialisation
// and the option rules. The layer's gradient check, twin, recurrent form, causality and
// determinism are the shared suite's (tests/test_mixer_suite.cpp).
//
// Tolerance rule for float32 against a float64 result: |got - ref| <= tol *
// (|ref| + max|ref|) with tol = 2e-5, i.e. a relative error of 2e-5 on each
// element measured against the tensor's own scale (the backward's
// dS = P (dP - delta) cancels, so small elements carry the absolute rounding of
// the large ones). Float32 rounding is 6e-8; sums of a few hundred terms and the
// ~2 ulp exp stay well inside.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/attention.h"
#include "layers/attention_kernel.h"
#include "tests/support/case_names.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_attention.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

constexpr double kTol32 = 2e-5;

::testing::AssertionResult close32(const Tensor& got, const Tensor& ref, double tol = kTol32) {
  return allclose(got, ref, tol, tol * std::max(max_abs(ref), 1e-30));
}


// ---- the fused core against the oracle, float32 ----

struct CoreCase {
  int64_t B, L, D, H;
  double dropout;
};

std::string core_name(const ::testing::TestParamInfo<CoreCase>& info) {
  const CoreCase& c = info.param;
  return "B" + std::to_string(c.B) + "_L" + std::to_string(c.L) + "_D" + std::to_string(c.D) + "_H" +
         std::to_string(c.H) + (c.dropout > 0 ? "_dropout" : "");
}

// ctest lists a case by its printed parameter: the same name.
void PrintTo(const CoreCase& c, std::ostream* os) { *os << core_name(::testing::TestParamInfo<CoreCase>(c, 0)); }

class AttentionCore : public ::testing::TestWithParam<CoreCase> {};

TEST_P(AttentionCore, MatchesReferenceForwardAndBackwardFloat32) {
  const CoreCase c = GetParam();
  Generator gen(11 + c.L);
  // Entries up to 2 make some rows peaked (scores up to ~4 sqrt(dh)), so the
  // running maximum actually moves between key blocks.
  Tensor qkv = rand_f32({c.B, c.L, 3 * c.D}, gen, -2, 2, true);
  Generator drop_gen(99, 5);
  Tensor o = causal_attention(qkv, c.H, c.dropout, drop_gen);
  RefAttentionDropout dr;
  if (c.dropout > 0) dr = {c.dropout, 99, 5};
  EXPECT_EQ(drop_gen.counter(), c.dropout > 0 ? 5 + uint64_t(c.B * c.H * c.L * c.L) : 5);
  EXPECT_TRUE(close32(o, reference_attention_core(qkv, c.H, dr)));

  Tensor r = rand_f32(o.shape(), gen);
  backward_weighted(o, r);
  EXPECT_TRUE(close32(qkv.grad(), reference_attention_core_backward(qkv, r, c.H, dr)));
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionCore,
                         ::testing::Values(CoreCase{1, 1, 8, 1, 0.0}, CoreCase{2, 7, 12, 3, 0.0},
                                           CoreCase{1, 64, 16, 2, 0.0}, CoreCase{1, 67, 16, 2, 0.0},
                                           CoreCase{3, 130, 24, 4, 0.0}, CoreCase{2, 129, 64, 1, 0.0},
                                           CoreCase{1, 300, 32, 2, 0.0}, CoreCase{2, 7, 12, 3, 0.3},
                                           CoreCase{1, 130, 16, 2, 0.25}, CoreCase{1, 300, 8, 1, 0.1}),
                         core_name);

// Both backward algorithms, on all threads and on one, with and without dropout:
// the same bits (tasks own their rows and sum in a fixed order).
TEST(AttentionCore, AlgorithmsAndThreadCountsAreBitIdentical) {
  Generator gen(3);
  Tensor x = rand_f32({3, 200, 24}, gen, -2, 2);
  Tensor r = rand_f32({3, 200, 8}, gen);
  const int threads = omp_get_max_threads();
  for (double p : {0.0, 0.2}) {
    Tensor first_o, first_g;
    for (int nt : {threads, 1})
      for (auto algo : {AttentionBackwardAlgo::per_head, AttentionBackwardAlgo::two_pass}) {
        omp_set_num_threads(nt);
        Tensor qkv = x.clone().set_requires_grad(true);
        Generator g(7);
        Tensor o = causal_attention(qkv, 2, p, g, algo);
        backward_weighted(o, r);
        if (!first_o.defined()) {
          first_o = o.detach();
          first_g = qkv.grad();
        } else {
          EXPECT_TRUE(same_values(o, first_o)) << "p " << p << " threads " << nt;
          EXPECT_TRUE(same_values(qkv.grad(), first_g)) << "p " << p << " threads " << nt << " algo " << int(algo);
        }
      }
    omp_set_num_threads(threads);
  }
}

TEST(AttentionCore, RejectsBadShapes) {
  Generator gen(1);
  EXPECT_THROW(causal_attention(Tensor::zeros({2, 3, 10}), 1, 0.0, gen), ShapeError);  // 10 % 3 != 0
  EXPECT_THROW(causal_attention(Tensor::zeros({2, 3, 12}), 3, 0.0, gen), ShapeError);  // D = 4, H = 3
  EXPECT_THROW(causal_attention(Tensor::zeros({6, 12}), 1, 0.0, gen), ShapeError);
  EXPECT_THROW(causal_attention(Tensor::zeros({2, 3, 12}), 1, 1.0, gen), ShapeError);
}

// ---- the layer ----

LayerInit init_of(Generator& gen, DType dt, int64_t n_layers = 1) { return LayerInit{&gen, n_layers, dt}; }

// Names and shapes are the shared suite's (tests/test_mixer_suite.cpp); here the values.
TEST(AttentionLayer, Initialisation) {
  const int64_t D = 64;
  Generator gen(12);
  AttentionMixer layer(D, AttentionOptions{4, 0.0}, init_of(gen, DType::f32, /*n_layers=*/4));
  NamedTensors p = params_of(layer);
  ASSERT_EQ(p.size(), 4u);
  auto stats = [](const Tensor& t, double& mean, double& sd) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += t.item(i);
    mean = s / t.numel();
    for (int64_t i = 0; i < t.numel(); ++i) s2 += (t.item(i) - mean) * (t.item(i) - mean);
    sd = std::sqrt(s2 / t.numel());
  };
  double mean, sd;
  stats(p[0].second, mean, sd);  // 12288 draws: sd within ~1.3% (2 sigma), mean within 4 sigma
  EXPECT_NEAR(sd, 0.02, 0.02 * 0.03);
  EXPECT_NEAR(mean, 0.0, 4 * 0.02 / std::sqrt(12288.0));
  stats(p[2].second, mean, sd);  // scaled: 0.02 / sqrt(2 * 4)
  const double scaled = 0.02 / std::sqrt(8.0);
  EXPECT_NEAR(sd, scaled, scaled * 0.05);
  EXPECT_NEAR(mean, 0.0, 4 * scaled / std::sqrt(4096.0));
  EXPECT_EQ(max_abs(p[1].second), 0.0);
  EXPECT_EQ(max_abs(p[3].second), 0.0);
}

TEST(AttentionLayer, DropoutOnlyWhenTrainingAndSeeded) {
  const int64_t B = 2, L = 20, D = 8, H = 2;
  Generator gen(13);
  AttentionMixer layer(D, AttentionOptions{H, 0.4}, init_of(gen, DType::f32));
  randomise(layer, gen);
  Tensor x = rand_f32({B, L, D}, gen);
  NoGradGuard ng;
  Generator g1(3), g2(3), g3(4);
  Tensor eval = layer.forward(x, false, g1);
  EXPECT_EQ(g1.counter(), 0u);
  Tensor a = layer.forward(x, true, g1);
  Tensor b = layer.forward(x, true, g2);
  EXPECT_EQ(g1.counter(), uint64_t(B * H * L * L));
  EXPECT_TRUE(same_values(a, b));                          // same generator state, same mask
  EXPECT_FALSE(same_values(a, layer.forward(x, true, g3)));  // another seed, another mask
  EXPECT_FALSE(same_values(a, eval));
  NamedTensors p = params_of(layer);
  EXPECT_TRUE(close32(a, reference_attention_forward(p, AttentionOptions{H, 0.4}, x, RefAttentionDropout{0.4, 3, 0})));
}

// The option rules (the shared suite checks the inputs and states).
TEST(AttentionLayer, RejectsBadOptions) {
  Generator gen(1);
  EXPECT_THROW(AttentionMixer(10, AttentionOptions{3, 0.0}, init_of(gen, DType::f32)), ShapeError);
  EXPECT_THROW(AttentionMixer(8, AttentionOptions{0, 0.0}, init_of(gen, DType::f32)), ShapeError);
  EXPECT_THROW(AttentionMixer(8, AttentionOptions{1, 1.0}, init_of(gen, DType::f32)), ShapeError);
}

}  // namespace
