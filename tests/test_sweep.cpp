// seqmix sweep beyond the basics in test_cli.cpp: linked grid keys (settings that move
// together), the progress line and its ETA, results.csv while and after a sweep, and
// `seqmix plot` on the sweep it produced.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "tests/support/command_testing.h"
#include "train/config.h"
#include "train/sweep.h"
#include "train/sweep_progress.h"

namespace fs = std::filesystem;

namespace seqmix {
namespace {

struct Result {
  int code;
  std::string out;  // stdout and stderr
};

Result run(const std::string& cmd_line) {
  const seqmix::testing::CommandResult r = seqmix::testing::run_command(cmd_line + " 2>&1");
  return {r.code, r.out};
}

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("seqmix_sweep_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) out.push_back(l);
  return out;
}

std::vector<std::vector<std::string>> read_csv(const fs::path& p) {
  // The test's CSV has quoted run names with commas and no quotes inside them.
  std::vector<std::vector<std::string>> rows;
  std::ifstream in(p);
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> f;
    std::string cur;
    bool quoted = false;
    for (char c : line) {
      if (c == '"') quoted = !quoted;
      else if (c == ',' && !quoted) f.push_back(std::exchange(cur, ""));
      else cur += c;
    }
    f.push_back(cur);
    rows.push_back(f);
  }
  return rows;
}

const char* kConfig = R"(
model:
  vocab_size: 64
  d_model: 16
  n_layers: 2
  max_position_embeddings: 32
  mixer: {type: attention, num_heads: 2}
data: {kind: recall, task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 4, num_train_examples: 1024, num_test_examples: 64, seed: 3}
optimizer: {lr: 0.003, grad_clip: 0}
schedule: {type: constant}
training: {steps: 8, batch_size: 16, eval_interval: 4, seed: 1}
logging: {log_interval: 4, level: info}
)";

TEST(SweepEta, UnknownUntilARunFinishesThenSchedulesTheRestOnTheSlots) {
  auto ones = [](int n) { return std::vector<double>(static_cast<size_t>(n), 1.0); };
  EXPECT_LT(estimate_eta_seconds({}, {{3.0, 1.0}}, ones(4), 2), 0);
  EXPECT_EQ(estimate_eta_seconds({}, {}, {}, 2), 0);  // nothing left: done now
  // Mean 15 s. Slot 0 holds a run 5 s in (10 s to go), slot 1 is free; three runs left
  // go to slot 1 (15), slot 0 (25), slot 1 (30).
  EXPECT_DOUBLE_EQ(estimate_eta_seconds({{10.0, 1}, {20.0, 1}}, {{5.0, 1}}, ones(3), 2), 30.0);
  // One slot: everything in a row. A run past its expected time counts as ending now.
  EXPECT_DOUBLE_EQ(estimate_eta_seconds({{10.0, 1}}, {{12.0, 1}}, ones(2), 1), 20.0);
  EXPECT_DOUBLE_EQ(estimate_eta_seconds({{10.0, 1}}, {{4.0, 1}}, {}, 4), 6.0);
}

TEST(SweepEta, RunsCostInProportionToTheirWeight) {
  // A finished run of weight 1 took 10 s: a run of weight 16 (L and d_model 4x) is
  // expected to take 160 s, not 10 s.
  EXPECT_DOUBLE_EQ(estimate_eta_seconds({{10.0, 1}}, {}, {16.0}, 2), 160.0);
  // Two slots, runs of 4, 4 and 8 left after 2 s per unit: 8, 8, then 8 + 16.
  EXPECT_DOUBLE_EQ(estimate_eta_seconds({{2.0, 1}, {6.0, 3}}, {}, {4.0, 4.0, 8.0}, 2), 24.0);
  // A running run of weight 8, 5 s in, at 2 s a unit: 11 s to go.
  EXPECT_DOUBLE_EQ(estimate_eta_seconds({{2.0, 1}}, {{5.0, 8}}, {}, 2), 11.0);
}

