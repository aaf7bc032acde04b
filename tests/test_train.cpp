// The training loop end to end: a tiny attention model solves a tiny MQAR; a
// tiny text model beats a unigram model; a non-finite loss stops the run with a
// clear message; checkpoints resume exactly.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <cstring>
#include <map>

#include "tests/support/file_testing.h"
#include "tests/support/op_testing.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace seqmix;
using seqmix::testing::same_values;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) { return seqmix::testing::scratch_dir("train", name, /*create=*/false); }

// Tiny MQAR: 16 tokens, 2 key-value pairs, 32 symbols. Attention with learned
// positions leaves the usual MQAR plateau after a few hundred steps.
const char* kTinyMqar = R"(
model:
  vocab_size: 32
  d_model: 32
  n_layers: 2
  max_position_embeddings: 16
  mixer: {type: attention, num_heads: 2}
data:
  kind: recall
  task: mqar
  vocab_size: 32
  seq_len: 16
  num_kv_pairs: 2
  num_train_examples: 8192
  num_test_examples: 256
  seed: 3
optimizer: {lr: 0.001, weight_decay: 0.1}
schedule: {type: cosine, warmup_steps: 100, min_lr: 0.0001}
training: {epochs: 20, batch_size: 64, eval_interval: 64, early_stop_accuracy: 0.99, seed: 1}
logging: {log_interval: 64, level: warn}
)";

TEST(Train, TinyAttentionSolvesTinyMqar) {
  const fs::path dir = temp_dir("mqar");
  Trainer trainer(parse_config(kTinyMqar, "tiny_mqar.yaml"), dir.string());
  TrainResult r = trainer.run();
  EXPECT_GE(r.best_valid_accuracy, 0.99) << "after " << r.steps << " steps";
  EXPECT_TRUE(r.early_stopped);
  // The run directory holds what a user reads afterwards.
  EXPECT_TRUE(fs::exists(dir / "config.yaml"));
  EXPECT_TRUE(fs::exists(dir / "checkpoint.h5"));
  std::ifstream metrics(dir / "metrics.jsonl");
  std::string line, last;
  int lines = 0;
  while (std::getline(metrics, line)) ++lines, last = line;
  EXPECT_GT(lines, 1);
  for (const char* key : {"\"step\"", "\"epoch\"", "\"lr\"", "\"train_loss\"", "\"valid_loss\"", "\"valid_accuracy\"",
                          "\"tokens_per_s\"", "\"elapsed_s\""})
    EXPECT_NE(last.find(key), std::string::npos) << key << " missing in " << last;
  fs::remove_all(dir);
}

// A corpus with structure a one-layer model can learn quickly: words from a small
// vocabulary in a fixed cyclic order with random repeats.
std::string synthetic_text() {
  const std::vector<std::string> words = {"the ", "cat ", "sat ", "on ", "a ", "mat.\n"};
  Generator g(5);
  std::string s;
  size_t w = 0;
  while (s.size() < 60000) {
    s += words[w];
    w = (w + 1 + (g.uniform() < 0.1 ? 1 : 0)) % words.size();
  }
  return s;
}

TEST(Train, TextModelBeatsUnigram) {
  const fs::path dir = temp_dir("text");
  fs::create_directories(dir);
  const std::string text = synthetic_text();
  std::ofstream(dir / "corpus.txt") << text;
  std::string yaml = R"(
model: {vocab_size: 16, d_model: 32, n_layers: 1, mlp: gelu, mixer: {type: attention, num_heads: 2}, max_position_embeddings: 32}
data: {kind: text, path: CORPUS, tokenizer: char, seq_len: 32, seed: 2}
optimizer: {lr: 0.003, beta2: 0.99}
schedule: {type: cosine, warmup_steps: 10, min_lr: 0.0003}
training: {steps: 150, batch_size: 16, eval_interval: 150, eval_batches: 8, seed: 4}
logging: {level: warn}
)";
  yaml.replace(yaml.find("CORPUS"), 6, (dir / "corpus.txt").string());
  Config cfg = parse_config(yaml, "text.yaml");
  Trainer trainer(cfg, (dir / "run").string());
  TrainResult r = trainer.run();
  // Unigram cross-entropy of the validation split under train-split frequencies.
  const size_t n_train = static_cast<size_t>(text.size() * 0.9);
  std::map<char, double> freq;
  for (size_t i = 0; i < n_train; ++i) freq[text[i]] += 1;
  double h = 0;
  for (size_t i = n_train + 1; i < text.size(); ++i) h -= std::log(freq[text[i]] / n_train);
  const double unigram = h / static_cast<double>(text.size() - n_train - 1);
  EXPECT_LT(r.final_eval.loss, 0.8 * unigram) << "unigram " << unigram;
  fs::remove_all(dir);
}

TEST(Train, NonFiniteLossStopsWithAClearMessage) {
  const fs::path dir = temp_dir("nan");
  Config cfg = parse_config(kTinyMqar, "tiny_mqar.yaml",
                            {"optimizer.lr=1.0e+30", "optimizer.grad_clip=0", "schedule.warmup_steps=0",
                             "schedule.type=constant"});
  Trainer trainer(cfg, dir.string());
  try {
    trainer.run();
    FAIL() << "training with lr 1e30 did not stop";
  } catch (const TrainingError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("at step"), std::string::npos) << msg;
    EXPECT_TRUE(msg.find("nan") != std::string::npos || msg.find("inf") != std::string::npos) << msg;
  }
  fs::remove_all(dir);
}

NamedTensors final_params(const fs::path& dir) { return read_checkpoint((dir / "checkpoint.h5").string()).params; }

TEST(Train, ResumeFromAPeriodicCheckpointIsBitIdentical) {
  // Two threads, so that batch-parallel steps run whatever OMP_NUM_THREADS says.
  const int threads_before = omp_get_max_threads();
  omp_set_num_threads(2);
  const std::pair<const char*, const char*> cases[] = {
      {"ops", "attention"}, {"ops", "mamba"}, {"batch", "attention"}, {"batch", "mamba"}};
  for (const auto& [parallel, mixer] : cases) {
    SCOPED_TRACE(std::string("training.parallel: ") + parallel);
    // Dropout on, so that the resumed run must also restore the dropout stream.
    const std::vector<std::string> ov = {std::string("model.mixer.type=") + mixer, "training.epochs=0",
                                         "training.steps=40", "training.checkpoint_interval=15",
                                         "training.early_stop_accuracy=0", "model.dropout=0.1", "schedule.warmup_steps=10",
                                         std::string("training.parallel=") + parallel};
    const fs::path a = temp_dir(std::string("full_") + mixer), b = temp_dir(std::string("cut_") + mixer);
    Config cfg = parse_config(kTinyMqar, "tiny_mqar.yaml", ov);
    Trainer(cfg, a.string()).run();
    for (int64_t crash_at : {7, 22, 31}) {
      fs::remove_all(b);
      // A crash after step crash_at: everything after the last periodic checkpoint is lost.
      Trainer(cfg, b.string()).run(crash_at);
      if (crash_at < 15) {
        EXPECT_FALSE(fs::exists(b / "checkpoint.h5"));
        continue;
      }
      const int64_t saved = read_checkpoint((b / "checkpoint.h5").string()).train_u64.at("step");
      EXPECT_EQ(saved, crash_at / 15 * 15);
      Trainer::resume(b.string())->run();
      EXPECT_TRUE(same_values(final_params(a), final_params(b))) << mixer << ", crash after step " << crash_at;
    }
    fs::remove_all(a);
    fs::remove_all(b);
  }
  omp_set_num_threads(threads_before);
}

}  // namespace
