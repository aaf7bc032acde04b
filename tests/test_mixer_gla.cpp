// Gated linear attention (docs/mixers.md#gla): the fused chunked recurrence and output gate
// against plain-loop references (float32 and float64, forward and backward), float64
// gradient checks of the ops and of the whole layer, parallel form vs recurrent step,
// causality, exponent safety under very strong gates, and the initialisation.
//
// Tolerance rule for float32 against a float64 reference: an element passes when
// |got - ref| <= rtol * (|ref| + max|ref|), i.e. relative error rtol measured against
// the tensor's own scale (float32 rounding of sums over up to 300 positions is
// relative to the largest terms, not to a single small element). rtol = 1e-5 for
// outputs and 2e-5 for gradients; the errors seen are about 2e-7 for the recurrence's
// outputs and q/k/v gradients, 2e-6 for the gate-logit gradient (a sum of cancelling
// terms), and up to 5e-6 for the layer's gk_proj gradients. Float64 fused against the
// reference: rtol 1e-12 (outputs) and 1e-11 (gradients).
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/gla.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_gla.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

::testing::AssertionResult close_to_scale(const Tensor& got, const Tensor& ref, double rtol) {
  double scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) scale = std::max(scale, std::fabs(ref.item(i)));
  // A reference that is exactly zero (du at L = 1: no earlier state to decay) is
  // compared on the O(1) scale of the inputs: cancellation leaves ~1e-12 residues
  // once the compiler contracts multiply-adds into FMAs.
  return allclose(got, ref, rtol, rtol * (scale > 0 ? scale : 1.0));
}


// ---------------- the fused recurrence ----------------

struct CoreCase {
  int64_t B, L, H, dk, dv;
  double u_lo, u_hi, normalizer;
};

std::string core_name(const ::testing::TestParamInfo<CoreCase>& info) {
  const CoreCase& c = info.param;
  return "B" + std::to_string(c.B) + "_L" + std::to_string(c.L) + "_H" + std::to_string(c.H) + "_dk" +
         std::to_string(c.dk) + "_dv" + std::to_string(c.dv) + "_N" + std::to_string(int(c.normalizer)) + "_u" +
         std::to_string(int(-c.u_lo));
}

// ctest lists a case by its printed parameter: the same name.
void PrintTo(const CoreCase& c, std::ostream* os) { *os << core_name(::testing::TestParamInfo<CoreCase>(c, 0)); }

struct CoreInputs {
  Tensor q, k, v, u;
};

CoreInputs core_inputs(const CoreCase& c, DType dt, uint64_t seed) {
  Generator gen(seed);
  auto make = [&](Shape s, double lo, double hi) {
    Tensor t = rand_f64(s, gen, lo, hi, false);
    if (dt == DType::f32) t = t.to(DType::f32);
    t.set_requires_grad(true);
    return t;
  };
  CoreInputs in;
  in.q = make({c.B, c.L, c.H * c.dk}, -1, 1);
  in.k = make({c.B, c.L, c.H * c.dk}, -1, 1);
  in.v = make({c.B, c.L, c.H * c.dv}, -1, 1);
  in.u = make({c.B, c.L, c.H * c.dk}, c.u_lo, c.u_hi);
  return in;
}

class GlaCoreTest : public ::testing::TestWithParam<CoreCase> {};

