// The language model around the mixers (docs/model.md): whole-model float64 gradient
// checks for every mixer, parameter names, initialisation, parallel against
// recurrent decoding, and greedy generation through the recurrent form against
// argmax decoding through the parallel form.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/mixer_factory.h"
#include "layers/mixer_registry.h"
#include "layers/model.h"
#include "tests/support/mixer_spec.h"
#include "train/config.h"
#include "tests/support/gradcheck.h"
#include "train/generate.h"

#ifndef SEQMIX_SOURCE_DIR
#define SEQMIX_SOURCE_DIR "."
#endif

using namespace seqmix;
using namespace seqmix::testing;

namespace {

ModelOptions small_model(const std::string& mixer, DType dt_unused = DType::f32) {
  ModelOptions m;
  m.vocab_size = 11;
  m.d_model = 8;
  m.n_layers = 2;
  m.mixer = small_mixer_options(mixer);
  return m;
}

Tensor random_tokens(int64_t B, int64_t L, int64_t V, uint64_t seed) {
  Generator g(seed);
  std::vector<int32_t> v(B * L);
  for (auto& x : v) x = static_cast<int32_t>(g.randint(0, V));
  return Tensor::from_vector({B, L}, v);
}

class ModelTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ModelTest, GradCheckOverEveryParameterFloat64) {
  ModelOptions opt = small_model(GetParam());
  opt.mlp = "gelu";
  opt.norm = GetParam() == "gla" ? "rmsnorm" : "layernorm";
  opt.tie_embeddings = GetParam() != "h3";
  opt.max_position_embeddings = GetParam() == "attention" ? 8 : 0;
  Generator init_gen(11);
  LanguageModel model(opt, LayerInit{&init_gen, opt.n_layers, DType::f64});
  NamedTensors params = model.named_parameters();
  // Move parameters off their exact initial constants (zeros, ones), where some
  // gradients vanish by symmetry, so that every gradient is exercised.
  Generator jitter(5);
  for (auto& [name, p] : params)
    for (int64_t i = 0; i < p.numel(); ++i) p.f64()[i] += 0.05 * (jitter.uniform() - 0.5);
  const Tensor tokens = random_tokens(2, 5, opt.vocab_size, 3);
  std::vector<int32_t> lab = {1, -100, 3, 4, -100, 0, 2, -100, 10, 5};
  const Tensor labels = Tensor::from_vector({2, 5}, lab);
  std::vector<Tensor> inputs;
  for (auto& [name, p] : params) inputs.push_back(p);
  GradCheckOptions o;
  o.atol = 1e-6;
  o.rtol = 1e-4;
  o.max_elements_per_input = 12;  // every mixer's own test checks all its elements
  EXPECT_TRUE(gradcheck(
      [&](const std::vector<Tensor>&) {
        Generator g(0);
        return model.loss(tokens, labels, false, g).loss;
      },
      inputs, o));
}

TEST_P(ModelTest, ParameterNamesFollowSpec) {
  ModelOptions opt = small_model(GetParam());
  opt.mlp = "gelu";
  opt.tie_embeddings = false;
  Generator g(1);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  std::map<std::string, Shape> shapes;
  for (auto& [name, p] : model.named_parameters()) shapes[name] = p.shape();
  EXPECT_EQ(shapes.at("embeddings.word_embeddings.weight"), (Shape{11, 8}));
  EXPECT_EQ(shapes.at("layers.1.norm1.weight"), (Shape{8}));
  EXPECT_EQ(shapes.at("layers.1.norm1.bias"), (Shape{8}));
  EXPECT_EQ(shapes.at("layers.0.mlp.fc1.weight"), (Shape{32, 8}));
  EXPECT_EQ(shapes.at("layers.0.mlp.fc2.weight"), (Shape{8, 32}));
  EXPECT_EQ(shapes.at("norm_f.bias"), (Shape{8}));
  EXPECT_EQ(shapes.at("lm_head.weight"), (Shape{11, 8}));
  EXPECT_EQ(shapes.count("embeddings.position_embeddings.weight"), 0u);
  // The mixer's own parameters, in order, as docs/mixers.md names and shapes them.
  for (int64_t layer = 0; layer < opt.n_layers; ++layer) {
    std::vector<std::pair<std::string, Shape>> got;
    const std::string prefix = "layers." + std::to_string(layer) + ".mixer.";
    for (auto& [name, p] : model.named_parameters())
      if (name.rfind(prefix, 0) == 0) got.emplace_back(name.substr(prefix.size()), p.shape());
    EXPECT_EQ(got, spec_mixer_parameters(opt.mixer, opt.d_model)) << "layer " << layer;
  }
}