TEST(SweepEta, WeightIsTheWorkTheConfigAsksFor) {
  Config a = parse_config(kConfig, "a.yaml");
  // steps x batch x seq_len x d_model x layers
  EXPECT_DOUBLE_EQ(run_cost_weight(a), 8.0 * 16 * 32 * 16 * 2);
  Config b = parse_config(kConfig, "b.yaml",
                          {"data.seq_len=64", "model.max_position_embeddings=64", "data.vocab_size=128",
                           "model.vocab_size=128", "model.d_model=32"});
  EXPECT_DOUBLE_EQ(run_cost_weight(b), 4 * run_cost_weight(a));
  // Epochs of a recall task: epochs x batches per epoch.
  Config c = parse_config(kConfig, "c.yaml", {"training.steps=0", "training.epochs=2"});
  EXPECT_DOUBLE_EQ(run_cost_weight(c), 2.0 * (1024 / 16) * 16 * 32 * 16 * 2);
}

TEST(SweepProgress, LineNamesEveryCountAndTheEta) {
  SweepCounts c;
  c.done = 3;
  c.running = 2;
  c.left = 14;
  c.failed = 1;
  EXPECT_EQ(format_sweep_progress(c, 725, 1510),
            "sweep: 3/20 done, 2 running, 14 left, 1 failed | elapsed 12m05s | ETA 25m10s");
  EXPECT_EQ(format_sweep_progress(c, 59.6, -1),
            "sweep: 3/20 done, 2 running, 14 left, 1 failed | elapsed 1m00s | ETA unknown until a run finishes");
  EXPECT_EQ(format_duration_short(7380), "2h03m");
}

TEST(SweepGrid, LinkedKeysMoveTogetherAndTheOthersMultiply) {
  const fs::path dir = temp_dir("linked");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << R"(
base: config.yaml
grid:
  model.mixer.type, model.max_position_embeddings: [[attention, 32], [gla, 0]]
  data.seq_len, data.num_kv_pairs: [[16, 2], [32, 4]]
  optimizer.lr: [0.001, 0.003]
)";
  const SweepSpec spec = load_sweep((dir / "sweep.yaml").string());
  EXPECT_EQ(spec.keys(), (std::vector<std::string>{"model.mixer.type", "model.max_position_embeddings",
                                                   "data.seq_len", "data.num_kv_pairs", "optimizer.lr"}));
  const std::vector<SweepPoint> points = expand_grid(spec);
  ASSERT_EQ(points.size(), 8u);  // 2 x 2 x 2, not 2^5
  EXPECT_EQ(points[0].name, "type=attention,max_position_embeddings=32,seq_len=16,num_kv_pairs=2,lr=0.001");
  EXPECT_EQ(points[7].name, "type=gla,max_position_embeddings=0,seq_len=32,num_kv_pairs=4,lr=0.003");
  // --set on the command line: after the file's set, for every run; a grid key is refused.
  EXPECT_EQ(load_sweep((dir / "sweep.yaml").string(), {"training.steps=3"}).common_overrides,
            std::vector<std::string>{"training.steps=3"});
  try {
    load_sweep((dir / "sweep.yaml").string(), {"optimizer.lr=0.1"});
    ADD_FAILURE() << "a --set of a grid key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), "--set optimizer.lr=0.1: optimizer.lr is a grid key of " +
                                         (dir / "sweep.yaml").string() + "; the grid sets it in every run");
  }
  EXPECT_THROW(load_sweep((dir / "sweep.yaml").string(), {"training.steps=-1"}), ConfigError);
  for (const SweepPoint& p : points) {
    const bool attention = p.values[0].second == "attention";
    EXPECT_EQ(p.values[1].second, attention ? "32" : "0") << p.name;
    EXPECT_EQ(p.values[3].second, p.values[2].second == "16" ? "2" : "4") << p.name;
  }
  fs::remove_all(dir);
}

