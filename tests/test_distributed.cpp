// Data-parallel training under mpirun, as a user runs it: `mpirun -np 2 seqmix train`
// gives the run one process gives (to float32 summation order), two such runs give the
// same bits, a resumed run continues bit for bit, a batch that does not split is refused,
// a stop signal that reaches one rank stops all of them with a checkpoint, and a rank
// killed with SIGKILL ends the job without a hang and leaves a loadable checkpoint.
// Without MPI in the build every test reports skipped (exit code 77).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tests/support/command_testing.h"
#include "tests/support/op_testing.h"
#include "train/checkpoint.h"

namespace fs = std::filesystem;
using namespace seqmix;

namespace {

#ifdef SEQMIX_MPIEXEC
constexpr const char* kMpiexec = SEQMIX_MPIEXEC;
#else
constexpr const char* kMpiexec = "";
#endif

// The stated tolerance of docs/cluster.md: N ranks against one process differ by the
// order of float32 sums (the gradient allreduce, the loss over slices).
// Adam divides by the gradient's running scale, so a parameter whose gradient is near
// zero moves by a rounding-sized step in either direction: the parameters are compared as
// a whole (the 2-norm of the difference relative to theirs) and element by element.
constexpr double kLossRtol = 1e-5;
constexpr double kParamRtol2 = 1e-5;
constexpr double kParamAtol = 1e-4;

struct Result {
  int code;
  std::string out;  // stdout and stderr
};

// One thread per rank: the machine's cores go to the ranks, and the figures compared are
// those of a fixed thread count.
std::string seqmix_cmd(int ranks, const std::string& args) {
  std::string cmd = "env OMP_NUM_THREADS=1 ";
#ifdef SEQMIX_SANITIZED
  // Under AddressSanitizer the ranks keep its memory checks but not LeakSanitizer's:
  // Open MPI's plugins are unloaded at MPI_Finalize, and the allocations they leave have
  // stacks LeakSanitizer can no longer name, so no suppression can match them.
  if (ranks > 0) cmd += "ASAN_OPTIONS=\"$ASAN_OPTIONS:detect_leaks=0\" ";
#endif
  if (ranks > 0) cmd += std::string(kMpiexec) + " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
  return cmd + SEQMIX_BINARY + " " + args;
}

// ranks 0: the program alone, without mpirun.
Result train(int ranks, const std::string& args) {
  const seqmix::testing::CommandResult r = seqmix::testing::run_command(seqmix_cmd(ranks, "train " + args) + " 2>&1");
  return {r.code, r.out};
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("seqmix_distributed_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p) << text;
  return p.string();
}

// MQAR, with an evaluation set (50) that is not a multiple of the batch (16), so that the
// last evaluation batch splits unevenly over the ranks.
const char* kMqar = R"(
model: {vocab_size: 64, d_model: 16, n_layers: 2, mlp: none, max_position_embeddings: 32, mixer: {type: attention, num_heads: 2}}
data: {kind: recall, task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 4, num_train_examples: 256, num_test_examples: 50, seed: 3}
optimizer: {lr: 0.003, grad_clip: 1.0, weight_decay: 0.1}
schedule: {type: cosine, warmup_steps: 4, min_lr: 0.0003}
training: {steps: 24, batch_size: 16, eval_interval: 8, seed: 1, checkpoint_interval: 8}
logging: {log_interval: 4}
)";

// A character corpus with dropout, an MLP and Mamba: the dropout masks of the slices must
// be those one process draws for the whole batch.
const char* kText = R"(
model: {vocab_size: 40, d_model: 16, n_layers: 1, mlp: gelu, dropout: 0.1, max_position_embeddings: 0, mixer: {type: mamba, d_state: 4}}
data: {kind: text, path: corpus.txt, tokenizer: char, seq_len: 16}
optimizer: {lr: 0.003, grad_clip: 1.0}
training: {steps: 16, batch_size: 8, eval_interval: 8, eval_batches: 3, seed: 2, checkpoint_interval: 8}
logging: {log_interval: 4}
)";