// Fused float32 and float64 against the step-by-step double recurrence, forward and backward.
TEST_P(GlaCoreTest, FusedMatchesReferenceForwardAndBackward) {
  const CoreCase c = GetParam();
  const double scale = 1.0 / std::sqrt(double(c.dk));
  for (DType dt : {DType::f32, DType::f64}) {
    CoreInputs in = core_inputs(c, dt, 11);
    tape().clear();
    Tensor o = gla_chunk_attention(in.q, in.k, in.v, in.u, c.H, scale, c.normalizer);
    Tensor ref = reference_gla_core(in.q, in.k, in.v, in.u, c.H, scale, c.normalizer);
    const double rtol = dt == DType::f32 ? 1e-5 : 1e-12;
    EXPECT_TRUE(close_to_scale(o, ref, rtol)) << "forward " << dtype_name(dt);
    Generator gen(5);
    Tensor dO = rand_f64(o.shape(), gen, -1, 1, false);
    backward(weighted_sum(o, dO));
    std::vector<Tensor> rg = reference_gla_core_backward(in.q, in.k, in.v, in.u, dO, c.H, scale, c.normalizer);
    const char* names[] = {"dq", "dk", "dv", "du"};
    const Tensor* got[] = {&in.q, &in.k, &in.v, &in.u};
    for (int i = 0; i < 4; ++i)
      EXPECT_TRUE(close_to_scale(got[i]->grad(), rg[i], dt == DType::f32 ? 2e-5 : 1e-11))
          << names[i] << " " << dtype_name(dt);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GlaCoreTest,
    ::testing::Values(CoreCase{1, 1, 1, 1, 1, -3, 3, 16}, CoreCase{2, 7, 3, 5, 3, -3, 3, 1},
                      CoreCase{1, 64, 2, 8, 8, -4, 4, 1}, CoreCase{3, 67, 2, 7, 9, -3, 3, 4},
                      CoreCase{2, 129, 1, 16, 17, -2, 2, 16}, CoreCase{2, 300, 4, 16, 32, -2, 2, 16},
                      CoreCase{1, 300, 2, 12, 20, -6, 1, 1},
                      // Very strong gates: log a down to -200 per step; e^{b} underflows inside a chunk.
                      CoreCase{2, 200, 2, 9, 11, -200, 2, 1}),
    core_name);

TEST(GlaCore, GradCheckFloat64) {
  // L = 1, 7 (inside one sub-chunk), 67 and 130 (across sub-chunk and chunk boundaries).
  SingleThread single_thread;
  const std::vector<CoreCase> cases = {{1, 1, 2, 3, 2, -3, 3, 1},
                                       {3, 7, 2, 3, 4, -3, 3, 1},
                                       {1, 67, 3, 2, 3, -3, 3, 1},
                                       {2, 130, 1, 3, 2, -2, 2, 16}};
  for (const CoreCase& c : cases) {
    CoreInputs in = core_inputs(c, DType::f64, 3);
    const double scale = 1.0 / std::sqrt(double(c.dk));
    EXPECT_TRUE(gradcheck(
        [&](const std::vector<Tensor>& x) { return gla_chunk_attention(x[0], x[1], x[2], x[3], c.H, scale, c.normalizer); },
        {in.q, in.k, in.v, in.u}))
        << "L=" << c.L;
  }
}

TEST(GlaCore, SkipsInputsThatNeedNoGradient) {
  CoreInputs in = core_inputs({1, 70, 2, 3, 4, -3, 3, 1}, DType::f64, 4);
  Tensor q = in.q.detach(), k = in.k.detach(), u = in.u.detach();
  tape().clear();
  Tensor o = gla_chunk_attention(q, k, in.v, u, 2, 0.5, 1.0);
  Generator gen(1);
  Tensor dO = rand_f64(o.shape(), gen, -1, 1, false);
  backward(weighted_sum(o, dO));
  auto rg = reference_gla_core_backward(q, k, in.v, u, dO, 2, 0.5, 1.0);
  EXPECT_TRUE(allclose(in.v.grad(), rg[2], 1e-11, 1e-11));
  EXPECT_FALSE(q.grad().defined());
  EXPECT_FALSE(u.grad().defined());
}

TEST(GlaCore, BitIdenticalAcrossRuns) {
  CoreInputs in = core_inputs({4, 150, 2, 16, 16, -3, 3, 16}, DType::f32, 9);
  std::vector<std::vector<float>> outs;
  for (int run = 0; run < 2; ++run) {
    for (Tensor* t : {&in.q, &in.k, &in.v, &in.u}) t->zero_grad();
    tape().clear();
    Tensor o = gla_chunk_attention(in.q, in.k, in.v, in.u, 2, 0.25, 16.0);
    Generator gen(2);
    backward(weighted_sum(o, rand_f64(o.shape(), gen, -1, 1, false)));
    std::vector<float> all = o.to_f32_vector();
    for (Tensor* t : {&in.q, &in.k, &in.v, &in.u}) {
      std::vector<float> g = t->grad().to_f32_vector();
      all.insert(all.end(), g.begin(), g.end());
    }
    outs.push_back(all);
  }
  EXPECT_TRUE(outs[0] == outs[1]);
}

TEST(GlaCore, RejectsBadShapes) {
  Tensor q = Tensor::zeros({2, 5, 6}), v = Tensor::zeros({2, 5, 4});
  EXPECT_THROW(gla_chunk_attention(q, q, v, q, 4, 1.0, 16.0), ShapeError);  // 4 does not divide 6
  EXPECT_THROW(gla_chunk_attention(q, q, Tensor::zeros({2, 4, 4}), q, 2, 1.0, 16.0), ShapeError);
  EXPECT_THROW(gla_chunk_attention(q, Tensor::zeros({2, 5, 4}), v, q, 2, 1.0, 16.0), ShapeError);
  EXPECT_THROW(gla_chunk_attention(q, q, v, q, 2, 1.0, 0.0), ShapeError);
}

// ---------------- the output gate ----------------

TEST(GlaNormGate, MatchesReferenceAndGradChecks) {
  Generator gen(21);
  for (int64_t H : {1, 3}) {
    Tensor o = rand_f64({2, 5, H * 7}, gen, -2, 2), g = rand_f64({2, 5, H * 7}, gen, -3, 3);
    Tensor w = rand_f64({7}, gen, 0.5, 1.5);
    EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& x) { return gla_norm_gate(x[0], x[1], x[2], H, 1e-5); },
                          {o, g, w}));
    tape().clear();
    EXPECT_TRUE(allclose(gla_norm_gate(o, g, w, H, 1e-5), reference_gla_norm_gate(o, g, w, H, 1e-5), 1e-13, 1e-13));
    Tensor o32 = o.to(DType::f32), g32 = g.to(DType::f32), w32 = w.to(DType::f32);
    EXPECT_TRUE(allclose(gla_norm_gate(o32, g32, w32, H, 1e-5), reference_gla_norm_gate(o, g, w, H, 1e-5), 1e-5, 1e-6));
  }
}

