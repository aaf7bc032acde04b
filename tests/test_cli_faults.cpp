// The seqmix program under faults, as a user meets them: Ctrl-C and kill,
// two writers on one run directory, a diverging run, a restarted run
// directory, and eval on a text file other than the training one.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "tests/support/command_testing.h"
#include "tests/support/file_testing.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace seqmix;

namespace {

using Result = seqmix::testing::CommandResult;
Result run(const std::string& args) { return seqmix::testing::run_seqmix(args); }

fs::path temp_dir(const std::string& name) { return seqmix::testing::scratch_dir("clifault", name); }

// A run long enough to be interrupted, with no periodic checkpoints.
const char* kLong = R"(
model: {vocab_size: 128, d_model: 64, n_layers: 2, max_position_embeddings: 64, mixer: {type: attention, num_heads: 2}}
data: {kind: recall, task: mqar, vocab_size: 128, seq_len: 64, num_kv_pairs: 4, num_train_examples: 512, num_test_examples: 64, seed: 3}
optimizer: {lr: 0.001}
schedule: {type: constant, warmup_steps: 0}
training: {steps: 1000000, batch_size: 32, eval_interval: 100000, seed: 1, checkpoint_interval: 0}
logging: {log_interval: 1, level: info}
)";

std::string write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p.string();
}

// Starts `seqmix args...` with its output in log; returns the pid.
pid_t spawn(const std::vector<std::string>& args, const fs::path& log) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    std::vector<char*> argv = {const_cast<char*>(SEQMIX_BINARY)};
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(SEQMIX_BINARY, argv.data());
    _exit(127);
  }
  return pid;
}