TEST(SweepGrid, MalformedLinkedKeysAreRefusedWithFileAndLine) {
  const fs::path dir = temp_dir("badlinked");
  std::ofstream(dir / "config.yaml") << kConfig;
  auto refused = [&](const std::string& grid) -> std::string {
    std::ofstream(dir / "sweep.yaml") << "base: config.yaml\ngrid:\n" << grid;
    try {
      load_sweep((dir / "sweep.yaml").string());
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(accepted)";
  };
  const std::string file = (dir / "sweep.yaml").string();
  EXPECT_EQ(refused("  data.seq_len, data.num_kv_pairs: [[16, 2], [32]]\n"),
            file + ":3: grid.data.seq_len, data.num_kv_pairs names 2 keys, so each value must be a list of 2 "
                   "scalars, one per key");
  EXPECT_EQ(refused("  data.seq_len, data.num_kv_pairs: [16, 32]\n"),
            file + ":3: grid.data.seq_len, data.num_kv_pairs names 2 keys, so each value must be a list of 2 "
                   "scalars, one per key");
  EXPECT_EQ(refused("  data.seq_len, optimizer.lr: [[16, 0.1]]\n  optimizer.lr: [0.1]\n"),
            file + ": grid key 'optimizer.lr' appears more than once");
  // A linked point that is not a valid config names the run.
  const std::string bad = refused("  data.seq_len, data.num_kv_pairs: [[16, 2], [16, 9]]\n");
  EXPECT_NE(bad.find("run seq_len=16,num_kv_pairs=9 has an invalid config"), std::string::npos) << bad;
  fs::remove_all(dir);
}

// The whole loop as a user sees it: progress lines while it runs, results.csv with
// failed runs recorded, and `seqmix plot` drawing the runs that finished.
TEST(SweepCommand, ShowsProgressAndPlotsTheFinishedRuns) {
  const fs::path dir = temp_dir("progress");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << R"(
base: config.yaml
grid:
  model.mixer.type, model.max_position_embeddings: [[attention, 32], [linear_attention, 0]]
  model.d_model: [8, 16]
  optimizer.lr: [0.003, 1.0e+30]
)";
  const fs::path out = dir / "out";
  const Result r = run(std::string(SEQMIX_BINARY) + " sweep " + (dir / "sweep.yaml").string() + " --jobs 2 --out " +
                       out.string() + " --progress-interval 0");
  EXPECT_EQ(r.code, 1) << r.out;  // the lr=1e30 runs diverge
  const std::regex progress(R"(sweep: (\d+)/8 done, (\d+) running, (\d+) left, (\d+) failed \| elapsed \S+ \| ETA .*)");
  std::vector<std::array<int, 4>> seen;
  for (const std::string& l : lines_of(r.out)) {
    std::smatch m;
    if (std::regex_match(l, m, progress))
      seen.push_back({std::stoi(m[1]), std::stoi(m[2]), std::stoi(m[3]), std::stoi(m[4])});
  }
  // A line after every start and every finish (8 + 8, some starts share a line).
  ASSERT_GE(seen.size(), 12u) << r.out;
  for (const auto& s : seen) EXPECT_EQ(s[0] + s[1] + s[2] + s[3], 8) << r.out;
  EXPECT_EQ(seen.front()[1], 2) << r.out;  // two at a time
  EXPECT_EQ(seen.back(), (std::array<int, 4>{4, 0, 0, 4})) << r.out;
  EXPECT_NE(r.out.find("ETA unknown until a run finishes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| ETA 0s"), std::string::npos) << r.out;

  const auto rows = read_csv(out / "results.csv");
  ASSERT_EQ(rows.size(), 9u);
  const auto& h = rows[0];
  auto col = [&](const std::string& name) {
    return static_cast<size_t>(std::find(h.begin(), h.end(), name) - h.begin());
  };
  ASSERT_LT(col("state_bytes"), h.size());
  int done = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), h.size()) << i;
    if (rows[i][col("status")] != "done") continue;
    ++done;
    // float32 state: 4 bytes a number.
    EXPECT_EQ(std::stoll(rows[i][col("state_bytes")]), 4 * std::stoll(rows[i][col("state_size")]));
  }
  EXPECT_EQ(done, 4);

  // seqmix plot on it: the figures exist, and each has one series per (seq_len panel x
  // mixer) for what finished: one panel (seq_len is not swept), two mixers.
  const Result p = run(std::string(SEQMIX_BINARY) + " plot " + out.string());
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("4 of 8 runs failed, not plotted"), std::string::npos) << p.out;
  for (const std::string name : {"best_valid_accuracy_vs_d_model", "best_valid_accuracy_vs_state_bytes"}) {
    for (const std::string ext : {".png", ".svg"}) {
      const fs::path f = out / "plots" / (name + ext);
      ASSERT_TRUE(fs::exists(f)) << f << "\n" << p.out;
      EXPECT_GT(fs::file_size(f), 1000u) << f;
    }
    std::ifstream svg(out / "plots" / (name + ".svg"));
    const std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
    const std::regex series(R"(id="series:)");
    EXPECT_EQ(std::distance(std::sregex_iterator(text.begin(), text.end(), series), std::sregex_iterator()), 2)
        << name;
  }
  fs::remove_all(dir);
}

