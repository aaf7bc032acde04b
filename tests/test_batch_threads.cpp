// Batch-parallel steps (train/batch_threads.h): each thread's slice of the batch on a
// replica of the model must give the whole batch's loss, accuracy, gradients and
// dropout stream, for every mixer; and a training run must refuse a batch that does
// not divide among the threads.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/tape.h"
#include "layers/mixer_registry.h"
#include "layers/model.h"
#include "tests/support/file_testing.h"
#include "tests/support/mixer_spec.h"
#include "train/batch_threads.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

constexpr int64_t kB = 4, kL = 12, kV = 13;

ModelOptions model_options(const std::string& mixer) {
  ModelOptions m;
  m.vocab_size = kV;
  m.d_model = 8;
  m.n_layers = 2;
  m.mlp = "gelu";
  m.dropout = 0.1;  // the slices must draw the whole batch's masks
  m.mixer = small_mixer_options(mixer);
  if (mixer == "attention") m.mixer.attention.dropout = 0.2;
  return m;
}

// Labels: rows 0-1 (thread 0's slice) have 9 labelled positions, rows 2-3 have 3, so
// the slices' means weigh differently in the whole batch's mean.
Batch make_batch(bool second_slice_unlabelled = false) {
  Generator g(3);
  std::vector<int32_t> in(kB * kL), lab(kB * kL, -100);
  for (auto& x : in) x = static_cast<int32_t>(g.randint(0, kV));
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t t = 0; t < kL; ++t) {
      const bool labelled = b < 2 ? (t % 3 != 0 && t > 4) || t == 1 : t % 4 == 3;
      if (labelled && !(second_slice_unlabelled && b >= 2)) lab[b * kL + t] = static_cast<int32_t>(g.randint(0, kV));
    }
  return Batch{Tensor::from_vector({kB, kL}, in), Tensor::from_vector({kB, kL}, lab)};
}

std::unique_ptr<LanguageModel> make_model(const std::string& mixer) {
  Generator init(7);
  return std::make_unique<LanguageModel>(model_options(mixer), LayerInit{&init, 2, DType::f32});
}

struct Grads {
  std::vector<std::vector<float>> values;  // per parameter; empty: none
};

Grads take_grads(const LanguageModel& m) {
  Grads out;
  for (const Parameter& p : m.parameters()) {
    const Tensor g = p.tensor.grad();
    out.values.push_back(g.defined() ? g.to_f32_vector() : std::vector<float>{});
    p.tensor.zero_grad();
  }
  return out;
}

void expect_close(const Grads& a, const Grads& b, const LanguageModel& m) {
  const Parameters ps = m.parameters();
  ASSERT_EQ(a.values.size(), b.values.size());
  for (size_t i = 0; i < a.values.size(); ++i) {
    ASSERT_EQ(a.values[i].size(), b.values[i].size()) << ps[i].name;
    double scale = 0;
    for (float v : a.values[i]) scale = std::max(scale, std::fabs(double(v)));
    for (size_t j = 0; j < a.values[i].size(); ++j)
      ASSERT_NEAR(a.values[i][j], b.values[i][j], 2e-5 * scale + 1e-7) << ps[i].name << "[" << j << "]";
  }
}

class BatchThreadsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchThreadsTest, SlicesOnTwoThreadsGiveTheWholeBatchLossGradientsAndDropoutStream) {
  for (const bool unlabelled_slice : {false, true}) {
    SCOPED_TRACE(unlabelled_slice ? "second slice unlabelled" : "both slices labelled");
    const auto owned = make_model(GetParam());
    LanguageModel& model = *owned;
    const Batch b = make_batch(unlabelled_slice);

    Generator whole_gen(11, 4);
    LossResult whole = model.loss(b.inputs, b.labels, true, whole_gen);
    backward(whole.loss);
    const Grads expected = take_grads(model);

    BatchThreads threads(model, 2);
    Generator sliced_gen(11, 4);
    const BatchStepResult r = threads.step(model, b, sliced_gen);
    EXPECT_NEAR(r.loss, whole.loss.item(), 1e-5 * std::fabs(whole.loss.item()));
    EXPECT_EQ(r.labelled, whole.labelled);
    EXPECT_EQ(r.correct, whole.correct);
    EXPECT_EQ(sliced_gen.counter(), whole_gen.counter());
    expect_close(expected, take_grads(model), model);
  }
}

