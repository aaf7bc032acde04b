// Gated linear attention (docs/mixers.md#gla), what is specific to it: the fused
// recurrence, in both of its forms (chunked and recurrent, layers/gla_kernel.cpp), and the
// output gate against plain-loop references (float32 and float64, forward and backward),
// float64 gradient checks of those ops, exponent safety under very strong gates, results
// independent of the thread count, the initialisation and the option rules. The layer's
// gradient check, twin, recurrent form, causality and determinism are the shared suite's
// (tests/test_mixer_suite.cpp).
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
#include "layers/gla_kernel.h"
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

// Both forms of the kernel, whatever the head size would choose.
constexpr GlaForm kForms[] = {GlaForm::kChunked, GlaForm::kRecurrent};

const char* form_name(GlaForm f) { return f == GlaForm::kChunked ? "chunked" : "recurrent"; }

class GlaCoreTest : public ::testing::TestWithParam<CoreCase> {};

// Fused float32 and float64, each form, against the step-by-step double recurrence,
// forward and backward.
TEST_P(GlaCoreTest, FusedMatchesReferenceForwardAndBackward) {
  const CoreCase c = GetParam();
  const double scale = 1.0 / std::sqrt(double(c.dk));
  for (GlaForm form : kForms) {
    for (DType dt : {DType::f32, DType::f64}) {
      CoreInputs in = core_inputs(c, dt, 11);
      tape().clear();
      Tensor o = gla_chunk_attention(in.q, in.k, in.v, in.u, c.H, scale, c.normalizer, form);
      Tensor ref = reference_gla_core(in.q, in.k, in.v, in.u, c.H, scale, c.normalizer);
      const double rtol = dt == DType::f32 ? 1e-5 : 1e-12;
      EXPECT_TRUE(close_to_scale(o, ref, rtol)) << "forward " << form_name(form) << " " << dtype_name(dt);
      Generator gen(5);
      Tensor dO = rand_f64(o.shape(), gen, -1, 1, false);
      backward(weighted_sum(o, dO));
      std::vector<Tensor> rg = reference_gla_core_backward(in.q, in.k, in.v, in.u, dO, c.H, scale, c.normalizer);
      const char* names[] = {"dq", "dk", "dv", "du"};
      const Tensor* got[] = {&in.q, &in.k, &in.v, &in.u};
      for (int i = 0; i < 4; ++i)
        EXPECT_TRUE(close_to_scale(got[i]->grad(), rg[i], dt == DType::f32 ? 2e-5 : 1e-11))
            << names[i] << " " << form_name(form) << " " << dtype_name(dt);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, GlaCoreTest,
    ::testing::Values(CoreCase{1, 1, 1, 1, 1, -3, 3, 16}, CoreCase{2, 7, 3, 5, 3, -3, 3, 1},
                      CoreCase{1, 64, 2, 8, 8, -4, 4, 1}, CoreCase{3, 67, 2, 7, 9, -3, 3, 4},
                      CoreCase{2, 129, 1, 16, 17, -2, 2, 16}, CoreCase{2, 300, 4, 16, 32, -2, 2, 16},
                      CoreCase{1, 300, 2, 12, 20, -6, 1, 1},
                      // Very strong gates: log a down to -200 per step; e^{b} underflows inside a chunk.
                      CoreCase{2, 200, 2, 9, 11, -200, 2, 1},
                      // The Zoology study's heads (dk 4 and 8, dv 8 and 16, 4 heads), L = 32, 64,
                      // 100 (a partial chunk) and 128, weak gates (normaliser 16: log a >= -0.2)
                      // and strong ones (normaliser 1, log a down to -20 per step).
                      CoreCase{2, 32, 4, 4, 8, -3, 3, 16}, CoreCase{2, 32, 4, 8, 16, -20, 2, 1},
                      CoreCase{2, 64, 4, 4, 8, -20, 2, 1}, CoreCase{2, 64, 4, 8, 16, -3, 3, 16},
                      CoreCase{2, 100, 4, 4, 8, -3, 3, 16}, CoreCase{2, 100, 4, 8, 16, -20, 2, 1},
                      CoreCase{2, 128, 4, 4, 8, -20, 2, 1}, CoreCase{2, 128, 4, 8, 16, -3, 3, 16},
                      CoreCase{1, 100, 4, 4, 8, -200, 2, 1},
                      // dv = 64, and a head past kRecurrentState (dk dv = 4608: the chunked form
                      // by default).
                      CoreCase{1, 67, 2, 8, 64, -3, 3, 16}, CoreCase{1, 70, 1, 64, 72, -3, 3, 16}),
    core_name);

TEST(GlaCore, GradCheckFloat64) {
  // L = 1, 7 (inside one sub-chunk), 67 and 130 (across sub-chunk and chunk boundaries);
  // dv = 8 takes the recurrent form's fixed-width loops. Both forms.
  ThreadCount single_thread(1);
  const std::vector<CoreCase> cases = {{1, 1, 2, 3, 2, -3, 3, 1},
                                       {3, 7, 2, 3, 4, -3, 3, 1},
                                       {1, 67, 3, 2, 3, -3, 3, 1},
                                       {2, 130, 1, 3, 2, -2, 2, 16},
                                       {1, 70, 2, 2, 8, -3, 3, 1}};
  for (GlaForm form : kForms) {
    for (const CoreCase& c : cases) {
      CoreInputs in = core_inputs(c, DType::f64, 3);
      const double scale = 1.0 / std::sqrt(double(c.dk));
      EXPECT_TRUE(gradcheck(
          [&](const std::vector<Tensor>& x) {
            return gla_chunk_attention(x[0], x[1], x[2], x[3], c.H, scale, c.normalizer, form);
          },
          {in.q, in.k, in.v, in.u}))
          << "L=" << c.L << " dv=" << c.dv << " " << form_name(form);
    }
  }
}

// Each form gives the same bits on 1 and 2 threads (a shape large enough to run parallel).
TEST(GlaCore, SameResultOnAnyThreadCount) {
  const CoreCase c{8, 130, 4, 8, 16, -6, 3, 16};
  for (GlaForm form : kForms) {
    std::vector<Tensor> runs[2];
    for (int threads : {1, 2}) {
      ThreadCount tc(threads);
      CoreInputs in = core_inputs(c, DType::f32, 7);
      tape().clear();
      Tensor o = gla_chunk_attention(in.q, in.k, in.v, in.u, c.H, 0.3, c.normalizer, form);
      Generator gen(5);
      backward(weighted_sum(o, rand_f64(o.shape(), gen, -1, 1, false)));
      runs[threads - 1] = {o, in.q.grad(), in.k.grad(), in.v.grad(), in.u.grad()};
    }
    for (size_t i = 0; i < runs[0].size(); ++i)
      EXPECT_TRUE(same_values(runs[0][i], runs[1][i])) << form_name(form) << " output " << i;
  }
}

TEST(GlaCore, SkipsInputsThatNeedNoGradient) {
  for (GlaForm form : kForms) {
    CoreInputs in = core_inputs({1, 70, 2, 3, 4, -3, 3, 1}, DType::f64, 4);
    Tensor q = in.q.detach(), k = in.k.detach(), u = in.u.detach();
    tape().clear();
    Tensor o = gla_chunk_attention(q, k, in.v, u, 2, 0.5, 1.0, form);
    Generator gen(1);
    Tensor dO = rand_f64(o.shape(), gen, -1, 1, false);
    backward(weighted_sum(o, dO));
    auto rg = reference_gla_core_backward(q, k, in.v, u, dO, 2, 0.5, 1.0);
    EXPECT_TRUE(allclose(in.v.grad(), rg[2], 1e-11, 1e-11)) << form_name(form);
    EXPECT_FALSE(q.grad().defined());
    EXPECT_FALSE(u.grad().defined());
  }
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

// Names and shapes are the shared suite's (tests/test_mixer_suite.cpp); here the values.
TEST(GlaMixer, Initialisation) {
  Generator gen(2024);
  const int64_t D = 256, n_layers = 4;
  GlaMixer m(D, GlaOptions{}, LayerInit{&gen, n_layers, DType::f32});
  NamedTensors ps;
  m.named_parameters("", ps);
  ASSERT_EQ(ps.size(), 9u);
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

  // The same seed gives the same values in float64 (gradient-check layers start equal).
  Generator gen64(2024);
  GlaMixer m64(D, GlaOptions{}, LayerInit{&gen64, n_layers, DType::f64});
  NamedTensors p64;
  m64.named_parameters("", p64);
  for (size_t i = 0; i < ps.size(); ++i)
    EXPECT_TRUE(ps[i].second.to_f32_vector() == p64[i].second.to(DType::f32).to_f32_vector()) << p64[i].first;
}

// The option rules (the shared suite checks the inputs and states).
TEST(GlaMixer, RejectsBadOptions) {
  Generator gen(1);
  LayerInit init{&gen, 1, DType::f32};
  GlaOptions opt;
  opt.num_heads = 3;  // Dk = 16 * 0.5 = 8 not divisible by 3
  EXPECT_THROW(GlaMixer(16, opt, init), ShapeError);
  opt.num_heads = 2;
  opt.gate_logit_normalizer = 0;
  EXPECT_THROW(GlaMixer(16, opt, init), ShapeError);
}

}  // namespace
