// Linear attention (docs/mixers.md#linear_attention): the fused chunked core against the plain-loop
// oracle (float32, forward and backward, L up to 300 across several chunks),
// float64 gradient checks of the whole layer, float32 against float64, parallel
// against recurrent form, causality, determinism, initialisation.
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

double max_abs(const Tensor& t) {
  double m = 0;
  for (int64_t i = 0; i < t.numel(); ++i) m = std::max(m, std::fabs(t.item(i)));
  return m;
}

// scale_floor: a lower bound for the scale, for gradients that are small only by
// cancellation (at L = 1, o = v up to eps, so dq and dk are ~1e-8 differences of
// O(1) terms and carry float32 rounding of the O(1) terms).
::testing::AssertionResult close32(const Tensor& got, const Tensor& ref, double tol = kTol32,
                                   double scale_floor = 1e-30) {
  return allclose(got, ref, tol, tol * std::max(max_abs(ref), scale_floor));
}


Tensor reference_layer(const Mixer& m, const Tensor& x, int64_t H, double eps) {
  NamedTensors p = params_of(m);
  return reference_linear_attention_layer(x, p[0].second, p[1].second, p[2].second, p[3].second, p[4].second,
                                          p[5].second, p[6].second, p[7].second, H, eps);
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

TEST(LinearAttentionCore, ThreadCountsAreBitIdentical) {
  Generator gen(3);
  Tensor q0 = rand_f32({3, 200, 16}, gen), k0 = rand_f32({3, 200, 16}, gen), v0 = rand_f32({3, 200, 16}, gen);
  Tensor r = rand_f32({3, 200, 16}, gen);
  const int threads = omp_get_max_threads();
  std::vector<Tensor> first;
  for (int nt : {threads, 1}) {
    omp_set_num_threads(nt);
    Tensor q = q0.clone().set_requires_grad(true), k = k0.clone().set_requires_grad(true),
           v = v0.clone().set_requires_grad(true);
    Tensor o = causal_linear_attention(q, k, v, 2, 1e-6);
    backward_weighted(o, r);
    std::vector<Tensor> got{o.detach(), q.grad(), k.grad(), v.grad()};
    if (first.empty()) {
      first = got;
    } else {
      for (size_t i = 0; i < got.size(); ++i) EXPECT_TRUE(bit_equal(got[i], first[i])) << "tensor " << i;
    }
  }
  omp_set_num_threads(threads);
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

struct LayerCase {
  int64_t B, L, H;
};
void PrintTo(const LayerCase& c, std::ostream* os) {
  *os << seqmix::testing::case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"H", double(c.H)}});
}

class LinearAttentionGradCheck : public ::testing::TestWithParam<LayerCase> {};

// Every parameter and every input element, central differences in float64.
TEST_P(LinearAttentionGradCheck, LayerFloat64) {
  const LayerCase c = GetParam();
  const int64_t D = 12;
  Generator gen(23);
  LinearAttentionMixer layer(D, LinearAttentionOptions{c.H, 1e-6}, init_of(gen, DType::f64));
  randomise(layer, gen);
  Tensor x = rand_f64({c.B, c.L, D}, gen);
  std::vector<Tensor> inputs{x};
  for (auto& [name, t] : params_of(layer)) inputs.push_back(t);
  auto f = [&](const std::vector<Tensor>& in) {
    Generator g(5);
    return layer.forward(in[0], true, g);
  };
  SingleThread one;
  EXPECT_TRUE(gradcheck(f, inputs));
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearAttentionGradCheck,
                         ::testing::Values(LayerCase{1, 1, 1}, LayerCase{3, 1, 3}, LayerCase{1, 7, 2},
                                           LayerCase{3, 7, 3}, LayerCase{1, 67, 3}, LayerCase{3, 67, 2}),
                         [](const ::testing::TestParamInfo<LayerCase>& i) {
                           return "B" + std::to_string(i.param.B) + "_L" + std::to_string(i.param.L) + "_H" +
                                  std::to_string(i.param.H);
                         });

