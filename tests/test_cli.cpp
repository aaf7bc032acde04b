// The seqmix program as a user runs it: kill -9 and --resume, sweeps, info,
// eval, sample, and clear errors with non-zero exit codes.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/command_testing.h"
#include "tests/support/file_testing.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace seqmix;

namespace {

using Result = seqmix::testing::CommandResult;
Result run(const std::string& args) { return seqmix::testing::run_seqmix(args); }

fs::path temp_dir(const std::string& name) { return seqmix::testing::scratch_dir("cli", name); }

const char* kConfig = R"(
model:
  vocab_size: 64
  d_model: 32
  n_layers: 2
  max_position_embeddings: 32
  dropout: 0.1
  mixer: {type: attention, num_heads: 2}
data: {kind: recall, task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 4, num_train_examples: 2048, num_test_examples: 128, seed: 3}
optimizer: {lr: 0.003}
schedule: {type: cosine, warmup_steps: 10, min_lr: 0.0001}
training: {steps: 300, batch_size: 32, eval_interval: 100, seed: 1, checkpoint_interval: 10}
logging: {log_interval: 10, level: info}
)";

std::string write_config(const fs::path& dir, const std::string& text = kConfig) {
  const std::string p = (dir / "config.yaml").string();
  std::ofstream(p) << text;
  return p;
}

bool same_params(const fs::path& a, const fs::path& b) {
  CheckpointData x = read_checkpoint((a / "checkpoint.h5").string());
  CheckpointData y = read_checkpoint((b / "checkpoint.h5").string());
  if (x.params.size() != y.params.size()) return false;
  for (size_t i = 0; i < x.params.size(); ++i)
    if (x.params[i].first != y.params[i].first ||
        std::memcmp(x.params[i].second.f32(), y.params[i].second.f32(), 4 * x.params[i].second.numel()) != 0)
      return false;
  return true;
}

TEST(Cli, KillNineAtSeveralPointsThenResumeIsBitIdentical) {
  const fs::path dir = temp_dir("kill");
  const std::string cfg = write_config(dir);
  Result full = run("train " + cfg + " --out " + (dir / "full").string());
  ASSERT_EQ(full.code, 0) << full.out;
  int resumed = 0;
  for (int delay_ms : {150, 400, 900}) {
    const fs::path cut = dir / ("cut" + std::to_string(delay_ms));
    pid_t pid = fork();
    if (pid == 0) {
      int devnull = ::open("/dev/null", O_WRONLY);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execl(SEQMIX_BINARY, SEQMIX_BINARY, "train", cfg.c_str(), "--out", cut.c_str(), (char*)nullptr);
      _exit(127);
    }
    // Wait for the first checkpoint (generously: a loaded machine or a sanitizer
    // build is many times slower), then kill at an arbitrary moment after it.
    for (int i = 0; i < 30000 && !fs::exists(cut / "checkpoint.h5"); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(fs::exists(cut / "checkpoint.h5")) << "no checkpoint after 300 s";
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFSIGNALED(status)) continue;  // it finished before the kill: nothing to resume
    ++resumed;
    Result r = run("train --resume " + cut.string());
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find("resumed"), std::string::npos) << r.out;
    EXPECT_TRUE(same_params(dir / "full", cut)) << "killed " << delay_ms << " ms after the first checkpoint";
  }
  EXPECT_GT(resumed, 0) << "every run finished before it could be killed";
  fs::remove_all(dir);
}

TEST(Cli, TrainRefusesToOverwriteARun) {
  const fs::path dir = temp_dir("overwrite");
  const std::string cfg = write_config(dir);
  ASSERT_EQ(run("train " + cfg + " --set training.steps=12 --out " + (dir / "r").string()).code, 0);
  Result again = run("train " + cfg + " --set training.steps=12 --out " + (dir / "r").string());
  EXPECT_NE(again.code, 0);
  EXPECT_NE(again.out.find("--resume"), std::string::npos) << again.out;
  fs::remove_all(dir);
}

// logging.level is applied: warn keeps a training's progress lines (info) out, info shows them.
TEST(Cli, LoggingLevelOfTheConfigIsApplied) {
  const fs::path dir = temp_dir("loglevel");
  const std::string cfg = write_config(dir);
  const std::string run_args = " --set training.steps=20 --set training.eval_interval=10 --set logging.log_interval=5";
  const Result warn = run("train " + cfg + run_args + " --set logging.level=warn --out " + (dir / "warn").string());
  ASSERT_EQ(warn.code, 0) << warn.out;
  EXPECT_EQ(warn.out.find("[info]"), std::string::npos) << warn.out;
  EXPECT_NE(warn.out.find("done: 20 steps"), std::string::npos) << warn.out;  // the result is not a log line
  const Result info = run("train " + cfg + run_args + " --out " + (dir / "info").string());
  ASSERT_EQ(info.code, 0) << info.out;
  EXPECT_NE(info.out.find("[info] step 5/20"), std::string::npos) << info.out;
  fs::remove_all(dir);
}