std::string corpus() {
  std::string text;
  const char* words[] = {"the ", "quick ", "brown ", "fox ", "jumps ", "over ", "a ", "lazy ", "dog", ".\n"};
  uint64_t x = 12345;
  for (int i = 0; i < 3000; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    text += words[(x >> 33) % 10];
  }
  return text;
}

std::vector<nlohmann::json> metrics(const fs::path& run) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(run / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

// The loss curves agree step for step to kLossRtol (accuracies to one prediction).
void expect_same_curve(const fs::path& a, const fs::path& b, bool exact) {
  const auto ma = metrics(a), mb = metrics(b);
  ASSERT_EQ(ma.size(), mb.size());
  ASSERT_FALSE(ma.empty());
  for (size_t i = 0; i < ma.size(); ++i) {
    ASSERT_EQ(ma[i]["step"], mb[i]["step"]);
    for (const char* key : {"train_loss", "valid_loss", "train_accuracy", "valid_accuracy", "lr"}) {
      ASSERT_EQ(ma[i].contains(key), mb[i].contains(key)) << key;
      if (!ma[i].contains(key)) continue;
      const double x = ma[i][key], y = mb[i][key];
      if (exact) {
        EXPECT_EQ(x, y) << key << " at step " << ma[i]["step"];
      } else {
        const bool accuracy = std::strstr(key, "accuracy") != nullptr;
        EXPECT_NEAR(x, y, accuracy ? 0.005 : kLossRtol * std::fabs(y)) << key << " at step " << ma[i]["step"];
      }
    }
  }
}

struct Difference {
  double max_abs = 0;  // largest element difference
  double rel2 = 0;     // |a - b| / |b| over all parameters together
};

Difference difference(const NamedTensors& a, const NamedTensors& b) {
  EXPECT_EQ(a.size(), b.size());
  Difference d;
  double diff2 = 0, norm2 = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.numel(), b[i].second.numel());
    for (int64_t k = 0; k < a[i].second.numel(); ++k) {
      const double x = a[i].second.f32()[k], y = b[i].second.f32()[k];
      d.max_abs = std::max(d.max_abs, std::fabs(x - y));
      diff2 += (x - y) * (x - y);
      norm2 += y * y;
    }
  }
  d.rel2 = std::sqrt(diff2 / norm2);
  return d;
}

CheckpointData checkpoint(const fs::path& run) { return read_checkpoint((run / "checkpoint.h5").string()); }

// Parameters, Adam moments, step and the /train state (the data and dropout streams).
void expect_same_checkpoint_bits(const fs::path& a, const fs::path& b) {
  const CheckpointData ca = checkpoint(a), cb = checkpoint(b);
  EXPECT_TRUE(seqmix::testing::same_values(ca.params, cb.params));
  EXPECT_TRUE(seqmix::testing::same_values(ca.adam_m, cb.adam_m));
  EXPECT_TRUE(seqmix::testing::same_values(ca.adam_v, cb.adam_v));
  EXPECT_EQ(ca.optimizer_step, cb.optimizer_step);
  for (const auto& [k, v] : ca.train_u64)
    if (k.rfind("log_window", 0) != 0) {
      EXPECT_EQ(v, cb.train_u64.at(k)) << k;
    }
}

void expect_same_model(const fs::path& a, const fs::path& b) {
  const CheckpointData ca = checkpoint(a), cb = checkpoint(b);
  const Difference d = difference(ca.params, cb.params);
  EXPECT_LE(d.rel2, kParamRtol2);
  EXPECT_LE(d.max_abs, kParamAtol);
  EXPECT_EQ(ca.optimizer_step, cb.optimizer_step);
  // The data and dropout streams are those of one process, whatever the number of ranks.
  for (const auto& [k, v] : ca.train_u64)
    if (k.rfind("data_", 0) == 0 || k.rfind("dropout_", 0) == 0) {
      EXPECT_EQ(v, cb.train_u64.at(k)) << k;
    }
}

class Distributed : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    mqar_ = write_file(dir_ / "mqar.yaml", kMqar);
    write_file(dir_ / "corpus.txt", corpus());
    std::string text = kText;
    text.replace(text.find("corpus.txt"), 10, (dir_ / "corpus.txt").string());
    text_ = write_file(dir_ / "text.yaml", text);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }
  std::string out(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
  std::string mqar_, text_;
};

