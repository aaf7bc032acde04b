// The training loop under faults: a diverging run never writes a non-finite
// checkpoint and says what to change; a resumed run may lower the learning rate
// but not change the model or data; a stop signal finishes the step, writes a
// checkpoint and resumes exactly; metrics.jsonl after a resume is the one of an
// uninterrupted run.
#include <gtest/gtest.h>

#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/file_testing.h"
#include "tests/support/op_testing.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace seqmix;
using seqmix::testing::same_values;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) { return seqmix::testing::scratch_dir("faults", name, /*create=*/false); }

const char* kTiny = R"(
model:
  vocab_size: 32
  d_model: 16
  n_layers: 2
  max_position_embeddings: 16
  dropout: 0.1
  mixer: {type: attention, num_heads: 2}
data: {kind: recall, task: mqar, vocab_size: 32, seq_len: 16, num_kv_pairs: 2, num_train_examples: 1024, num_test_examples: 64, seed: 3}
optimizer: {lr: 0.003}
schedule: {type: cosine, warmup_steps: 5, min_lr: 0.0001}
training: {steps: 40, batch_size: 16, eval_interval: 20, seed: 1}
logging: {log_interval: 10, level: warn}
)";

bool all_finite(const NamedTensors& ts) {
  for (const auto& [n, t] : ts)
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(t.f32()[i])) return false;
  return true;
}

std::string diverge(const Config& cfg, const fs::path& dir) {
  try {
    Trainer(cfg, dir.string()).run();
  } catch (const TrainingError& e) {
    return e.what();
  }
  return "";
}