TEST(Cli, ConfigErrorsNameFileLineAndSuggestion) {
  const fs::path dir = temp_dir("cfgerr");
  std::string text = kConfig;
  text.replace(text.find("d_model"), 7, "d_modle");
  const std::string cfg = write_config(dir, text);
  Result r = run("train " + cfg);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("config.yaml:4"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("did you mean 'd_model'"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

TEST(Cli, InfoEvalAndSample) {
  const fs::path dir = temp_dir("info");
  const std::string cfg = write_config(dir);
  const std::string out = (dir / "r").string();
  ASSERT_EQ(run("train " + cfg + " --set training.steps=20 --out " + out).code, 0);
  Result info = run("info " + out);
  ASSERT_EQ(info.code, 0) << info.out;
  EXPECT_NE(info.out.find("layers.0.mixer.Wqkv.weight  (96, 32)  3072"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("parameters: "), std::string::npos);
  EXPECT_NE(info.out.find("grows with t: 64 per token"), std::string::npos) << info.out;
  Result eval = run("eval " + out + "/checkpoint.h5");
  ASSERT_EQ(eval.code, 0) << eval.out;
  EXPECT_NE(eval.out.find("\"accuracy\""), std::string::npos) << eval.out;
  Result sample = run("sample " + out + " --prompt '1 40 2 50 1' --max-new-tokens 4 --temperature 0");
  ASSERT_EQ(sample.code, 0) << sample.out;
  Result bad = run("sample " + out + " --prompt '1 x 2'");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("'x' is not a token id"), std::string::npos) << bad.out;
  fs::remove_all(dir);
}

TEST(Cli, BadCheckpointsAreRefusedWithTheirPath) {
  const fs::path dir = temp_dir("badck");
  const std::string p = (dir / "junk.h5").string();
  std::ofstream(p) << "not hdf5";
  Result r = run("info " + p);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find(p), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not an HDF5 file"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

TEST(Cli, SampleTextModelRejectsCharactersOutsideTheVocabulary) {
  const fs::path dir = temp_dir("text");
  std::ofstream(dir / "corpus.txt") << std::string(2000, 'a') + std::string(2000, 'b') + "abcabc\n";
  std::string yaml = R"(
model: {vocab_size: 4, d_model: 16, n_layers: 1, mixer: {type: mamba}}
data: {kind: text, path: corpus.txt, tokenizer: char, seq_len: 16}
training: {steps: 3, batch_size: 4, eval_interval: 3, eval_batches: 2}
)";
  const std::string cfg = write_config(dir, yaml);
  ASSERT_EQ(run("train " + cfg + " --out " + (dir / "r").string()).code, 0);
  Result ok = run("sample " + (dir / "r").string() + " --prompt abc --max-new-tokens 5 --seed 3");
  EXPECT_EQ(ok.code, 0) << ok.out;
  EXPECT_EQ(ok.out.rfind("abc", 0), 0u) << ok.out;  // the prompt is echoed, then the continuation
  Result bad = run("sample " + (dir / "r").string() + " --prompt 'abz'");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("'z'"), std::string::npos) << bad.out;
  fs::remove_all(dir);
}

// A number option below its bound is refused naming the option, the bound and the value.
TEST(Cli, NumberOptionsBelowTheirBoundSayWhich) {
  const Result jobs = run("sweep " + std::string(SEQMIX_SOURCE_DIR) + "/configs/sweeps/mqar.yaml --jobs 0");
  EXPECT_NE(jobs.code, 0);
  EXPECT_NE(jobs.out.find("--jobs: must be at least 1, got 0"), std::string::npos) << jobs.out;
  const Result temp = run("sample no_such_run --prompt a --temperature -1");
  EXPECT_NE(temp.code, 0);
  EXPECT_NE(temp.out.find("--temperature: must be at least 0, got -1"), std::string::npos) << temp.out;
  const Result word = run("sample no_such_run --prompt a --top-k many");
  EXPECT_NE(word.code, 0);
  EXPECT_NE(word.out.find("many"), std::string::npos) << word.out;
}

TEST(Cli, SweepRunsTheGridSkipsFinishedRunsAndRecordsFailures) {
  const fs::path dir = temp_dir("sweep");
  write_config(dir);
  std::ofstream(dir / "sweep.yaml") << R"(
base: config.yaml
grid:
  model.mixer.type: [attention, linear_attention]
  optimizer.lr: [0.003, 1.0e+30]
set: [training.steps=12, training.eval_interval=6, training.checkpoint_interval=0, optimizer.grad_clip=0, model.dropout=0]
)";
  const std::string out = (dir / "out").string();
  Result r = run("sweep " + (dir / "sweep.yaml").string() + " --jobs 2 --out " + out);
  // The lr=1e30 runs diverge: recorded as failed, and the sweep exits non-zero.
  EXPECT_EQ(r.code, 1) << r.out;
  std::ifstream csv(out + "/results.csv");
  std::vector<std::string> rows;
  for (std::string line; std::getline(csv, line);) rows.push_back(line);
  ASSERT_EQ(rows.size(), 5u) << r.out;
  EXPECT_EQ(rows[0].rfind("run,model.mixer.type,optimizer.lr,status,best_valid_accuracy", 0), 0u) << rows[0];
  EXPECT_NE(rows[1].find("type=attention,lr=0.003\",attention,0.003,done,"), std::string::npos) << rows[1];
  EXPECT_NE(rows[2].find(",failed"), std::string::npos) << rows[2];
  EXPECT_NE(rows[3].find("linear_attention,0.003,done,"), std::string::npos) << rows[3];
  EXPECT_NE(rows[4].find(",failed"), std::string::npos) << rows[4];
  const auto stamp = fs::last_write_time(out + "/type=attention,lr=0.003/result.json");
  Result again = run("sweep " + (dir / "sweep.yaml").string() + " --out " + out);
  EXPECT_NE(again.out.find("type=attention,lr=0.003: finished before, skipped"), std::string::npos) << again.out;
  EXPECT_EQ(fs::last_write_time(out + "/type=attention,lr=0.003/result.json"), stamp);
  fs::remove_all(dir);
}

}  // namespace
