// Training on pre-tokenized files (data.kind: tokens): the shipped GPT-2 config trains
// (shrunk by --set), a tiny model learns a token file well below its unigram entropy,
// resume is bit-exact, `seqmix eval` scores a tokens run, and bad files named by the
// config are refused with their path and byte offset. Every token file is generated.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/random.h"
#include "data/errors.h"
#include "data/token_file.h"
#include "tests/support/op_testing.h"
#include "train/checkpoint.h"
#include "train/commands.h"
#include "train/config.h"
#include "train/trainer.h"

#ifndef SEQMIX_SOURCE_DIR
#define SEQMIX_SOURCE_DIR "."
#endif

using namespace seqmix;
using seqmix::testing::same_values;
namespace fs = std::filesystem;

namespace {

class TrainTokens : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("seqmix_train_tokens_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
            "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// A token stream with structure a one-layer model learns in a few dozen steps: a fixed
// cycle of 12 ids out of 48, where 1 step in 10 skips one id of the cycle.
std::vector<int64_t> pattern_tokens(int64_t n, uint64_t seed) {
  const std::vector<int64_t> cycle = {3, 17, 42, 8, 29, 11, 36, 5, 47, 20, 14, 31};
  Generator g(seed);
  std::vector<int64_t> out;
  size_t i = 0;
  while (static_cast<int64_t>(out.size()) < n) {
    out.push_back(cycle[i]);
    i = (i + 1 + (g.uniform() < 0.1 ? 1 : 0)) % cycle.size();
  }
  return out;
}

// Cross-entropy of `eval` under the unigram frequencies of `train`, in nats per token.
double unigram_entropy(const std::vector<int64_t>& train, const std::vector<int64_t>& eval) {
  std::map<int64_t, double> freq;
  for (int64_t t : train) freq[t] += 1;
  double h = 0;
  for (size_t i = 1; i < eval.size(); ++i) h -= std::log(freq[eval[i]] / static_cast<double>(train.size()));
  return h / static_cast<double>(eval.size() - 1);
}

// A tiny tokens run: the train file in nanoGPT's format, the validation file in llm.c's.
std::string tiny_yaml(const std::string& train, const std::string& val) {
  return "model: {vocab_size: 64, d_model: 32, n_layers: 1, mlp: gelu, max_position_embeddings: 16,\n"
         "        mixer: {type: attention, num_heads: 2}}\n"
         "data: {kind: tokens, train_path: " + train + ", val_path: " + val +
         ", format: auto, vocab_size: 48, seq_len: 16, seed: 7}\n"
         "optimizer: {lr: 0.003, beta2: 0.99}\n"
         "schedule: {type: cosine, warmup_steps: 5, min_lr: 0.0003}\n"
         "training: {steps: 100, batch_size: 16, eval_interval: 50, eval_batches: 0, seed: 2}\n"
         "logging: {level: warn}\n";
}

NamedTensors params_of(const fs::path& run) { return read_checkpoint((run / "checkpoint.h5").string()).params; }

TEST_F(TrainTokens, Gpt2ConfigTrainsShrunk) {
  const std::string config = std::string(SEQMIX_SOURCE_DIR) + "/configs/gpt2/gpt2_124m.yaml";
  // As shipped: GPT-2 small's shape and recipe.
  const Config full = load_config(config);
  EXPECT_EQ(full.model.mixer.type, "attention");
  EXPECT_EQ(full.model.n_layers, 12);
  EXPECT_EQ(full.model.mixer.attention.num_heads, 12);
  EXPECT_EQ(full.model.d_model, 768);
  EXPECT_EQ(full.model.vocab_size, 50304);
  EXPECT_EQ(full.model.vocab_size % 64, 0);
  EXPECT_GE(full.model.vocab_size, full.data.tokens.vocab_size);
  EXPECT_EQ(full.model.max_position_embeddings, 1024);
  EXPECT_TRUE(full.model.tie_embeddings);
  EXPECT_EQ(full.data.kind, "tokens");
  EXPECT_EQ(full.data.seq_len(), 1024);
  EXPECT_EQ(fs::path(full.data.tokens.train_path).filename(), "train.bin");
  EXPECT_EQ(full.optimizer.lr, 6e-4);
  EXPECT_EQ(full.optimizer.beta2, 0.95);

  // Shrunk by --set to seconds of work, on generated files; everything else from the file.
  write_token_file(path("train.bin"), "nanogpt", pattern_tokens(4000, 1));
  write_token_file(path("val.bin"), "llmc", pattern_tokens(500, 2));
  const Config c = load_config(config, {"data.train_path=" + path("train.bin"), "data.val_path=" + path("val.bin"),
                                        "data.vocab_size=48", "data.seq_len=16", "model.vocab_size=64",
                                        "model.d_model=24", "model.n_layers=1", "model.mixer.num_heads=2",
                                        "model.max_position_embeddings=16", "training.steps=2",
                                        "training.batch_size=2", "training.eval_interval=2",
                                        "training.eval_batches=1", "schedule.warmup_steps=1",
                                        "training.checkpoint_interval=0", "logging.level=warn"});
  EXPECT_EQ(c.model.norm, "layernorm");
  EXPECT_EQ(c.model.mlp, "gelu");
  Trainer trainer(c, path("run"));
  const TrainResult r = trainer.run();
  EXPECT_EQ(r.steps, 2);
  EXPECT_TRUE(std::isfinite(r.final_eval.loss));
  EXPECT_GT(r.final_eval.labelled, 0);
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoint.h5"));
}

TEST_F(TrainTokens, TinyModelBeatsUnigramAndEvalAgrees) {
  const std::vector<int64_t> train = pattern_tokens(20000, 1), val = pattern_tokens(1200, 2);
  write_token_file(path("train.bin"), "nanogpt", train);
  write_token_file(path("val.bin"), "llmc", val);
  const Config c = parse_config(tiny_yaml(path("train.bin"), path("val.bin")), "tiny_tokens.yaml");
  Trainer trainer(c, path("run"));
  const TrainResult r = trainer.run();
  const double unigram = unigram_entropy(train, val);
  // eval_batches 0: every validation token after the first is scored once.
  EXPECT_EQ(r.final_eval.labelled, static_cast<int64_t>(val.size()) - 1);
  EXPECT_LT(r.final_eval.loss, 0.5 * unigram) << "unigram " << unigram;

  // `seqmix eval` on the run scores the same windows with the same result.
  std::ostringstream out;
  ASSERT_EQ(cmd_eval(EvalArgs{(dir_ / "run" / "checkpoint.h5").string(), {}}, out), 0);
  const nlohmann::json j = nlohmann::json::parse(out.str());
  EXPECT_EQ(j.at("labelled_positions").get<int64_t>(), r.final_eval.labelled);
  EXPECT_NEAR(j.at("loss").get<double>(), r.final_eval.loss, 1e-6);
  // And another validation file, named by --set.
  write_token_file(path("other.bin"), "nanogpt", pattern_tokens(300, 3));
  std::ostringstream other;
  ASSERT_EQ(cmd_eval(EvalArgs{(dir_ / "run" / "checkpoint.h5").string(), {"data.val_path=" + path("other.bin")}},
                     other),
            0);
  const nlohmann::json o = nlohmann::json::parse(other.str());
  EXPECT_EQ(o.at("labelled_positions").get<int64_t>(), 299);
  EXPECT_LT(o.at("loss").get<double>(), 0.5 * unigram);
}

TEST_F(TrainTokens, ResumeIsBitIdentical) {
  write_token_file(path("train.bin"), "nanogpt", pattern_tokens(5000, 1));
  write_token_file(path("val.bin"), "llmc", pattern_tokens(400, 2));
  const Config c = parse_config(tiny_yaml(path("train.bin"), path("val.bin")), "tiny_tokens.yaml",
                                {"training.steps=24", "training.checkpoint_interval=10", "training.eval_interval=8",
                                 "model.dropout=0.1"});
  Trainer(c, path("full")).run();
  // A crash after step 17: steps 11..17 are lost and redone from the step-10 checkpoint,
  // which must restore the position in the training-window stream exactly.
  Trainer(c, path("cut")).run(17);
  EXPECT_EQ(read_checkpoint(path("cut") + "/checkpoint.h5").train_u64.at("step"), 10u);
  Trainer::resume(path("cut"))->run();
  EXPECT_TRUE(same_values(params_of(dir_ / "full"), params_of(dir_ / "cut")));
}

// The error of opening the run's data, or "" if it opens.
std::string trainer_error(const Config& c, const std::string& out) {
  try {
    Trainer trainer(c, out);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

TEST_F(TrainTokens, BadFilesNameThePathAndOffset) {
  write_token_file(path("train.bin"), "nanogpt", pattern_tokens(2000, 1));
  std::vector<int64_t> val = pattern_tokens(300, 2);
  val[123] = 50;  // >= data.vocab_size 48
  write_token_file(path("val.bin"), "nanogpt", val);
  const std::string yaml = tiny_yaml(path("train.bin"), path("val.bin"));
  const std::string bad_id = trainer_error(parse_config(yaml, "t.yaml"), path("run1"));
  EXPECT_NE(bad_id.find(path("val.bin")), std::string::npos) << bad_id;
  EXPECT_NE(bad_id.find("byte offset 246 (token 123): id 50 is >= data.vocab_size 48"), std::string::npos) << bad_id;

  std::ofstream(path("odd.bin"), std::ios::binary) << std::string(1001, '\0');
  const std::string odd =
      trainer_error(parse_config(yaml, "t.yaml", {"data.train_path=" + path("odd.bin")}), path("run2"));
  EXPECT_NE(odd.find(path("odd.bin")), std::string::npos) << odd;
  EXPECT_NE(odd.find("1001 bytes is an odd count"), std::string::npos) << odd;

  const std::string missing =
      trainer_error(parse_config(yaml, "t.yaml", {"data.val_path=" + path("absent.bin")}), path("run3"));
  EXPECT_NE(missing.find(path("absent.bin") + "': cannot open"), std::string::npos) << missing;

  // A file in llm.c's format whose header disagrees with its size, read as format: llmc.
  std::string header(1024, '\0');
  const int32_t head[3] = {kLlmcMagic, 1, 5000};
  std::memcpy(header.data(), head, sizeof(head));
  std::ofstream(path("short.bin"), std::ios::binary) << header << std::string(200, '\0');
  const std::string shard = trainer_error(
      parse_config(yaml, "t.yaml", {"data.train_path=" + path("short.bin"), "data.format=llmc"}), path("run4"));
  EXPECT_NE(shard.find(path("short.bin")), std::string::npos) << shard;
  EXPECT_NE(shard.find("declares 5000 tokens"), std::string::npos) << shard;
}

}  // namespace