// Between starts and finishes a long run still shows progress every --progress-interval.
TEST(SweepCommand, PrintsProgressWhileARunIsGoing) {
  const fs::path dir = temp_dir("interval");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << "base: config.yaml\ngrid:\n  optimizer.lr: [0.003]\n";
  // 400 steps (--set on the command line) take well over the 0.05 s interval.
  const Result r = run(std::string(SEQMIX_BINARY) + " sweep " + (dir / "sweep.yaml").string() + " --out " +
                       (dir / "out").string() + " --progress-interval 0.05 --set training.steps=400");
  ASSERT_EQ(r.code, 0) << r.out;
  int running_lines = 0;
  for (const std::string& l : lines_of(r.out))
    if (l.rfind("sweep: 0/1 done, 1 running, 0 left, 0 failed", 0) == 0) ++running_lines;
  EXPECT_GE(running_lines, 2) << r.out;  // the start, then at least one while it ran
  std::ifstream log(dir / "out" / "lr=0.003" / "log.txt");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("done: 400 steps"), std::string::npos) << text;
  fs::remove_all(dir);
}

TEST(PlotCommand, BadInputGetsAClearErrorAndACode) {
  const fs::path dir = temp_dir("plotbad");
  Result r = run(std::string(SEQMIX_BINARY) + " plot " + dir.string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find(dir.string() + ": no metrics.jsonl"), std::string::npos) << r.out;
  r = run(std::string(SEQMIX_BINARY) + " plot " + (dir / "absent").string());
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("absent: no such file or directory"), std::string::npos) << r.out;
  // No python3: the interpreter is named.
  r = run("SEQMIX_PYTHON=/nonexistent/python3 " + std::string(SEQMIX_BINARY) + " plot " + dir.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("SEQMIX_PYTHON=/nonexistent/python3 is not an executable file"), std::string::npos) << r.out;
  // A python3 without matplotlib: a stub package on PYTHONPATH (after seqmix_plot's
  // directory, before the installed matplotlib) fails to import as a missing one does.
  fs::create_directories(dir / "stub" / "matplotlib");
  std::ofstream(dir / "stub" / "matplotlib" / "__init__.py") << "raise ImportError('No module named matplotlib')\n";
  std::ofstream(dir / "metrics.jsonl") << R"({"step": 1, "elapsed_s": 0.1, "train_loss": 2.0, "train_accuracy": 0.1})"
                                       << "\n";
  r = run("PYTHONPATH=" + (dir / "stub").string() + " " + std::string(SEQMIX_BINARY) + " plot " + dir.string());
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("matplotlib is not available"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("apt-get install python3-matplotlib"), std::string::npos) << r.out;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace seqmix
