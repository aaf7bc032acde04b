// Adam/AdamW, clipping and schedules against values computed by hand from the
// update formulas (PyTorch semantics).
#include <gtest/gtest.h>

#include <cmath>

#include "optim/adamw.h"
#include "optim/schedule.h"

using namespace seqmix;

namespace {

Tensor param(const Shape& s, const std::vector<float>& v) {
  Tensor t = Tensor::from_vector(s, v);
  t.set_requires_grad(true);
  return t;
}

void set_grad(const Tensor& p, const std::vector<float>& g) {
  Tensor buf = p.grad_buffer();
  for (size_t i = 0; i < g.size(); ++i) buf.f32()[i] = g[i];
}

// A hand-written scalar Adam(W), in double, for a few steps.
double reference(double p, const std::vector<double>& grads, double lr, double b1, double b2, double eps, double wd,
                 bool decoupled) {
  double m = 0, v = 0;
  for (size_t t = 1; t <= grads.size(); ++t) {
    double g = grads[t - 1];
    if (decoupled) p *= 1 - lr * wd; else g += wd * p;
    m = b1 * m + (1 - b1) * g;
    v = b2 * v + (1 - b2) * g * g;
    double mhat = m / (1 - std::pow(b1, t));
    double vhat = v / (1 - std::pow(b2, t));
    p -= lr * mhat / (std::sqrt(vhat) + eps);
  }
  return p;
}

TEST(Adam, AdamWMatchesHandComputedSteps) {
  Tensor w = param({2, 2}, {0.5f, -1.0f, 2.0f, 0.25f});   // 2-D: decayed
  Tensor b = param({2}, {0.1f, -0.2f});                  // bias: not decayed
  AdamOptions o{true, 0.9, 0.99, 1e-8, 0.1};
  Adam opt({{"layer.weight", w}, {"layer.bias", b}}, o);
  std::vector<std::vector<float>> gw = {{0.1f, -0.3f, 0.5f, 0.0f}, {0.2f, 0.1f, -0.4f, 1.0f}, {-0.5f, 0.3f, 0.2f, -0.1f}};
  std::vector<std::vector<float>> gb = {{1.0f, -1.0f}, {0.5f, 0.5f}, {-2.0f, 0.1f}};
  const double lr = 1e-2;
  std::vector<float> w0 = w.to_f32_vector(), b0 = b.to_f32_vector();
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    set_grad(w, gw[s]);
    set_grad(b, gb[s]);
    opt.step(lr);
  }
  EXPECT_EQ(opt.step_count(), 3);
  for (int i = 0; i < 4; ++i) {
    std::vector<double> gs = {gw[0][i], gw[1][i], gw[2][i]};
    EXPECT_NEAR(w.f32()[i], reference(w0[i], gs, lr, 0.9, 0.99, 1e-8, 0.1, true), 1e-6) << i;
  }
  for (int i = 0; i < 2; ++i) {
    std::vector<double> gs = {gb[0][i], gb[1][i], gb[2][i]};
    EXPECT_NEAR(b.f32()[i], reference(b0[i], gs, lr, 0.9, 0.99, 1e-8, 0.0, true), 1e-6) << i;
  }
}

TEST(Adam, AdamFoldsWeightDecayIntoTheGradient) {
  Tensor w = param({1, 3}, {1.0f, -2.0f, 0.5f});
  Adam opt({{"w.weight", w}}, AdamOptions{false, 0.9, 0.999, 1e-8, 0.5});
  std::vector<float> w0 = w.to_f32_vector();
  for (int s = 0; s < 4; ++s) {
    opt.zero_grad();
    set_grad(w, {0.3f, 0.3f, -0.3f});
    opt.step(0.05);
  }
  for (int i = 0; i < 3; ++i) {
    double g = i == 2 ? -0.3 : 0.3;
    EXPECT_NEAR(w.f32()[i], reference(w0[i], {g, g, g, g}, 0.05, 0.9, 0.999, 1e-8, 0.5, false), 4e-6);  // float32 state
  }
}

TEST(Adam, ParameterWithoutGradientIsUntouched) {
  Tensor w = param({2, 2}, {1, 2, 3, 4});
  Adam opt({{"w.weight", w}}, AdamOptions{true, 0.9, 0.999, 1e-8, 0.1});
  opt.step(0.1);
  EXPECT_EQ(w.to_f32_vector(), (std::vector<float>{1, 2, 3, 4}));
}

// The decay groups are the parameters' flags (set by the layers; tests/test_model.cpp
// checks them against SPEC's rule): a 2-D tensor flagged not to decay is left alone.
TEST(Adam, DecayFollowsTheParameterFlag) {
  Tensor a = param({2, 2}, {1, 1, 1, 1}), b = param({2, 2}, {1, 1, 1, 1});
  set_grad(a, {0, 0, 0, 0});
  set_grad(b, {0, 0, 0, 0});
  Adam opt(Parameters{{"a", a, kDecay}, {"b", b, kNoDecay}}, AdamOptions{true, 0.9, 0.999, 1e-8, 0.5});
  EXPECT_TRUE(opt.slots()[0].decay);
  EXPECT_FALSE(opt.slots()[1].decay);
  opt.step(0.1);
  EXPECT_FLOAT_EQ(a.f32()[0], 0.95f);  // p * (1 - lr * wd)
  EXPECT_FLOAT_EQ(b.f32()[0], 1.0f);
}

TEST(Clip, ScalesToMaxNormAndReportsTheNormBefore) {
  Tensor a = param({2}, {0, 0}), b = param({1, 2}, {0, 0});
  set_grad(a, {3.0f, 0.0f});
  set_grad(b, {0.0f, 4.0f});
  NamedTensors ps = {{"a", a}, {"b", b}};
  EXPECT_NEAR(clip_grad_norm(ps, 1.0), 5.0, 1e-9);
  const double coef = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad().f32()[0], 3.0 * coef, 1e-7);
  EXPECT_NEAR(b.grad().f32()[1], 4.0 * coef, 1e-7);
  EXPECT_NEAR(grad_norm(ps), 1.0, 1e-5);
  // Below the threshold nothing changes.
  EXPECT_NEAR(clip_grad_norm(ps, 10.0), 1.0, 1e-5);
  EXPECT_NEAR(a.grad().f32()[0], 3.0 * coef, 1e-7);
}

TEST(Schedule, ConstantWarmupAndCosine) {
  LrSchedule c{"constant", 1e-3, 0, 0, 100};
  EXPECT_DOUBLE_EQ(c.at(0), 1e-3);
  EXPECT_DOUBLE_EQ(c.at(99), 1e-3);
  LrSchedule w{"linear_warmup", 1e-3, 0, 9, 100};
  EXPECT_DOUBLE_EQ(w.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(w.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(w.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(w.at(50), 1e-3);
  LrSchedule cos{"cosine", 1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(cos.at(10), 1e-3);
  EXPECT_NEAR(cos.at(60), 1e-4 + 0.5 * (1e-3 - 1e-4), 1e-15);  // halfway: the mean of lr and floor
  EXPECT_NEAR(cos.at(110), 1e-4, 1e-15);
  EXPECT_DOUBLE_EQ(cos.at(500), 1e-4);
  EXPECT_LT(cos.at(80), cos.at(70));
  EXPECT_THROW((LrSchedule{"linear", 1e-3, 0, 0, 10}.validate()), std::invalid_argument);
}

}  // namespace