TEST(GlaNormGate, Float32BackwardMatchesFloat64) {
  Generator gen(22);
  Tensor o = rand_f64({3, 101, 4 * 16}, gen, -2, 2), g = rand_f64({3, 101, 4 * 16}, gen, -3, 3);
  Tensor w = rand_f64({16}, gen, 0.5, 1.5);
  Tensor dy = rand_f64(o.shape(), gen, -1, 1, false);
  Tensor o32 = o.to(DType::f32).set_requires_grad(), g32 = g.to(DType::f32).set_requires_grad(),
         w32 = w.to(DType::f32).set_requires_grad();
  tape().clear();
  backward(weighted_sum(gla_norm_gate(o, g, w, 4, 1e-5), dy));
  backward(weighted_sum(gla_norm_gate(o32, g32, w32, 4, 1e-5), dy));
  EXPECT_TRUE(close_to_scale(o32.grad(), o.grad(), 1e-5));
  EXPECT_TRUE(close_to_scale(g32.grad(), g.grad(), 1e-5));
  EXPECT_TRUE(close_to_scale(w32.grad(), w.grad(), 1e-5));
}

// ---------------- the layer ----------------

GlaOptions small_options(int64_t heads, int64_t r) {
  GlaOptions opt;
  opt.num_heads = heads;
  opt.gate_low_rank_dim = r;
  return opt;
}

// Moves the parameters off their tiny initial values, so that every path (gates
// included) carries a gradient well above the finite-difference noise.
void randomise(GlaMixer& m, uint64_t seed) {
  Generator gen(seed);
  NamedTensors ps;
  m.named_parameters("", ps);
  for (auto& [name, t] : ps) {
    const bool around_one = name == "g_norm.weight";
    dispatch_float(t.dtype(), "randomise", [&](auto tag) {
      using T = decltype(tag);
      for (int64_t i = 0; i < t.numel(); ++i)
        t.data<T>()[i] = T(around_one ? gen.uniform(0.5, 1.5) : gen.uniform(-0.6, 0.6));
    });
  }
}

std::vector<Tensor> params_of(const GlaMixer& m) {
  NamedTensors ps;
  m.named_parameters("", ps);
  std::vector<Tensor> out;
  for (auto& p : ps) out.push_back(p.second);
  return out;
}

TEST(GlaMixer, GradCheckFloat64AllParametersAndInput) {
  // D = 12, 3 heads: Dk = 6 (dk = 2), Dv = 12 (dv = 4), r = 3; gate normaliser 2 so the
  // decays are strong enough to matter over 67 steps (L = 67 crosses a chunk boundary).
  SingleThread single_thread;
  for (int64_t B : {1, 3})
    for (int64_t L : {1, 7, 67}) {
      Generator init_gen(17);
      GlaOptions opt = small_options(3, 3);
      opt.gate_logit_normalizer = 2;
      GlaMixer m(12, opt, LayerInit{&init_gen, 2, DType::f64});
      randomise(m, 100 + L);
      Generator gen(31 + B);
      Tensor x = rand_f64({B, L, 12}, gen);
      std::vector<Tensor> inputs = params_of(m);
      inputs.push_back(x);
      Generator dropout_gen(0);
      EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return m.forward(in.back(), true, dropout_gen); },
                            inputs))
          << "B=" << B << " L=" << L;
    }
}