TEST_P(BatchThreadsTest, ReplicasReadTheWeightsAsTheyAreUpdated) {
  const auto owned = make_model(GetParam());
  LanguageModel& model = *owned;
  BatchThreads threads(model, 2);
  const Batch b = make_batch();
  Generator g1(11);
  threads.step(model, b, g1);
  take_grads(model);
  // An optimizer step writes the model's values in place; the replica must see them.
  for (const Parameter& p : model.parameters())
    for (int64_t i = 0; i < p.tensor.numel(); ++i) p.tensor.f32()[i] += 0.01f * static_cast<float>(i % 5);
  Generator gw(12);
  LossResult whole = model.loss(b.inputs, b.labels, true, gw);
  backward(whole.loss);
  const Grads expected = take_grads(model);
  Generator gs(12);
  threads.step(model, b, gs);
  expect_close(expected, take_grads(model), model);
}

TEST_P(BatchThreadsTest, TheSameStepTwiceGivesTheSameBits) {
  const auto owned = make_model(GetParam());
  LanguageModel& model = *owned;
  BatchThreads threads(model, 2);
  const Batch b = make_batch();
  Generator g1(11), g2(11);
  const double l1 = threads.step(model, b, g1).loss;
  const Grads first = take_grads(model);
  const double l2 = threads.step(model, b, g2).loss;
  const Grads second = take_grads(model);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(first.values, second.values);
}

INSTANTIATE_TEST_SUITE_P(Mixers, BatchThreadsTest, ::testing::ValuesIn(mixer_names()),
                         [](const auto& info) { return info.param; });

TEST(BatchThreads, RefusesRowsThatDoNotDivide) {
  const auto model = make_model("attention");
  BatchThreads threads(*model, 3);
  Generator g(1);
  EXPECT_THROW(threads.step(*model, make_batch(), g), std::invalid_argument);
}

TEST(BatchThreads, ATrainingRunRefusesABatchThatDoesNotDivideAmongTheThreads) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(2);
  const std::string yaml =
      "model: {vocab_size: 32, d_model: 8, n_layers: 1}\n"
      "data: {kind: recall, vocab_size: 32, seq_len: 16, num_kv_pairs: 2, num_train_examples: 64, "
      "num_test_examples: 8}\n"
      "training: {steps: 2, batch_size: 3, parallel: batch}\nschedule: {warmup_steps: 0}\n";
  const Config c = parse_config(yaml, "odd.yaml");
  const std::filesystem::path dir = scratch_dir("batch_threads", "odd", false);
  const std::string msg = error_of([&] { Trainer t(c, dir.string()); });
  omp_set_num_threads(before);
  EXPECT_TRUE(contains(msg, "training.parallel")) << msg;
  EXPECT_TRUE(contains(msg, "training.batch_size = 3")) << msg;
  EXPECT_FALSE(std::filesystem::exists(dir)) << "a refused run must not create its directory";
}

TEST(BatchThreads, EvaluationSharedAmongThreadsEqualsTheSerialOne) {
  DataOptions d;
  d.kind = "recall";
  d.recall.vocab_size = kV;
  d.recall.seq_len = kL;
  d.recall.num_kv_pairs = 2;
  d.recall.num_train_examples = 16;
  d.recall.num_test_examples = 37;  // 10 batches of 4, the last one short
  const auto data = make_data_source(d, 4, 0);
  for (const std::string& mixer : mixer_names()) {
    const auto model = make_model(mixer);
    const EvalResult one = evaluate(*model, *data, 1), two = evaluate(*model, *data, 2);
    EXPECT_EQ(two.labelled, one.labelled) << mixer;
    EXPECT_GT(one.labelled, 0) << mixer;
    EXPECT_NEAR(two.loss, one.loss, 1e-6 * one.loss) << mixer;
    EXPECT_DOUBLE_EQ(two.accuracy, one.accuracy) << mixer;
  }
}

TEST(BatchThreads, AutoChoosesBatchStepsForSmallModelsOnly) {
  ModelOptions small = model_options("attention");
  small.d_model = 64;
  EXPECT_TRUE(batch_parallel_pays(small, 64, 2));
  EXPECT_FALSE(batch_parallel_pays(small, 63, 2));  // does not divide
  EXPECT_FALSE(batch_parallel_pays(small, 64, 1));  // one thread
  ModelOptions gpt2 = small;
  gpt2.d_model = 768;
  EXPECT_FALSE(batch_parallel_pays(gpt2, 8, 2));
}

}  // namespace