// The audit's case: lr = 1e6 for 2 steps exited 0 with NaN weights in the checkpoint.
TEST(TrainFaults, ADivergedRunStopsAndNeverWritesANonFiniteCheckpoint) {
  const fs::path dir = temp_dir("lr1e6");
  Config cfg = parse_config(kTiny, "tiny.yaml", {"optimizer.lr=1.0e+6", "training.steps=2", "schedule.warmup_steps=0",
                                                 "schedule.type=constant", "optimizer.grad_clip=1.0"});
  const std::string msg = diverge(cfg, dir);
  ASSERT_FALSE(msg.empty()) << "a run with lr 1e6 finished as if it had succeeded";
  EXPECT_NE(msg.find("diverged at step"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Lower optimizer.lr"), std::string::npos) << msg;
  // grad_clip is already on: do not tell the user to enable it.
  EXPECT_EQ(msg.find("set optimizer.grad_clip"), std::string::npos) << msg;
  if (fs::exists(dir / "checkpoint.h5")) {
    CheckpointData ck = read_checkpoint((dir / "checkpoint.h5").string());
    EXPECT_TRUE(all_finite(ck.params) && all_finite(ck.adam_m) && all_finite(ck.adam_v));
  }
  fs::remove_all(dir);
}

// A run that diverges after a checkpoint leaves that checkpoint intact, the
// message says how to resume from it with a lower learning rate, and that works.
TEST(TrainFaults, TheLastGoodCheckpointSurvivesAndResumesWithALowerLearningRate) {
  const fs::path dir = temp_dir("diverge_late");
  Config cfg = parse_config(kTiny, "tiny.yaml", {"training.steps=10", "model.dropout=0", "optimizer.grad_clip=0"});
  Trainer(cfg, dir.string()).run();
  const std::string before = [&] {
    std::ifstream in(dir / "checkpoint.h5", std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  // Continue with a learning rate that diverges at once.
  std::string msg;
  try {
    Trainer::resume(dir.string(), {"optimizer.lr=1.0e+30", "schedule.type=constant", "training.steps=20"})->run();
  } catch (const TrainingError& e) {
    msg = e.what();
  }
  ASSERT_FALSE(msg.empty()) << "lr 1e30 did not diverge";
  EXPECT_TRUE(msg.find("diverged at step 11") != std::string::npos || msg.find("diverged at step 12") != std::string::npos) << msg;
  EXPECT_NE(msg.find("set optimizer.grad_clip"), std::string::npos) << msg;  // it is off here
  EXPECT_NE(msg.find("seqmix train --resume " + dir.string() + " --set optimizer.lr=1e+29"), std::string::npos) << msg;
  {
    std::ifstream in(dir / "checkpoint.h5", std::ios::binary);
    EXPECT_EQ(std::string(std::istreambuf_iterator<char>(in), {}), before) << "the diverged run touched the checkpoint";
  }
  auto t = Trainer::resume(dir.string(), {"optimizer.lr=0.001", "training.steps=20"});
  EXPECT_EQ(t->config().optimizer.lr, 0.001);
  TrainResult r = t->run();
  EXPECT_EQ(r.steps, 20);
  EXPECT_TRUE(std::isfinite(r.final_eval.loss));
  CheckpointData ck = read_checkpoint((dir / "checkpoint.h5").string());
  EXPECT_TRUE(all_finite(ck.params) && all_finite(ck.adam_m) && all_finite(ck.adam_v));
  fs::remove_all(dir);
}

TEST(TrainFaults, ResumeRefusesOverridesThatChangeTheModelOrData) {
  const fs::path dir = temp_dir("resume_set");
  Config cfg = parse_config(kTiny, "tiny.yaml", {"training.steps=6"});
  Trainer(cfg, dir.string()).run();
  for (const char* o : {"model.d_model=32", "data.seed=4", "training.batch_size=8", "optimizer.beta1=0.5",
                        "model.mixer.type=mamba"}) {
    try {
      Trainer::resume(dir.string(), {o});
      ADD_FAILURE() << o << " was accepted";
    } catch (const std::invalid_argument& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("cannot change on resume"), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::string(o).substr(0, std::string(o).find('='))), std::string::npos) << msg;
    }
  }
  EXPECT_NE(resume_override_refusal("model.d_model").find("model whose weights"), std::string::npos);
  EXPECT_EQ(resume_override_refusal("schedule.min_lr"), "");
  EXPECT_EQ(resume_override_refusal("logging.log_interval"), "");
  fs::remove_all(dir);
}

NamedTensors params_of(const fs::path& dir) { return read_checkpoint((dir / "checkpoint.h5").string()).params; }

// metrics.jsonl without the timing fields, which differ between any two runs.
std::vector<std::string> metrics_of(const fs::path& dir) {
  std::vector<std::string> out;
  std::ifstream in(dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("tokens_per_s");
    j.erase("elapsed_s");
    out.push_back(j.dump());
  }
  return out;
}

// Checkpoints at steps that are not multiples of log_interval: the first line
// after a resume used to average only the steps since the checkpoint.
TEST(TrainFaults, MetricsAfterAResumeEqualThoseOfAnUninterruptedRun) {
  const fs::path a = temp_dir("metrics_full"), b = temp_dir("metrics_cut");
  Config cfg = parse_config(kTiny, "tiny.yaml", {"training.checkpoint_interval=7"});
  Trainer(cfg, a.string()).run();
  for (int64_t crash_at : {9, 23}) {
    fs::remove_all(b);
    Trainer(cfg, b.string()).run(crash_at);
    Trainer::resume(b.string())->run();
    EXPECT_EQ(metrics_of(a), metrics_of(b)) << "crash after step " << crash_at;
    EXPECT_TRUE(same_values(params_of(a), params_of(b))) << "crash after step " << crash_at;
  }
  fs::remove_all(a);
  fs::remove_all(b);
}

// SIGINT: the step in progress finishes, a checkpoint is written (even with
// checkpoint_interval 0), and resuming gives the uninterrupted run's weights.
TEST(TrainFaults, AStopSignalWritesACheckpointThatResumesExactly) {
  const fs::path a = temp_dir("signal_full"), b = temp_dir("signal_cut");
  Config cfg = parse_config(kTiny, "tiny.yaml", {"training.checkpoint_interval=0"});
  Trainer(cfg, a.string()).run();
  install_stop_signal_handlers();
  std::raise(SIGINT);  // as if Ctrl-C arrived during the first step
  ASSERT_EQ(stop_signal_received(), SIGINT);
  TrainResult cut = Trainer(cfg, b.string()).run();
  clear_stop_signal();
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  EXPECT_EQ(cut.stopped_by_signal, SIGINT);
  EXPECT_EQ(cut.steps, 1);
  ASSERT_TRUE(fs::exists(b / "checkpoint.h5"));
  EXPECT_EQ(read_checkpoint((b / "checkpoint.h5").string()).train_u64.at("finished"), 0u);
  TrainResult rest = Trainer::resume(b.string())->run();
  EXPECT_EQ(rest.steps, 40);
  EXPECT_TRUE(same_values(params_of(a), params_of(b)));
  EXPECT_EQ(metrics_of(a), metrics_of(b));
  fs::remove_all(a);
  fs::remove_all(b);
}

}  // namespace
