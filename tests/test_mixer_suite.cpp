// The tests every mixer passes, one instance per row of the mixer registry. A new mixer gets
// them by adding its row in tests/support/mixer_spec.cpp: its documented parameters and
// state size, its reference twin (tests/support/reference_twin.h) and the options it is
// tested at. The cases:
// - per option variant of the row (Variants/MixerVariant.*/<mixer>_<variant>): the float64
//   finite-difference gradient check of every parameter and input element, the fused layer
//   against its twin in float64 (forward and every gradient, past a chunk of 64), the
//   recurrent steps against the parallel form in float64 and float32 across chunk and cache
//   boundaries, and causality;
// - per mixer (Registry/MixerSuite.*/<mixer>): the float32 layer against the twin at L = 300,
//   parameter names and shapes against docs/mixers.md, bit-identical results across runs and
//   thread counts, and bad arguments.
// The per-mixer files keep what is specific to one mixer (kernel shapes, chunk boundaries,
// initialisation, dropout).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <string>
#include <vector>

#include "core/tape.h"
#include "layers/mixer_registry.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_spec.h"
#include "tests/support/mixer_testing.h"

namespace seqmix::testing {
namespace {

std::unique_ptr<Mixer> build(const std::string& type, const MixerOptions& opt, int64_t d_model, DType dt,
                             uint64_t seed) {
  Generator g(seed);
  return mixer_entry(type).make(opt, d_model, LayerInit{&g, 1, dt});
}

// A layer with U(lo, hi) parameters: the default init keeps pre-activations near 0, which
// would hide errors in softmax, feature maps and gates.
std::unique_ptr<Mixer> randomised(const std::string& type, const MixerOptions& opt, int64_t d_model, DType dt,
                                  uint64_t seed, double range = 0.5) {
  auto m = build(type, opt, d_model, dt, seed);
  Generator r(seed + 100);
  randomise(*m, r, -range, range);
  return m;
}

// |got - ref| <= rtol * (|ref| + rms(ref)) element by element (see Float32Case).
::testing::AssertionResult close_to_twin(const Tensor& got, const Tensor& ref, double rtol, const std::string& what) {
  if (!got.defined()) return ::testing::AssertionFailure() << what << ": no gradient";
  if (got.numel() != ref.numel())
    return ::testing::AssertionFailure() << what << ": " << got.numel() << " elements, the twin " << ref.numel();
  double ss = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) ss += ref.item(i) * ref.item(i);
  const double rms = std::sqrt(ss / std::max<int64_t>(ref.numel(), 1));
  double worst = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double err = std::fabs(got.item(i) - ref.item(i)) / (rtol * (std::fabs(ref.item(i)) + rms) + 1e-300);
    if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err, wi = i;
  }
  if (worst > 1.0)
    return ::testing::AssertionFailure() << what << ": element " << wi << " is " << got.item(wi) << ", the twin's "
                                         << ref.item(wi) << " (" << worst << " x tolerance " << rtol << ", rms " << rms
                                         << ")";
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------
// Per option variant.
// ---------------------------------------------------------------------------

struct VariantParam {
  std::string mixer;
  size_t index;
  const MixerVariant& variant() const { return mixer_test_spec(mixer).variants[index]; }
};
void PrintTo(const VariantParam& p, std::ostream* os) { *os << p.mixer << "_" << p.variant().label; }

std::vector<VariantParam> all_variants() {
  std::vector<VariantParam> out;
  for (const std::string& name : mixer_names())
    if (const MixerTestSpec* spec = find_mixer_test_spec(name))
      for (size_t i = 0; i < spec->variants.size(); ++i) out.push_back({name, i});
  return out;
}

class MixerVariant : public ::testing::TestWithParam<VariantParam> {
 protected:
  const MixerTestSpec& spec() const { return mixer_test_spec(GetParam().mixer); }
  const seqmix::testing::MixerVariant& variant() const { return GetParam().variant(); }
  std::unique_ptr<Mixer> layer(DType dt, uint64_t seed = 1) const {
    auto m = randomised(GetParam().mixer, variant().options, variant().d_model, dt, seed);
    if (variant().adjust) variant().adjust(*m);
    return m;
  }
};

// Every parameter and every input element, central differences in float64. Training mode:
// a fresh generator per evaluation draws the same dropout mask each time.
TEST_P(MixerVariant, GradCheckFloat64) {
  ThreadCount one(1);
  auto m = layer(DType::f64);
  Generator gen(3);
  std::vector<Tensor> inputs{rand_f64({variant().batch, variant().length, variant().d_model}, gen)};
  for (auto& [name, p] : params_of(*m)) inputs.push_back(p);
  GradCheckOptions opt;
  opt.atol = spec().grad_atol;
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>& in) {
        Generator drop(5);
        return m->forward(in[0], true, drop);
      },
      inputs, opt));
}