TEST(GlaMixer, Float32MatchesReferenceAndFloat64Backward) {
  // D = 48, 4 heads: dk = 6, dv = 12; L = 300 spans five chunks.
  const int64_t B = 2, L = 300, D = 48;
  Generator g32(7), g64(7);
  GlaOptions opt = small_options(4, 8);
  opt.gate_logit_normalizer = 4;
  GlaMixer m32(D, opt, LayerInit{&g32, 2, DType::f32});
  GlaMixer m64(D, opt, LayerInit{&g64, 2, DType::f64});
  randomise(m32, 5);
  randomise(m64, 5);
  Generator gen(3);
  Tensor x64 = rand_f64({B, L, D}, gen);
  Tensor x32 = x64.to(DType::f32).set_requires_grad();
  Generator dg(0);
  const Tensor ref = reference_gla_layer(m64, x64);
  Tensor dy = rand_f64(ref.shape(), gen, -1, 1, false);
  // One forward and backward at a time: backward() clears the whole tape.
  tape().clear();
  Tensor y32 = m32.forward(x32, true, dg);
  EXPECT_TRUE(close_to_scale(y32, ref, 2e-5));
  backward(weighted_sum(y32, dy));
  Tensor y64 = m64.forward(x64, true, dg);
  EXPECT_TRUE(close_to_scale(y64, ref, 1e-12));
  backward(weighted_sum(y64, dy));
  NamedTensors p32, p64;
  m32.named_parameters("", p32);
  m64.named_parameters("", p64);
  for (size_t i = 0; i < p32.size(); ++i)
    EXPECT_TRUE(close_to_scale(p32[i].second.grad(), p64[i].second.grad(), 2e-5)) << p32[i].first;
  EXPECT_TRUE(close_to_scale(x32.grad(), x64.grad(), 2e-5)) << "dx";
}

TEST(GlaMixer, RecurrentStepMatchesParallelForm) {
  const int64_t B = 2, L = 150, D = 32;
  Generator init_gen(8);
  GlaMixer m(D, small_options(4, 8), LayerInit{&init_gen, 1, DType::f32});
  randomise(m, 9);
  Generator gen(4);
  Tensor x = rand_f32({B, L, D}, gen);
  Generator dg(0);
  Tensor y;
  {
    NoGradGuard ng;
    y = m.forward(x, false, dg);
  }
  auto state = m.init_state(B);
  Tensor ys = Tensor::empty({B, L, D});
  for (int64_t t = 0; t < L; ++t) {
    Tensor xt = Tensor::empty({B, D});
    for (int64_t b = 0; b < B; ++b)
      std::copy(x.f32() + (b * L + t) * D, x.f32() + (b * L + t + 1) * D, xt.f32() + b * D);
    Tensor yt = m.step(*state, xt);
    ASSERT_EQ(yt.shape(), (Shape{B, D}));
    EXPECT_FALSE(yt.requires_grad());
    for (int64_t b = 0; b < B; ++b) std::copy(yt.f32() + b * D, yt.f32() + (b + 1) * D, ys.f32() + (b * L + t) * D);
  }
  EXPECT_EQ(state->t, L);
  EXPECT_EQ(tape().size(), 0u);
  EXPECT_TRUE(close_to_scale(ys, y, 1e-5));
  EXPECT_EQ(m.state_size(L), 4 * 4 * 8);  // H * dk * dv with Dk = 16, Dv = 32
  EXPECT_EQ(m.state_size(1), m.state_size(1000));
}

TEST(GlaMixer, IsCausal) {
  const int64_t B = 2, L = 140, D = 16, t0 = 77;
  Generator init_gen(12);
  GlaMixer m(D, small_options(2, 4), LayerInit{&init_gen, 1, DType::f32});
  randomise(m, 13);
  Generator gen(6), dg(0);
  Tensor x = rand_f32({B, L, D}, gen);
  NoGradGuard ng;
  Tensor y0 = m.forward(x, false, dg);
  Tensor x2 = x.clone();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < D; ++c) x2.f32()[(b * L + t0) * D + c] += 0.5f;
  Tensor y1 = m.forward(x2, false, dg);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < t0; ++t)
      for (int64_t c = 0; c < D; ++c)
        ASSERT_EQ(y0.f32()[(b * L + t) * D + c], y1.f32()[(b * L + t) * D + c]) << "b=" << b << " t=" << t;
    double diff = 0;
    for (int64_t c = 0; c < D; ++c) diff += std::fabs(y0.f32()[(b * L + t0) * D + c] - y1.f32()[(b * L + t0) * D + c]);
    EXPECT_GT(diff, 1e-4);
    diff = 0;
    for (int64_t c = 0; c < D; ++c) diff += std::fabs(y0.f32()[(b * L + L - 1) * D + c] - y1.f32()[(b * L + L - 1) * D + c]);
    EXPECT_GT(diff, 1e-6);  // the change reaches the end of the sequence through the state
  }
}