// Waits (generously: the machine may be loaded, or this a sanitizer build) for
// the run to have logged a step.
bool wait_for_first_step(const fs::path& run) {
  for (int i = 0; i < 6000; ++i) {
    std::ifstream in(run / "metrics.jsonl");
    std::string line;
    if (std::getline(in, line) && !line.empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Ctrl-C (and SIGTERM) with checkpoint_interval 0 used to lose the whole run.
// A second writer on the same directory used to interleave metrics.jsonl.
TEST(CliFaults, StopSignalsCheckpointAndASecondWriterIsRefused) {
  for (int sig : {SIGINT, SIGTERM}) {
    const fs::path dir = temp_dir(std::string("signal") + std::to_string(sig));
    const std::string cfg = write_file(dir / "long.yaml", kLong);
    const fs::path out = dir / "run";
    pid_t pid = spawn({"train", cfg, "--out", out.string()}, dir / "log.txt");
    ASSERT_TRUE(wait_for_first_step(out)) << slurp(dir / "log.txt");

    Result second = run("train " + cfg + " --set training.steps=5 --out " + out.string());
    EXPECT_EQ(second.code, 1) << second.out;
    EXPECT_NE(second.out.find("in use by another seqmix train (pid " + std::to_string(pid) + ")"), std::string::npos)
        << second.out;
    Result resume = run("train --resume " + out.string());
    EXPECT_EQ(resume.code, 1) << resume.out;
    EXPECT_NE(resume.out.find("pid " + std::to_string(pid)), std::string::npos) << resume.out;

    kill(pid, sig);
    int status = 0;
    waitpid(pid, &status, 0);
    const std::string log = slurp(dir / "log.txt");
    ASSERT_TRUE(WIFEXITED(status)) << "killed by signal " << WTERMSIG(status) << "\n" << log;
    EXPECT_EQ(WEXITSTATUS(status), 128 + sig) << log;
    EXPECT_NE(log.find("continue with: seqmix train --resume " + out.string()), std::string::npos) << log;
    ASSERT_TRUE(fs::exists(out / "checkpoint.h5")) << log;
    const int64_t step = static_cast<int64_t>(read_checkpoint((out / "checkpoint.h5").string()).train_u64.at("step"));
    EXPECT_GT(step, 0);
    // The stopped run continues where it stopped, here up to a few more steps.
    Result more = run("train --resume " + out.string() + " --set training.steps=" + std::to_string(step + 3));
    EXPECT_EQ(more.code, 0) << more.out;
    EXPECT_NE(more.out.find("done: " + std::to_string(step + 3) + " steps"), std::string::npos) << more.out;
    fs::remove_all(dir);
  }
}

TEST(CliFaults, ASecondSignalEndsTheRunAtOnce) {
  const fs::path dir = temp_dir("twice");
  // Slow steps, so that the second signal arrives while the first one's step runs
  std::string text = kLong;
  // (hundreds of milliseconds each even on a fast machine).
  text.replace(text.find("d_model: 64"), 11, "d_model: 512");
  text.replace(text.find("batch_size: 32"), 14, "batch_size: 96");
  const std::string cfg = write_file(dir / "slow.yaml", text);
  const fs::path out = dir / "run";
  pid_t pid = spawn({"train", cfg, "--out", out.string()}, dir / "log.txt");
  ASSERT_TRUE(wait_for_first_step(out)) << slurp(dir / "log.txt");
  kill(pid, SIGINT);
  // Two signals sent back to back may be delivered as one: send the second once the
  // first has been handled (its handler prints a line).
  for (int i = 0; i < 3000 && slurp(dir / "log.txt").find("signal again to quit") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << slurp(dir / "log.txt");
  fs::remove_all(dir);
}

TEST(CliFaults, ARestartedRunDirectoryIsRefused) {
  const fs::path dir = temp_dir("restart");
  const std::string cfg = write_file(dir / "long.yaml", kLong);
  const fs::path out = dir / "run";
  pid_t pid = spawn({"train", cfg, "--out", out.string()}, dir / "log.txt");
  ASSERT_TRUE(wait_for_first_step(out));
  kill(pid, SIGKILL);  // no checkpoint: checkpoint_interval is 0
  waitpid(pid, nullptr, 0);
  ASSERT_FALSE(fs::exists(out / "checkpoint.h5"));
  const std::string metrics = slurp(out / "metrics.jsonl");
  Result again = run("train " + cfg + " --set training.steps=3 --out " + out.string());
  EXPECT_EQ(again.code, 1) << again.out;
  EXPECT_NE(again.out.find("holds an earlier run's metrics.jsonl"), std::string::npos) << again.out;
  EXPECT_EQ(slurp(out / "metrics.jsonl"), metrics);
  fs::remove_all(dir);
}

TEST(CliFaults, ADivergedRunExitsNonZeroAndResumeMayLowerTheLearningRate) {
  const fs::path dir = temp_dir("diverge");
  std::string text = kLong;
  text.replace(text.find("steps: 1000000"), 14, "steps: 6");
  const std::string cfg = write_file(dir / "c.yaml", text);
  Result r = run("train " + cfg + " --set optimizer.lr=1e6 --out " + (dir / "bad").string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_EQ(r.out.find("done:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("diverged"), std::string::npos) << r.out;
  const std::string good = (dir / "good").string();
  ASSERT_EQ(run("train " + cfg + " --out " + good).code, 0);
  Result more = run("train --resume " + good + " --set optimizer.lr=0.0005 --set training.steps=8");
  EXPECT_EQ(more.code, 0) << more.out;
  EXPECT_NE(more.out.find("done: 8 steps"), std::string::npos) << more.out;
  Result model = run("train --resume " + good + " --set model.d_model=32");
  EXPECT_EQ(model.code, 1) << model.out;
  EXPECT_NE(model.out.find("model.d_model' cannot change on resume: it would change the model"), std::string::npos)
      << model.out;
  fs::remove_all(dir);
}

// `eval RUN --set data.path=other.txt` scored only the last 10% of other.txt.
TEST(CliFaults, EvalOnAnotherTextFileScoresAllOfIt) {
  const fs::path dir = temp_dir("evalother");
  std::string corpus, other;
  for (int i = 0; i < 200; ++i) corpus += "the cat sat on the mat. ";
  for (int i = 0; i < 37; ++i) other += "a cat at the mat; ";
  corpus += ";";  // every character of `other` is in the vocabulary
  write_file(dir / "corpus.txt", corpus);
  write_file(dir / "other.txt", other);
  const std::string cfg = write_file(dir / "text.yaml", R"(
model: {vocab_size: 16, d_model: 16, n_layers: 1, mixer: {type: mamba}}
data: {kind: text, path: )" + (dir / "corpus.txt").string() + R"(, tokenizer: char, seq_len: 16}
training: {steps: 3, batch_size: 4, eval_interval: 3, eval_batches: 2}
schedule: {warmup_steps: 0}
)");
  ASSERT_EQ(run("train " + cfg + " --out " + (dir / "r").string()).code, 0);
  Result e = run("eval " + (dir / "r").string() + " --set data.path=" + (dir / "other.txt").string());
  ASSERT_EQ(e.code, 0) << e.out;
  auto j = nlohmann::json::parse(e.out.substr(e.out.find('{')));
  EXPECT_EQ(j["labelled_positions"].get<int64_t>(), static_cast<int64_t>(other.size()) - 1) << e.out;
  // On the training file itself: its validation split, as during training.
  Result own = run("eval " + (dir / "r").string());
  ASSERT_EQ(own.code, 0) << own.out;
  auto k = nlohmann::json::parse(own.out.substr(own.out.find('{')));
  EXPECT_EQ(k["labelled_positions"].get<int64_t>(), 2 * 4 * 16) << own.out;
  fs::remove_all(dir);
}

}  // namespace