// The layers' decay flags give the groups of docs/model.md#weight-decay-groups (the name rule the optimizer used
// to apply): tensors of two or more dimensions decay, except ssm_shift.*, ssm_diag.*,
// A_log and D; biases and norm weights never do.
TEST_P(ModelTest, DecayFlagsFollowSpec) {
  ModelOptions opt = small_model(GetParam());
  opt.mlp = "gelu";
  opt.tie_embeddings = false;
  opt.max_position_embeddings = 16;
  Generator g(1);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  auto ends_with = [](const std::string& s, const std::string& end) {
    return s.size() >= end.size() && s.compare(s.size() - end.size(), end.size(), end) == 0;
  };
  int decayed = 0;
  for (const Parameter& p : model.parameters()) {
    const bool ssm = p.name.find(".ssm_shift.") != std::string::npos ||
                     p.name.find(".ssm_diag.") != std::string::npos || ends_with(p.name, ".A_log") ||
                     ends_with(p.name, ".D");
    EXPECT_EQ(p.decay, p.tensor.ndim() >= 2 && !ssm) << p.name;
    decayed += p.decay;
  }
  EXPECT_GT(decayed, 0);
}

// The registry's state size (used without building a layer) is the layer's and the documented one.
TEST_P(ModelTest, StateSizeFollowsSpec) {
  const MixerOptions opt = small_mixer_options(GetParam());
  Generator g(1);
  auto layer = make_mixer(opt, 8, LayerInit{&g, 1, DType::f32});
  for (int64_t t : {0, 1, 7, 100}) {
    EXPECT_EQ(layer->state_size(t), spec_state_size(opt, 8, t)) << "t=" << t;
    EXPECT_EQ(mixer_entry(GetParam()).state_size(opt, 8, t), spec_state_size(opt, 8, t)) << "t=" << t;
  }
}

// Decoding one token at a time through the recurrent forms gives the logits of
// the parallel form at every position.
TEST_P(ModelTest, RecurrentStepsMatchTheParallelForm) {
  ModelOptions opt = small_model(GetParam());
  opt.mlp = "gelu";
  opt.max_position_embeddings = GetParam() == "attention" ? 32 : 0;
  Generator g(2);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  const int64_t B = 3, L = 23;
  const Tensor tokens = random_tokens(B, L, opt.vocab_size, 9);
  NoGradGuard ng;
  Generator unused;
  Tensor par = model.logits(tokens, false, unused);  // (B, L, V)
  DecodeState st = model.init_state(B);
  for (int64_t t = 0; t < L; ++t) {
    std::vector<int32_t> col(B);
    for (int64_t b = 0; b < B; ++b) col[b] = tokens.i32()[b * L + t];
    Tensor step = model.step(st, Tensor::from_vector({B}, col));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t v = 0; v < opt.vocab_size; ++v)
        ASSERT_NEAR(step.f32()[b * opt.vocab_size + v], par.f32()[(b * L + t) * opt.vocab_size + v], 2e-4)
            << "t=" << t << " b=" << b << " v=" << v;
  }
}

TEST_P(ModelTest, GreedySamplingThroughTheRecurrentFormEqualsParallelArgmax) {
  ModelOptions opt = small_model(GetParam());
  opt.vocab_size = 13;
  opt.max_position_embeddings = GetParam() == "attention" ? 40 : 0;
  Generator g(4);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  // Larger weights than the init make the argmax decisive (no near-ties).
  for (auto& [name, p] : model.named_parameters())
    if (name.find("word_embeddings") != std::string::npos)
      for (int64_t i = 0; i < p.numel(); ++i) p.f32()[i] *= 40.0f;
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  SampleOptions so;
  so.max_new_tokens = 12;
  so.temperature = 0;
  std::vector<int32_t> streamed;
  const std::vector<int32_t> gen = generate(model, prompt, so, [&](int32_t t) { streamed.push_back(t); });
  EXPECT_EQ(gen, streamed);
  // Reference: re-run the parallel form on the whole sequence for every new token.
  std::vector<int32_t> seq = prompt;
  NoGradGuard ng;
  Generator unused;
  for (int64_t i = 0; i < so.max_new_tokens; ++i) {
    const int64_t L = static_cast<int64_t>(seq.size());
    Tensor logits = model.logits(Tensor::from_vector({1, L}, seq), false, unused);
    const float* last = logits.f32() + (L - 1) * opt.vocab_size;
    seq.push_back(static_cast<int32_t>(std::max_element(last, last + opt.vocab_size) - last));
  }
  EXPECT_EQ(gen, std::vector<int32_t>(seq.begin() + prompt.size(), seq.end()));
}