TEST_F(Distributed, TwoRanksTrainTheMqarRunOneProcessTrains) {
  const Result one = train(0, mqar_ + " --out " + out("one"));
  ASSERT_EQ(one.code, 0) << one.out;
  const Result two = train(2, mqar_ + " --out " + out("two"));
  ASSERT_EQ(two.code, 0) << two.out;
  EXPECT_NE(two.out.find("data-parallel on 2 MPI ranks"), std::string::npos) << two.out;
  // Rank 0 alone reports: one "done" line.
  EXPECT_EQ(two.out.find("done:"), two.out.rfind("done:")) << two.out;
  expect_same_curve(dir_ / "one", dir_ / "two", false);
  expect_same_model(dir_ / "one", dir_ / "two");
}

TEST_F(Distributed, TwoRanksTrainTheTextRunWithDropoutOneProcessTrains) {
  const Result one = train(0, text_ + " --out " + out("one"));
  ASSERT_EQ(one.code, 0) << one.out;
  const Result two = train(2, text_ + " --out " + out("two"));
  ASSERT_EQ(two.code, 0) << two.out;
  expect_same_curve(dir_ / "one", dir_ / "two", false);
  expect_same_model(dir_ / "one", dir_ / "two");
}

TEST_F(Distributed, TwoRunsOnTwoRanksAreBitIdentical) {
  ASSERT_EQ(train(2, text_ + " --out " + out("a")).code, 0);
  ASSERT_EQ(train(2, text_ + " --out " + out("b")).code, 0);
  expect_same_curve(dir_ / "a", dir_ / "b", true);
  expect_same_checkpoint_bits(dir_ / "a", dir_ / "b");
}

TEST_F(Distributed, ResumeOnTwoRanksIsBitExactAndOnOneRankWithinTolerance) {
  // A constant learning rate, so that a run of 12 steps continued to 24 is the run of 24.
  const std::string cfg = mqar_ + " --set schedule.type=constant --set training.eval_interval=4";
  ASSERT_EQ(train(2, cfg + " --out " + out("whole")).code, 0);
  ASSERT_EQ(train(2, cfg + " --set training.steps=12 --out " + out("parts")).code, 0);
  fs::copy(dir_ / "parts", dir_ / "parts_on_one");
  const Result resumed = train(2, "--resume " + out("parts") + " --set training.steps=24");
  ASSERT_EQ(resumed.code, 0) << resumed.out;
  expect_same_curve(dir_ / "whole", dir_ / "parts", true);
  expect_same_checkpoint_bits(dir_ / "whole", dir_ / "parts");
  // Another number of ranks continues the same run, to the tolerance.
  const Result on_one = train(0, "--resume " + out("parts_on_one") + " --set training.steps=24");
  ASSERT_EQ(on_one.code, 0) << on_one.out;
  expect_same_curve(dir_ / "whole", dir_ / "parts_on_one", false);
  expect_same_model(dir_ / "whole", dir_ / "parts_on_one");
}

TEST_F(Distributed, ABatchThatDoesNotSplitOverTheRanksIsRefused) {
  const Result r = train(2, mqar_ + " --set training.batch_size=15 --out " + out("r"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("training.batch_size = 15 does not divide among the 2 MPI ranks"), std::string::npos) << r.out;
  // Every rank saw the same problem: the job ends cleanly, not through MPI_Abort.
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(dir_ / "r" / "checkpoint.h5"));
}

// ---- Processes: signals to one rank -------------------------------------------------

// Starts `mpirun -np 2 seqmix args` with its output in log; returns mpirun's pid.
pid_t spawn_two_ranks(const std::string& args, const fs::path& log) {
  const std::string cmd = "exec " + seqmix_cmd(2, args) + " > " + log.string() + " 2>&1";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return pid;
}

// The pid of the process of MPI rank `rank` among mpirun's children, or -1.
pid_t rank_pid(pid_t mpirun, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    std::istringstream rest(line.substr(line.rfind(')') + 1));
    std::string state;
    long ppid = 0;
    rest >> state >> ppid;
    if (ppid != mpirun) continue;
    std::ifstream env(e.path() / "environ");
    for (std::string entry; std::getline(env, entry, '\0');)
      if (entry == want) return static_cast<pid_t>(std::stol(name));
  }
  return -1;
}