// The fused layer against the plain-loop twin in float64, forward and the gradients of the
// input and of every parameter, at a length past a chunk of 64.
TEST_P(MixerVariant, FusedMatchesReferenceTwinFloat64) {
  auto m = layer(DType::f64);
  Generator gen(4);
  const int64_t B = 2, L = 67, D = variant().d_model;
  const Tensor x = rand_f64({B, L, D}, gen);
  const Tensor dy = rand_f64({B, L, D}, gen, -1, 1, false);
  Generator unused(0);
  const Tensor y = m->forward(x, false, unused);
  backward_weighted(y, dy);
  const NamedTensors params = params_of(*m);
  EXPECT_TRUE(allclose(y, spec().reference_forward(params, variant().options, x), 1e-9, 1e-11)) << "forward";
  const ReferenceGrads g = spec().reference_backward(params, variant().options, x, dy);
  EXPECT_TRUE(allclose(x.grad(), g.dx, 1e-9, 1e-11)) << "dx";
  ASSERT_EQ(g.params.size(), params.size());
  for (size_t k = 0; k < params.size(); ++k)
    EXPECT_TRUE(allclose(params[k].second.grad(), g.params[k], 1e-9, 1e-11)) << params[k].first;
}

// 150 decoding steps against the parallel form: past the chunked kernels' chunks at 64 and
// 128 and the KV cache's growth; in float64 to rounding, in float32 to 1e-5 of the output's
// scale. A step records nothing on the tape and gives an output without a gradient.
TEST_P(MixerVariant, RecurrentStepsMatchParallelForm) {
  ThreadCount one(1);  // decoding steps are tiny
  for (DType dt : {DType::f64, DType::f32}) {
    auto m = layer(dt);
    Generator gen(5);
    const int64_t B = 2, L = 150, D = variant().d_model;
    const Tensor x = dt == DType::f64 ? rand_f64({B, L, D}, gen, -1, 1, false) : rand_f32({B, L, D}, gen);
    Tensor y;
    {
      NoGradGuard ng;
      Generator unused(0);
      y = m->forward(x, false, unused);
    }
    auto state = m->init_state(B);
    const size_t tape_before = tape().size();
    const double tol = (dt == DType::f64 ? 1e-13 : 1e-5) * max_abs(y);
    for (int64_t t = 0; t < L; ++t) {
      const Tensor yt = m->step(*state, time_slice(x, t));
      ASSERT_EQ(yt.shape(), (Shape{B, D}));
      ASSERT_FALSE(yt.requires_grad());
      const Tensor want = time_slice(y, t);
      for (int64_t i = 0; i < yt.numel(); ++i)
        ASSERT_NEAR(yt.item(i), want.item(i), tol) << dtype_name(dt) << " t " << t << " element " << i;
    }
    EXPECT_EQ(tape().size(), tape_before) << "step recorded on the tape";
    EXPECT_EQ(state->t, L);
    EXPECT_EQ(m->state_size(L), spec().state_size(variant().options, D, L));
  }
}

// Changing input t0 leaves every earlier output bit-identical and changes output t0.
// 140 crosses the chunked kernels' boundaries
// at 64 and 128.
TEST_P(MixerVariant, Causal) {
  auto m = layer(DType::f64);
  Generator gen(6);
  expect_causal(*m, rand_f64({2, 140, variant().d_model}, gen, -1, 1, false), {0, 5, 64, 70, 139});
}

INSTANTIATE_TEST_SUITE_P(Variants, MixerVariant, ::testing::ValuesIn(all_variants()),
                         ::testing::PrintToStringParamName());

// ---------------------------------------------------------------------------
// Per mixer.
// ---------------------------------------------------------------------------

class MixerSuite : public ::testing::TestWithParam<std::string> {
 protected:
  const MixerTestSpec& spec() const { return mixer_test_spec(GetParam()); }
  MixerOptions options() const { return spec().small; }
  std::unique_ptr<Mixer> layer(DType dt, uint64_t seed = 1) const {
    return randomised(GetParam(), options(), kSmallDModel, dt, seed);
  }
};

// Without a row the mixer would silently miss every case above.
TEST_P(MixerSuite, HasATestRow) {
  ASSERT_NE(find_mixer_test_spec(GetParam()), nullptr)
      << "mixer '" << GetParam() << "' has no test row: add one to mixer_test_specs() in tests/support/mixer_spec.cpp";
  EXPECT_FALSE(spec().variants.empty());
}

