// Adam/AdamW, clipping and schedules against values computed by hand from the
// update formulas (PyTorch semantics).
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "optim/adam_kernels.h"
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

// Adam::step reports a non-finite value it wrote, in the vector body and in the scalar
// tail of a block (37 = 2 x 16 + 5 elements), for a NaN or infinite gradient and for a
// learning rate that overflows float32; finite steps report true.
TEST(Adam, StepReportsANonFiniteUpdate) {
  for (int64_t bad_at : {-1, 3, 35}) {
    for (float bad : {NAN, INFINITY}) {
      std::vector<float> w0(37), g(37);
      for (int i = 0; i < 37; ++i) {
        w0[static_cast<size_t>(i)] = 0.1f * static_cast<float>(i) - 1.0f;
        g[static_cast<size_t>(i)] = 0.01f * static_cast<float>(i % 7) - 0.02f;
      }
      if (bad_at >= 0) g[static_cast<size_t>(bad_at)] = bad;
      Tensor w = param({37}, w0);
      set_grad(w, g);
      Adam opt({{"w.weight", w}}, AdamOptions{true, 0.9, 0.999, 1e-8, 0.1});
      EXPECT_EQ(opt.step(1e-3), bad_at < 0) << "bad gradient at " << bad_at << ": " << bad;
    }
  }
  Tensor w = param({37}, std::vector<float>(37, 1.0f));
  set_grad(w, std::vector<float>(37, 0.5f));
  Adam opt({{"w.weight", w}}, AdamOptions{true, 0.9, 0.999, 1e-8, 0.0});
  EXPECT_FALSE(opt.step(1e39)) << "a learning rate beyond float32's range made every parameter infinite";
}

TEST(Adam, ParameterWithoutGradientIsUntouched) {
  Tensor w = param({2, 2}, {1, 2, 3, 4});
  Adam opt({{"w.weight", w}}, AdamOptions{true, 0.9, 0.999, 1e-8, 0.1});
  opt.step(0.1);
  EXPECT_EQ(w.to_f32_vector(), (std::vector<float>{1, 2, 3, 4}));
}

// The decay groups are the parameters' flags (set by the layers; tests/test_model.cpp
// checks them against the documented rule (docs/model.md#weight-decay-groups)): a 2-D tensor flagged not to decay is left alone.
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

std::vector<float> random_floats(int64_t n, uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(gen);
  return v;
}

// Distance in float ulps at magnitude `scale`.
double ulps(float got, float want, float scale) {
  const float ulp = std::nextafter(std::fabs(scale), INFINITY) - std::fabs(scale);
  return std::fabs(double(got) - double(want)) / ulp;
}

// The float32 block update against the old double loop, one step at a time from the same
// state: n = 1037 runs the 16-wide body and a 13-element tail. Gradients span 1e-7 to 1
// and eps is 1e-6, so the eps placement, the bias corrections and the decay all move p by
// far more than the 4 ulps allowed (lr 1e-2 on |p| ~ 1 is ~8e4 ulps); what remains is
// float32 rounding of p * (1 - lr wd), of the update and of their sum, so the ulp is
// taken at the larger of |p| before and after.
TEST(AdamKernel, FloatUpdateMatchesTheDoubleReference) {
  const int64_t n = 1037;
  for (bool decoupled : {true, false}) {
    AdamOptions o{decoupled, 0.9, 0.99, 1e-6, 0.1};
    std::vector<float> p = random_floats(n, 1, 1.0f), m(n, 0.0f), v(n, 0.0f);
    for (int64_t t = 1; t <= 5; ++t) {
      std::vector<float> g = random_floats(n, uint32_t(10 + t), 1.0f);
      for (int64_t i = 0; i < n; ++i) g[size_t(i)] *= std::pow(10.0f, -float(i % 8));  // 1 down to 1e-7
      const std::vector<float> p0 = p, m0 = m;
      std::vector<float> pr = p, mr = m, vr = v;
      adam_update_reference<float>(pr.data(), mr.data(), vr.data(), g.data(), n, 1e-2, o, true, t);
      adam_update_block<float>(p.data(), m.data(), v.data(), g.data(), n, adam_step_constants(1e-2, o, true, t, 1.0));
      for (int64_t i = 0; i < n; ++i) {
        const size_t k = size_t(i);
        // Adam's g + wd p may cancel: the scale of the terms, not of the result, bounds the
        // rounding (wd is rounded to float32 in the fast loop),
        // and g^2 doubles g's error: v gets 4 ulps like p.
        const float gs = std::max(std::fabs(g[k]), float(o.weight_decay) * std::fabs(p0[k]));
        const float mscale = std::max({std::fabs(mr[k]), std::fabs(m0[k]), float(1 - o.beta1) * gs});
        const float vscale = std::max(std::fabs(vr[k]), float(1 - o.beta2) * gs * gs);
        ASSERT_LE(ulps(m[k], mr[k], mscale), 2.0) << "m, decoupled " << decoupled << " step " << t << " i " << i;
        ASSERT_LE(ulps(v[k], vr[k], vscale), 4.0) << "v, decoupled " << decoupled << " step " << t << " i " << i;
        const float pscale = std::max(std::fabs(pr[k]), std::fabs(p0[k]));
        ASSERT_LE(ulps(p[k], pr[k], pscale), 4.0) << "p, decoupled " << decoupled << " step " << t << " i " << i;
      }
      p = pr, m = mr, v = vr;  // next step from the same state again
    }
  }
}