// The float32 layer against the oracle (forward) and the float64 fused path
// (every gradient), L = 300 (five chunks).
TEST(LinearAttentionLayer, Float32MatchesReferenceAndFloat64) {
  const int64_t B = 2, L = 300, D = 32, H = 4;
  const double eps = 1e-6;
  Generator gen(8);
  LinearAttentionMixer l32(D, LinearAttentionOptions{H, eps}, init_of(gen, DType::f32));
  LinearAttentionMixer l64(D, LinearAttentionOptions{H, eps}, init_of(gen, DType::f64));
  randomise(l32, gen, -0.3, 0.3);
  copy_params(l32, l64);
  Tensor x32 = rand_f32({B, L, D}, gen, -1, 1, true);
  Tensor x64 = x32.to(DType::f64).set_requires_grad(true);
  Tensor r64 = rand_f64({B, L, D}, gen, -1, 1, false);
  Generator g(1);
  // One forward and backward at a time: backward runs (and clears) the whole tape.
  Tensor y32 = l32.forward(x32, true, g);
  backward_weighted(y32, r64.to(DType::f32));
  Tensor y64 = l64.forward(x64, true, g);
  backward_weighted(y64, r64);
  EXPECT_TRUE(close32(y32, reference_layer(l32, x32, H, eps)));
  EXPECT_TRUE(close32(y32, y64));
  EXPECT_TRUE(close32(x32.grad(), x64.grad()));
  NamedTensors p32 = params_of(l32), p64 = params_of(l64);
  for (size_t i = 0; i < p32.size(); ++i)
    EXPECT_TRUE(close32(p32[i].second.grad(), p64[i].second.grad())) << p32[i].first;
}

TEST(LinearAttentionLayer, RecurrentStepsMatchParallelForm) {
  const int64_t B = 2, L = 150, D = 16, H = 2;  // crosses two chunk boundaries
  Generator gen(4);
  LinearAttentionMixer layer(D, LinearAttentionOptions{H, 1e-6}, init_of(gen, DType::f32));
  randomise(layer, gen);
  Tensor x = rand_f32({B, L, D}, gen);
  Tensor y;
  {
    NoGradGuard ng;
    Generator g(2);
    y = layer.forward(x, false, g);
  }
  // Decoding steps are tiny: on one thread, as for the gradient checks.
  SingleThread one;
  auto state = layer.init_state(B);
  Tensor ref = Tensor::empty({B, L, D});
  for (int64_t t = 0; t < L; ++t) {
    Tensor xt = Tensor::empty({B, D});
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < D; ++e) xt.f32()[b * D + e] = x.f32()[(b * L + t) * D + e];
    Tensor yt = layer.step(*state, xt);
    ASSERT_EQ(yt.shape(), (Shape{B, D}));
    EXPECT_FALSE(yt.requires_grad());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < D; ++e) ref.f32()[(b * L + t) * D + e] = yt.f32()[b * D + e];
  }
  EXPECT_EQ(tape().size(), 0u);
  EXPECT_EQ(state->t, L);
  // H (dk dv + dk) with dk = dv = 8, independent of t.
  EXPECT_EQ(layer.state_size(0), 2 * (64 + 8));
  EXPECT_EQ(layer.state_size(L), 2 * (64 + 8));
  EXPECT_TRUE(close32(y, ref));
}

TEST(LinearAttentionLayer, ParametersNamesShapesAndInit) {
  const int64_t D = 64;
  Generator gen(12);
  LinearAttentionMixer layer(D, LinearAttentionOptions{4, 1e-6}, init_of(gen, DType::f32, /*n_layers=*/3));
  NamedTensors p;
  layer.named_parameters("layers.1.mixer.", p);
  ASSERT_EQ(p.size(), 8u);
  const char* names[] = {"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias",
                         "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"};
  for (size_t i = 0; i < p.size(); ++i) {
    EXPECT_EQ(p[i].first, std::string("layers.1.mixer.") + names[i]);
    EXPECT_EQ(p[i].second.shape(), i % 2 == 0 ? Shape({D, D}) : Shape({D}));
    EXPECT_TRUE(p[i].second.requires_grad());
  }
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

TEST(LinearAttentionLayer, RejectsBadArguments) {
  Generator gen(1);
  EXPECT_THROW(LinearAttentionMixer(10, LinearAttentionOptions{3, 1e-6}, init_of(gen, DType::f32)), ShapeError);
  EXPECT_THROW(LinearAttentionMixer(8, LinearAttentionOptions{0, 1e-6}, init_of(gen, DType::f32)), ShapeError);
  EXPECT_THROW(LinearAttentionMixer(8, LinearAttentionOptions{1, -1.0}, init_of(gen, DType::f32)), ShapeError);
  LinearAttentionMixer layer(8, LinearAttentionOptions{2, 1e-6}, init_of(gen, DType::f32));
  EXPECT_THROW(layer.forward(Tensor::zeros({2, 3, 9}), false, gen), ShapeError);
  EXPECT_THROW(layer.forward(Tensor::zeros({2, 3, 8}, DType::f64), false, gen), ShapeError);
  auto state = layer.init_state(2);
  EXPECT_THROW(layer.step(*state, Tensor::zeros({3, 8})), ShapeError);
  MixerState other;
  EXPECT_THROW(layer.step(other, Tensor::zeros({2, 8})), ShapeError);
}

}  // namespace