// The float32 layer (oneDNN projections, blocked and threaded kernels) against the twin in
// double: the output and the gradients of the input and of every parameter.
TEST_P(MixerSuite, Float32MatchesReferenceTwin) {
  const Float32Case& c = spec().float32;
  auto m = randomised(GetParam(), c.options, c.d_model, DType::f32, 8, 0.3);
  Generator gen(9);
  const Tensor x = rand_f32({c.batch, c.length, c.d_model}, gen, -1, 1, true);
  const Tensor dy = rand_f32({c.batch, c.length, c.d_model}, gen);
  Generator unused(0);
  const Tensor y = m->forward(x, false, unused);
  backward_weighted(y, dy);
  const NamedTensors params = params_of(*m);
  EXPECT_TRUE(close_to_twin(y, spec().reference_forward(params, c.options, x), c.rtol, "forward"));
  const ReferenceGrads g = spec().reference_backward(params, c.options, x, dy);
  EXPECT_TRUE(close_to_twin(x.grad(), g.dx, c.rtol, "dx"));
  ASSERT_EQ(g.params.size(), params.size());
  for (size_t k = 0; k < params.size(); ++k)
    EXPECT_TRUE(close_to_twin(params[k].second.grad(), g.params[k], c.rtol, params[k].first));
}

// Names, shapes, dtype and requires_grad of every parameter, for every option variant.
TEST_P(MixerSuite, ParameterNamesAndShapesFollowSpec) {
  std::vector<std::pair<MixerOptions, int64_t>> cases{{options(), kSmallDModel}};
  for (const auto& v : spec().variants) cases.emplace_back(v.options, v.d_model);
  for (const auto& [opt, D] : cases) {
    auto m = build(GetParam(), opt, D, DType::f32, 1);
    NamedTensors p;
    m->named_parameters("layers.3.mixer.", p);
    const auto want = spec().parameters(opt, D);
    ASSERT_EQ(p.size(), want.size()) << "d_model " << D;
    for (size_t k = 0; k < p.size(); ++k) {
      EXPECT_EQ(p[k].first, "layers.3.mixer." + want[k].first);
      EXPECT_EQ(p[k].second.shape(), want[k].second) << p[k].first << " at d_model " << D;
      EXPECT_EQ(p[k].second.dtype(), DType::f32) << p[k].first;
      EXPECT_TRUE(p[k].second.requires_grad()) << p[k].first;
    }
  }
}

// Forward and backward in float32 at a size where the kernels and the projections run in
// parallel: the same bits twice on all threads and once on one thread.
// The row's float32 options: Mamba's D 37 spans two channel groups of the scan.
TEST_P(MixerSuite, BitIdenticalAcrossRunsAndThreadCounts) {
  const int saved = omp_get_max_threads();
  Generator gen(7);
  const int64_t D = spec().float32.d_model;
  const MixerOptions opt = spec().float32.options;
  const Tensor x0 = rand_f32({4, 150, D}, gen);
  Generator rg(8);
  const Tensor r = rand_f32({4, 150, D}, rg);
  std::vector<std::vector<std::vector<float>>> runs;
  for (int threads : {saved, saved, 1}) {
    omp_set_num_threads(threads);
    auto m = build(GetParam(), opt, D, DType::f32, 9);
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

// An input that needs no gradient gets none (the kernels skip it); every parameter does.
TEST_P(MixerSuite, InputWithoutGradientGetsNone) {
  auto m = layer(DType::f32);
  Generator gen(11);
  const Tensor x = rand_f32({2, 9, kSmallDModel}, gen);
  Generator unused(0);
  backward_weighted(m->forward(x, true, unused), rand_f32({2, 9, kSmallDModel}, gen));
  EXPECT_FALSE(x.grad().defined());
  for (auto& [name, p] : params_of(*m)) EXPECT_TRUE(p.grad().defined()) << name;
}

TEST_P(MixerSuite, RejectsBadArguments) {
  const MixerEntry& e = mixer_entry(GetParam());
  Generator g(1);
  EXPECT_THROW(e.make(options(), 0, LayerInit{&g, 1, DType::f32}), ShapeError);
  auto m = layer(DType::f32);
  Generator unused(0);
  const int64_t D = kSmallDModel;
  EXPECT_THROW(m->forward(Tensor::zeros({2, 3, D + 1}), false, unused), ShapeError);  // wrong width
  EXPECT_THROW(m->forward(Tensor::zeros({3, D}), false, unused), ShapeError);         // no batch axis
  EXPECT_THROW(m->forward(Tensor::zeros({2, 3, D}, DType::f64), false, unused), ShapeError);  // the layer's dtype
  auto state = m->init_state(2);
  EXPECT_THROW(m->step(*state, Tensor::zeros({3, D})), ShapeError);  // batch differs from the state's
  MixerState base;
  EXPECT_THROW(m->step(base, Tensor::zeros({2, D})), ShapeError);  // not a state of any mixer
  // A state of another mixer type.
  for (const MixerEntry& other : mixer_registry()) {
    if (other.name == e.name) continue;
    Generator g2(2);
    auto o = other.make(small_mixer_options(other.name), D, LayerInit{&g2, 1, DType::f32});
    auto foreign = o->init_state(2);
    EXPECT_THROW(m->step(*foreign, Tensor::zeros({2, D})), ShapeError) << "state of " << other.name;
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