TEST(GlaMixer, ParameterNamesShapesAndInitialisation) {
  Generator gen(2024);
  const int64_t D = 256, n_layers = 4;
  GlaMixer m(D, GlaOptions{}, LayerInit{&gen, n_layers, DType::f32});
  NamedTensors ps;
  m.named_parameters("layers.0.mixer.", ps);
  const std::vector<std::pair<std::string, Shape>> expect = {
      {"layers.0.mixer.q_proj.weight", {128, 256}},  {"layers.0.mixer.k_proj.weight", {128, 256}},
      {"layers.0.mixer.v_proj.weight", {256, 256}},  {"layers.0.mixer.g_proj.weight", {256, 256}},
      {"layers.0.mixer.gk_proj.0.weight", {16, 256}}, {"layers.0.mixer.gk_proj.1.weight", {128, 16}},
      {"layers.0.mixer.gk_proj.1.bias", {128}},      {"layers.0.mixer.g_norm.weight", {64}},
      {"layers.0.mixer.o_proj.weight", {256, 256}}};
  ASSERT_EQ(ps.size(), expect.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_EQ(ps[i].first, expect[i].first);
    EXPECT_EQ(ps[i].second.shape(), expect[i].second) << ps[i].first;
    EXPECT_TRUE(ps[i].second.requires_grad()) << ps[i].first;
    EXPECT_EQ(ps[i].second.dtype(), DType::f32);
  }
  auto stats = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      s += t.item(i);
      s2 += t.item(i) * t.item(i);
    }
    const double mean = s / t.numel();
    return std::make_pair(mean, std::sqrt(s2 / t.numel() - mean * mean));
  };
  for (size_t i : {0, 1, 2, 3, 4, 5, 8}) {
    const double want = i == 8 ? 0.02 / std::sqrt(2.0 * n_layers) : 0.02;
    auto [mean, sd] = stats(ps[i].second);
    // Sample std of n normal draws has relative sd 1/sqrt(2n): n >= 2048 here, so 8% is > 5 sigma.
    EXPECT_NEAR(sd, want, 0.08 * want) << ps[i].first;
    EXPECT_NEAR(mean, 0.0, 5 * want / std::sqrt(double(ps[i].second.numel()))) << ps[i].first;
  }
  for (int64_t i = 0; i < 128; ++i) EXPECT_EQ(ps[6].second.item(i), 0.0);
  for (int64_t i = 0; i < 64; ++i) EXPECT_EQ(ps[7].second.item(i), 1.0);
  EXPECT_EQ(m.state_size(10), 4 * 32 * 64);

  // The same seed gives the same values in float64 (gradient-check layers start equal).
  Generator gen64(2024);
  GlaMixer m64(D, GlaOptions{}, LayerInit{&gen64, n_layers, DType::f64});
  NamedTensors p64;
  m64.named_parameters("", p64);
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_TRUE(ps[i].second.to_f32_vector() == p64[i].second.to(DType::f32).to_f32_vector()) << p64[i].first;
}

TEST(GlaMixer, RejectsBadConfigurationsAndInputs) {
  Generator gen(1);
  LayerInit init{&gen, 1, DType::f32};
  GlaOptions opt;
  opt.num_heads = 3;  // Dk = 16 * 0.5 = 8 not divisible by 3
  EXPECT_THROW(GlaMixer(16, opt, init), ShapeError);
  opt.num_heads = 2;
  opt.gate_logit_normalizer = 0;
  EXPECT_THROW(GlaMixer(16, opt, init), ShapeError);
  GlaMixer m(16, small_options(2, 4), init);
  Generator dg(0);
  EXPECT_THROW(m.forward(Tensor::zeros({2, 3, 15}), false, dg), ShapeError);
  auto st = m.init_state(2);
  EXPECT_THROW(m.step(*st, Tensor::zeros({3, 16})), ShapeError);
}

}  // namespace