INSTANTIATE_TEST_SUITE_P(Mixers, ModelTest, ::testing::ValuesIn(mixer_names()),
                         [](const auto& info) { return info.param; });

TEST(Model, InitialisationFollowsSpec) {
  ModelOptions opt = small_model("attention");
  opt.d_model = 64;
  opt.vocab_size = 500;
  opt.n_layers = 4;
  opt.mlp = "gelu";
  Generator g(7);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  auto stdev = [](const Tensor& t) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += t.f32()[i], s2 += double(t.f32()[i]) * t.f32()[i];
    const double m = s / t.numel();
    return std::sqrt(s2 / t.numel() - m * m);
  };
  for (auto& [name, p] : model.named_parameters()) {
    if (name == "embeddings.word_embeddings.weight" || name.find("mlp.fc1.weight") != std::string::npos ||
        name.find("Wqkv.weight") != std::string::npos) {
      EXPECT_NEAR(stdev(p), 0.02, 0.002) << name;
    }
    if (name.find("out_proj.weight") != std::string::npos || name.find("mlp.fc2.weight") != std::string::npos) {
      EXPECT_NEAR(stdev(p), 0.02 / std::sqrt(8.0), 0.001) << name;
    }
    if (name.find("norm") != std::string::npos && name.find(".weight") != std::string::npos) {
      for (int64_t i = 0; i < p.numel(); ++i) ASSERT_EQ(p.f32()[i], 1.0f) << name;
    }
    if (name.find(".bias") != std::string::npos) {
      for (int64_t i = 0; i < p.numel(); ++i) ASSERT_EQ(p.f32()[i], 0.0f) << name;
    }
  }
}

TEST(Model, LossOnlyAtLabelledPositionsEqualsFullHeadLoss) {
  ModelOptions opt = small_model("attention");
  Generator g(8);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  const Tensor tokens = random_tokens(2, 6, opt.vocab_size, 1);
  std::vector<int32_t> lab = {-100, 2, -100, -100, 7, -100, 1, -100, -100, -100, -100, 3};
  NoGradGuard ng;
  Generator unused;
  LossResult r = model.loss(tokens, Tensor::from_vector({2, 6}, lab), false, unused);
  Tensor full = cross_entropy(model.logits(tokens, false, unused), Tensor::from_vector({2, 6}, lab));
  EXPECT_NEAR(r.loss.item(), full.item(), 1e-6);
  EXPECT_EQ(r.labelled, 4);
}

TEST(Model, SequenceLongerThanPositionsIsAnError) {
  ModelOptions opt = small_model("attention");
  opt.max_position_embeddings = 4;
  Generator g(1);
  LanguageModel model(opt, LayerInit{&g, opt.n_layers, DType::f32});
  Generator unused;
  EXPECT_THROW(model.logits(random_tokens(1, 5, opt.vocab_size, 1), false, unused), ShapeError);
}

}  // namespace

namespace {

// Every shipped training config builds a model whose every layer has the mixer parameters
// (names and shapes) and the state size that its options promise by docs/mixers.md.
TEST(Model, ShippedConfigsBuildTheShapesTheyPromise) {
  namespace fs = std::filesystem;
  int count = 0;
  for (const char* folder : {"configs/mqar", "configs/text"}) {
    const fs::path dir = fs::path(SEQMIX_SOURCE_DIR) / folder;
    if (!fs::is_directory(dir)) continue;
    for (const auto& entry : fs::directory_iterator(dir)) {
      if (entry.path().extension() != ".yaml") continue;
      ++count;
      const Config config = load_config(entry.path().string());
      const ModelOptions& m = config.model;
      Generator g(1);
      LanguageModel model(m, LayerInit{&g, m.n_layers, DType::f32});
      const auto promised = spec_mixer_parameters(m.mixer, m.d_model);
      for (int64_t layer = 0; layer < m.n_layers; ++layer) {
        std::vector<std::pair<std::string, Shape>> got;
        const std::string prefix = "layers." + std::to_string(layer) + ".mixer.";
        for (auto& [name, p] : model.named_parameters())
          if (name.rfind(prefix, 0) == 0) got.emplace_back(name.substr(prefix.size()), p.shape());
        EXPECT_EQ(got, promised) << entry.path() << " layer " << layer;
        EXPECT_EQ(model.state_size(layer, 64), spec_state_size(m.mixer, m.d_model, 64)) << entry.path();
      }
    }
  }
  if (count == 0) GTEST_SKIP() << "no configs under " << SEQMIX_SOURCE_DIR;
}

}  // namespace
