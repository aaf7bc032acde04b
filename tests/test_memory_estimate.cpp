// Sizes from a config are checked before anything is allocated: the parameter
// count computed from the config alone equals the real model's for every mixer,
// absurd configs are refused with "needs X GiB, this machine has Y GiB", and
// tensor sizes never overflow silently.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <limits>

#include "layers/model.h"
#include "train/config.h"
#include "train/memory_estimate.h"
#include "train/trainer.h"

using namespace seqmix;

namespace {

const char* kBase = R"(
model: {vocab_size: 40, d_model: 24, n_layers: 2, max_position_embeddings: 16}
data: {kind: recall, task: mqar, vocab_size: 40, seq_len: 16, num_kv_pairs: 2, num_train_examples: 256, num_test_examples: 32}
training: {steps: 2, batch_size: 8}
schedule: {warmup_steps: 0}
)";

int64_t real_count(const Config& c) {
  Generator gen(0);
  LayerInit init{&gen, c.model.n_layers, DType::f32};
  return LanguageModel(c.model, init).num_parameters();
}

TEST(MemoryEstimate, ParameterCountMatchesTheRealModelForEveryMixer) {
  const std::vector<std::vector<std::string>> cases = {
      {"model.mixer.type=attention", "model.mixer.num_heads=2"},
      {"model.mixer.type=attention", "model.norm=rmsnorm", "model.mlp=gelu", "model.tie_embeddings=false"},
      {"model.mixer.type=linear_attention", "model.mixer.num_heads=3"},
      {"model.mixer.type=gla", "model.mixer.num_heads=2"},
      {"model.mixer.type=gla", "model.mixer.num_heads=4", "model.mixer.expand_k=1.0", "model.mixer.expand_v=2.0",
       "model.mixer.gate_low_rank_dim=5", "model.mlp=gelu"},
      {"model.mixer.type=h3"},
      {"model.mixer.type=h3", "model.mixer.d_state=8", "model.mixer.head_dim=4", "model.norm=rmsnorm"},
      {"model.mixer.type=mamba"},
      {"model.mixer.type=mamba", "model.mixer.d_state=5", "model.mixer.d_conv=3", "model.mixer.expand=3",
       "model.mixer.dt_rank=7", "model.max_position_embeddings=0", "model.tie_embeddings=false"},
  };
  for (const auto& ov : cases) {
    Config c = parse_config(kBase, "base.yaml", ov);
    std::string what;
    for (const auto& o : ov) what += o + " ";
    EXPECT_EQ(static_cast<int64_t>(model_parameter_count(c.model)), real_count(c)) << what;
  }
}

TEST(MemoryEstimate, AbsurdConfigsAreRefusedBeforeAnythingIsAllocated) {
  const std::string dir = (std::filesystem::temp_directory_path() / "seqmix_memory_estimate").string();
  for (const std::vector<std::string>& ov : std::vector<std::vector<std::string>>{
           {"model.n_layers=9200000000000000000"},
           {"model.d_model=9223372036854775806", "model.mixer.type=mamba"},
           {"model.d_model=4611686018427387904"},
           {"training.batch_size=9223372036854775807"}}) {
    Config c = parse_config(kBase, "base.yaml", ov);
    try {
      Trainer t(c, dir);
      ADD_FAILURE() << ov[0] << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("needs "), std::string::npos) << msg;
      EXPECT_NE(msg.find("GiB), this machine has "), std::string::npos) << msg;
    }
  }
  std::filesystem::remove_all(dir);
  // A config that fits is not refused, and its estimate is positive.
  Config small = parse_config(kBase, "base.yaml");
  EXPECT_NO_THROW(check_memory_fits(small, true, "small"));
  EXPECT_GT(estimate_memory(small, true).activation_bytes, 0);
}

TEST(MemoryEstimate, EachMpiRankBudgetsOnlyItsSliceOfTheGlobalBatch) {
  const Config c = parse_config(kBase, "base.yaml");
  const MemoryEstimate one = estimate_memory(c, true), four = estimate_memory(c, true, 4);
  EXPECT_DOUBLE_EQ(static_cast<double>(four.activation_bytes), static_cast<double>(one.activation_bytes / 4));
  // Weights, moments and data are whole on every rank.
  EXPECT_EQ(four.weights_bytes, one.weights_bytes);
  EXPECT_EQ(four.optimizer_bytes, one.optimizer_bytes);
  EXPECT_EQ(four.data_bytes, one.data_bytes);
}

TEST(TensorSizes, OverflowingShapesAreRefusedNotWrapped) {
  const int64_t big = int64_t{1} << 40;
  EXPECT_THROW(shape_numel({big, big}), ShapeError);
  EXPECT_THROW(Tensor::empty({big, big}), ShapeError);
  EXPECT_THROW(Tensor::empty({std::numeric_limits<int64_t>::max(), 2}), ShapeError);
  // 2^61 floats fit in int64 but not in 2^64 bytes... nor in memory: a clear error, not bad_alloc.
  try {
    Tensor::empty({int64_t{1} << 61});
    ADD_FAILURE() << "a 2^63-byte tensor was allocated";
  } catch (const ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("(2305843009213693952)"), std::string::npos) << e.what();
  }
  EXPECT_EQ(shape_numel({3, 0, big}), 0);
  // An empty vector into an empty tensor: no memcpy from a null pointer (UBSan).
  EXPECT_EQ(Tensor::from_vector({0}, std::vector<float>{}).numel(), 0);
  EXPECT_EQ(Tensor::from_vector({2, 0}, std::vector<int32_t>{}).numel(), 0);
}

}  // namespace
