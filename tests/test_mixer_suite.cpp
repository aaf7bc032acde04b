// The tests every mixer passes, one instance per row of the mixer registry (a new mixer
// gets them by adding its row, its small options and its documented shapes in
// tests/support/mixer_spec.cpp, and its reference twin in tests/support/reference_mixers.cpp):
// float64 gradient check, the fused layer against its reference twin, parallel against
// recurrent form, causality, parameter names and shapes against docs/mixers.md, bit-identical results
// across runs and thread counts, and bad arguments. The per-mixer files keep what is
// specific to one mixer (kernel shapes, chunk boundaries, initialisation).
#include <gtest/gtest.h>
#include <omp.h>

#include <string>
#include <vector>

#include "core/tape.h"
#include "layers/mixer_registry.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_spec.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_mixers.h"

namespace seqmix::testing {
namespace {

constexpr int64_t kD = 8;

class MixerSuite : public ::testing::TestWithParam<std::string> {
 protected:
  MixerOptions options() const { return small_mixer_options(GetParam()); }
  // A layer with U(-0.5, 0.5) parameters: the default init keeps pre-activations near 0,
  // which would hide errors in softmax, feature maps and gates.
  std::unique_ptr<Mixer> layer(DType dt, uint64_t seed = 1) const {
    Generator g(seed);
    auto m = mixer_entry(GetParam()).make(options(), kD, LayerInit{&g, 1, dt});
    Generator r(seed + 100);
    randomise(*m, r);
    return m;
  }
};

// Every parameter and every input element, central differences in float64, at a length
// that is odd and not a multiple of any vector width.
TEST_P(MixerSuite, GradCheckFloat64) {
  SingleThread one;
  auto m = layer(DType::f64);
  Generator gen(3);
  std::vector<Tensor> inputs{rand_f64({2, 7, kD}, gen)};
  for (auto& [name, p] : params_of(*m)) inputs.push_back(p);
  Generator unused(0);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return m->forward(in[0], true, unused); }, inputs));
}

TEST_P(MixerSuite, FusedMatchesReferenceTwin) {
  auto m = layer(DType::f64);
  Generator gen(4);
  const Tensor x = rand_f64({2, 67, kD}, gen, -1, 1, false);  // 67: past a chunk of 64
  NoGradGuard ng;
  Generator unused(0);
  EXPECT_TRUE(allclose(m->forward(x, false, unused), reference_mixer_forward(*m, options(), x), 1e-9, 1e-11));
}

TEST_P(MixerSuite, RecurrentStepsMatchParallelForm) {
  SingleThread one;
  auto m = layer(DType::f64);
  Generator gen(5);
  const int64_t B = 2, L = 23;
  const Tensor x = rand_f64({B, L, kD}, gen, -1, 1, false);
  NoGradGuard ng;
  Generator unused(0);
  const Tensor y = m->forward(x, false, unused);
  auto state = m->init_state(B);
  for (int64_t t = 0; t < L; ++t) {
    Tensor xt = Tensor::empty({B, kD}, DType::f64);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < kD; ++e) xt.f64()[b * kD + e] = x.f64()[(b * L + t) * kD + e];
    const Tensor yt = m->step(*state, xt);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < kD; ++e)
        ASSERT_NEAR(yt.f64()[b * kD + e], y.f64()[(b * L + t) * kD + e], 1e-10) << "t " << t << " b " << b;
  }
  EXPECT_EQ(state->t, L);
}

TEST_P(MixerSuite, Causal) {
  auto m = layer(DType::f64);
  Generator gen(6);
  // 140 crosses the chunk boundaries of the chunked kernels at 64 and 128.
  expect_causal(*m, rand_f64({2, 140, kD}, gen, -1, 1, false), {0, 5, 64, 70, 139});
}

TEST_P(MixerSuite, ParameterNamesAndShapesFollowSpec) {
  auto m = layer(DType::f32);
  std::vector<std::pair<std::string, Shape>> got;
  for (auto& [name, p] : params_of(*m)) got.emplace_back(name, p.shape());
  EXPECT_EQ(got, spec_mixer_parameters(options(), kD));
}

// Forward and backward in float32 at a size where the kernels and the projections run in
// parallel: the same bits twice on all threads and once on one thread.
TEST_P(MixerSuite, BitIdenticalAcrossRunsAndThreadCounts) {
  const int saved = omp_get_max_threads();
  Generator gen(7);
  const int64_t D = 32;
  MixerOptions opt = options();
  const Tensor x0 = rand_f32({4, 150, D}, gen);
  Generator rg(8);
  const Tensor r = rand_f32({4, 150, D}, rg);
  std::vector<std::vector<std::vector<float>>> runs;
  for (int threads : {saved, saved, 1}) {
    omp_set_num_threads(threads);
    Generator g(9);
    auto m = mixer_entry(GetParam()).make(opt, D, LayerInit{&g, 1, DType::f32});
    Tensor x = x0.clone().set_requires_grad(true);
    Generator drop(10);
    const Tensor y = m->forward(x, true, drop);
    backward_weighted(y, r);
    std::vector<std::vector<float>> run{y.to_f32_vector(), x.grad().to_f32_vector()};
    for (auto& [name, p] : params_of(*m)) run.push_back(p.grad().to_f32_vector());
    runs.push_back(run);
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(runs[0], runs[1]) << "two runs on " << saved << " threads differ";
  EXPECT_EQ(runs[0], runs[2]) << saved << " threads and 1 thread differ";
}

TEST_P(MixerSuite, RejectsBadArguments) {
  const MixerEntry& e = mixer_entry(GetParam());
  Generator g(1);
  EXPECT_THROW(e.make(options(), 0, LayerInit{&g, 1, DType::f32}), ShapeError);
  auto m = layer(DType::f32);
  Generator unused(0);
  EXPECT_THROW(m->forward(Tensor::zeros({2, 3, kD + 1}), false, unused), ShapeError);  // wrong width
  EXPECT_THROW(m->forward(Tensor::zeros({3, kD}), false, unused), ShapeError);         // no batch axis
  auto state = m->init_state(2);
  EXPECT_THROW(m->step(*state, Tensor::zeros({3, kD})), ShapeError);  // batch differs from the state's
  // A state of another mixer type.
  for (const MixerEntry& other : mixer_registry()) {
    if (other.name == e.name) continue;
    Generator g2(2);
    auto o = other.make(small_mixer_options(other.name), kD, LayerInit{&g2, 1, DType::f32});
    auto foreign = o->init_state(2);
    EXPECT_THROW(m->step(*foreign, Tensor::zeros({2, kD})), ShapeError) << "state of " << other.name;
    break;
  }
  // The config's rules and the constructor's are one: a problem the rules find is thrown.
  OptionCheck check;
  e.check(options(), -1, check);
  EXPECT_FALSE(check.ok());
}

INSTANTIATE_TEST_SUITE_P(Registry, MixerSuite, ::testing::ValuesIn(mixer_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace seqmix::testing