// Gradients over several tensors: three span several blocks (32K elements) and end
// mid-block, two are tiny; scales from 1e-3 to 10 so that a sum of the block sums in
// another order would round differently.
struct Model {
  NamedTensors params;
  explicit Model(uint32_t seed) {
    const std::vector<Shape> shapes = {{317, 331}, {5}, {70001}, {1, 1}, {1000, 1031}};
    const char* names[] = {"a.weight", "a.bias", "b", "c.weight", "d.weight"};
    const float scales[] = {0.01f, 1.0f, 0.001f, 10.0f, 0.03f};
    for (size_t k = 0; k < shapes.size(); ++k) {
      int64_t n = 1;
      for (int64_t d : shapes[k]) n *= d;
      Tensor t = param(shapes[k], random_floats(n, seed + uint32_t(k), 0.5f));
      set_grad(t, random_floats(n, seed + 100 + uint32_t(k), scales[k]));
      params.push_back({names[k], t});
    }
  }
  std::vector<float> flat() const {
    std::vector<float> out;
    for (const auto& [name, t] : params) {
      const std::vector<float> a = t.to_f32_vector(), g = t.grad().to_f32_vector();
      out.insert(out.end(), a.begin(), a.end());
      out.insert(out.end(), g.begin(), g.end());
    }
    return out;
  }
};

TEST(GradNorm, MatchesAPlainDoubleLoop) {
  Model model(7);
  double plain = 0;
  for (const auto& [name, t] : model.params)
    for (float x : t.grad().to_f32_vector()) plain += double(x) * double(x);
  EXPECT_NEAR(grad_norm(model.params), std::sqrt(plain), 1e-12 * std::sqrt(plain));
  EXPECT_NEAR(grad_norm_reference(model.params), std::sqrt(plain), 1e-12 * std::sqrt(plain));
}

// Norm, clip and three steps give the same bits on one thread and on two.
TEST(GradNorm, ClipAndStepAreBitIdenticalAcrossThreadCounts) {
  const int saved = omp_get_max_threads();
  std::vector<std::vector<float>> states;
  std::vector<double> norms;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    Model model(3);
    Adam opt(model.params, AdamOptions{true, 0.9, 0.95, 1e-8, 0.1});
    norms.push_back(grad_norm(model.params));
    for (int s = 0; s < 3; ++s) {
      clip_grad_norm(model.params, 0.5);
      opt.step(1e-3);
    }
    states.push_back(model.flat());
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[1], sizeof(double)), 0) << norms[0] << " vs " << norms[1];
  ASSERT_EQ(states[0].size(), states[1].size());
  EXPECT_EQ(std::memcmp(states[0].data(), states[1].data(), states[0].size() * sizeof(float)), 0);
}

// step(lr, clip_coefficient(grad_norm)) is clip_grad_norm then step(lr), bit for bit.
TEST(Clip, FoldedIntoTheStepGivesTheSameBits) {
  Model a(5), b(5);
  Adam oa(a.params, AdamOptions{true, 0.9, 0.95, 1e-8, 0.1}), ob(b.params, AdamOptions{true, 0.9, 0.95, 1e-8, 0.1});
  const double norm = clip_grad_norm(a.params, 0.5);
  oa.step(1e-3);
  const double coef = clip_coefficient(grad_norm(b.params), 0.5);
  ASSERT_LT(coef, 0.9);  // the clip is active
  ob.step(1e-3, coef);
  EXPECT_EQ(grad_norm(b.params), norm);  // the folded clip leaves the gradients as they were
  for (size_t k = 0; k < a.params.size(); ++k) {
    const std::vector<float> pa = a.params[k].second.to_f32_vector(), pb = b.params[k].second.to_f32_vector();
    EXPECT_EQ(std::memcmp(pa.data(), pb.data(), pa.size() * sizeof(float)), 0) << a.params[k].first;
  }
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