// waitpid with a deadline; -1 if the process is still running then (it is killed).
int wait_exit(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return -1;
}

bool wait_for(const std::function<bool()>& cond, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Long enough to be interrupted: a checkpoint every 5 steps.
std::string long_run(const std::string& cfg) {
  return cfg + " --set training.steps=100000 --set training.eval_interval=100000 --set training.checkpoint_interval=5";
}

TEST_F(Distributed, SigkillOfOneRankEndsTheJobAndTheCheckpointLoads) {
  const fs::path run = dir_ / "r", log = dir_ / "log.txt";
  const pid_t mpirun = spawn_two_ranks("train " + long_run(mqar_) + " --out " + run.string(), log);
  ASSERT_TRUE(wait_for([&] { return fs::exists(run / "checkpoint.h5"); }, 60)) << read_all(log);
  pid_t victim = -1;
  ASSERT_TRUE(wait_for([&] { return (victim = rank_pid(mpirun, 1)) > 0; }, 10)) << read_all(log);
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const int code = wait_exit(mpirun, 30);
  ASSERT_NE(code, -1) << "mpirun did not end within 30 s of SIGKILL to rank 1\n" << read_all(log);
  EXPECT_NE(code, 0) << read_all(log);
  // The last checkpoint is whole and continues the run (the lock went with the job).
  const CheckpointData ck = checkpoint(run);
  EXPECT_GE(ck.optimizer_step, 5);
  EXPECT_EQ(ck.optimizer_step % 5, 0);
  const Result resumed = train(2, "--resume " + run.string() + " --set training.steps=" +
                                      std::to_string(ck.optimizer_step + 2));
  EXPECT_EQ(resumed.code, 0) << resumed.out;
}

TEST_F(Distributed, SigtermToOneRankStopsEveryRankWithACheckpoint) {
  const fs::path run = dir_ / "r", log = dir_ / "log.txt";
  const pid_t mpirun = spawn_two_ranks("train " + long_run(text_) + " --out " + run.string(), log);
  ASSERT_TRUE(wait_for([&] { return fs::exists(run / "checkpoint.h5"); }, 60)) << read_all(log);
  pid_t rank1 = -1;
  ASSERT_TRUE(wait_for([&] { return (rank1 = rank_pid(mpirun, 1)) > 0; }, 10)) << read_all(log);
  // Only rank 1 is told; rank 0 learns it through the reduced flag and writes.
  ASSERT_EQ(kill(rank1, SIGTERM), 0);
  const int code = wait_exit(mpirun, 30);
  ASSERT_NE(code, -1) << "the ranks did not stop within 30 s\n" << read_all(log);
  const std::string text = read_all(log);
  EXPECT_EQ(code, 128 + SIGTERM) << text;
  EXPECT_NE(text.find("stopped by SIGTERM at step"), std::string::npos) << text;
  EXPECT_EQ(text.find("MPI_ABORT"), std::string::npos) << text;
  // The checkpoint is of the step the ranks stopped at.
  const size_t at = text.find("stopped by SIGTERM at step ");
  ASSERT_NE(at, std::string::npos);
  const int64_t stopped = std::stoll(text.substr(at + std::strlen("stopped by SIGTERM at step ")));
  EXPECT_EQ(checkpoint(run).optimizer_step, stopped);
}

TEST_F(Distributed, DivergenceStopsEveryRankWithTheMessage) {
  const Result r = train(2, mqar_ + " --set optimizer.lr=1e30 --set optimizer.grad_clip=0 --out " + out("r"));
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("training diverged at step"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("MPI_ABORT"), std::string::npos) << r.out;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // Test discovery lists the tests whatever the build; running them needs mpirun.
  if (std::string(kMpiexec).empty() && !::testing::GTEST_FLAG(list_tests)) {
    std::printf("skipped: this build has no MPI (cmake -DSEQMIX_MPI=ON with libopenmpi-dev installed)\n");
    return 77;
  }
  return RUN_ALL_TESTS();
}
