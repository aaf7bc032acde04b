// seqmix sweep beyond the basics in test_cli.cpp: linked grid keys (settings that move
// together), the progress line and its ETA, results.csv while and after a sweep,
// `seqmix plot` on the sweep it produced, sweeps split into shards (--shard, Slurm job
// arrays) and merged (--collect), and points whose earlier attempt failed.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <thread>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <regex>
#include <sstream>

#include "tests/support/command_testing.h"
#include "train/config.h"
#include "train/run_lock.h"
#include "train/sweep.h"
#include "train/sweep_progress.h"
#include "train/sweep_shard.h"

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

TEST(SweepThreads, ChildrenShareTheCoresUnlessTheUserSetAThreadCount) {
  EXPECT_EQ(child_thread_count(nullptr, 8, 2), "4");
  EXPECT_EQ(child_thread_count(nullptr, 2, 4), "1");  // more jobs than cores: one each
  EXPECT_EQ(child_thread_count("3", 8, 2), "3");
  // A blank OMP_NUM_THREADS is unset, not passed on: libgomp would reject it and give
  // every child all the cores (two jobs on two cores ran four threads).
  EXPECT_EQ(child_thread_count("", 2, 2), "1");
  EXPECT_EQ(child_thread_count("  ", 8, 4), "2");
}

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

// An option of one mixer (H3's head_dim) rides on the mixer axis: null leaves it unset in
// the other rows, whose configs would refuse it; their run names stay as without the key.
TEST(SweepGrid, NullLeavesAKeyUnsetInItsRow) {
  const fs::path dir = temp_dir("unset");
  std::ofstream(dir / "config.yaml") << R"(
model:
  vocab_size: 64
  d_model: 16
  max_position_embeddings: 32
  mixer: {type: attention}
data: {kind: recall, task: mqar, vocab_size: 64, seq_len: 32, num_kv_pairs: 4, num_train_examples: 1024, num_test_examples: 64, seed: 3}
training: {steps: 8, batch_size: 16, eval_interval: 4, seed: 1}
)";
  auto write_sweep = [&](const std::string& rows) {
    std::ofstream(dir / "sweep.yaml") << "base: config.yaml\ngrid:\n"
                                      << "  model.mixer.type, model.max_position_embeddings, model.mixer.head_dim: " << rows
                                      << "\n  optimizer.lr: [0.001, 0.003]\n";
  };
  write_sweep("[[attention, 32, ~], [h3, 0, 2], [gla, 0, null]]");
  const SweepSpec spec = load_sweep((dir / "sweep.yaml").string());
  const std::vector<SweepPoint> points = expand_grid(spec);
  ASSERT_EQ(points.size(), 6u);
  EXPECT_EQ(points[0].name, "type=attention,max_position_embeddings=32,lr=0.001");
  EXPECT_EQ(points[3].name, "type=h3,max_position_embeddings=0,head_dim=2,lr=0.003");
  EXPECT_EQ(points[4].name, "type=gla,max_position_embeddings=0,lr=0.001");
  EXPECT_EQ(point_overrides(spec, points[0]),
            (std::vector<std::string>{"model.mixer.type=attention", "model.max_position_embeddings=32",
                                      "optimizer.lr=0.001"}));
  EXPECT_EQ(load_config(spec.base_config, point_overrides(spec, points[3])).model.mixer.h3.head_dim, 2);
  EXPECT_EQ(load_config(spec.base_config, point_overrides(spec, points[4])).model.mixer.type, "gla");
  // The key in every row: attention has no head_dim, and the sweep says which run is wrong.
  write_sweep("[[attention, 32, 2], [h3, 0, 2]]");
  try {
    load_sweep((dir / "sweep.yaml").string());
    ADD_FAILURE() << "head_dim for attention was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("run type=attention,max_position_embeddings=32,head_dim=2,lr=0.001 has an "
                                         "invalid config"),
              std::string::npos)
        << e.what();
  }
  // An empty string is not null: it is refused rather than read as "unset".
  write_sweep("[[attention, 32, ''], [h3, 0, 2]]");
  try {
    load_sweep((dir / "sweep.yaml").string());
    ADD_FAILURE() << "an empty grid value was accepted";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "sweep.yaml").string() +
                                         ":3: grid.model.mixer.type, model.max_position_embeddings, "
                                         "model.mixer.head_dim has an empty value; write null (or ~) to leave the "
                                         "key unset in a row");
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

std::string file_text(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The names of the runs a sweep's output says it started, in order.
std::vector<std::string> started(const std::string& out) {
  std::vector<std::string> names;
  const std::regex line(R"(\[\d+/\d+\] started (.*))");
  for (const std::string& l : lines_of(out)) {
    std::smatch m;
    if (std::regex_match(l, m, line)) names.push_back(m[1]);
  }
  return names;
}

std::string shard_error(const std::string& text) {
  try {
    parse_shard(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(SweepShard, IOverNFromZeroAndBadValuesAreRefused) {
  const SweepShard s = parse_shard("2/3");
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 3);
  EXPECT_EQ(s.results_file(), "results.shard-2-of-3.csv");
  EXPECT_FALSE(parse_shard("0/1").sharded());  // the whole grid, written to results.csv
  EXPECT_EQ(shard_error("3/3"), "--shard '3/3': shards are numbered from 0, so I must be below N = 3 (the last shard "
                                "is 2/3)");
  EXPECT_NE(shard_error("0/0").find("the number of shards N must be at least 1"), std::string::npos);
  for (const std::string bad : {"-1/3", "1/3x", "a/3", "1/", "/3", "1.0/3", " 1/3", "99999999999999999999/3"})
    EXPECT_NE(shard_error(bad).find("I and N must be whole numbers"), std::string::npos) << bad;
  EXPECT_NE(shard_error("2").find("no '/'; expected I/N"), std::string::npos);
}

TEST(SweepShard, EveryGridPointBelongsToExactlyOneShard) {
  for (int64_t n = 1; n <= 7; ++n)
    for (int64_t i = 0; i < 20; ++i) {
      int owners = 0;
      for (int64_t s = 0; s < n; ++s) owners += SweepShard{s, n, ""}.owns(i);
      EXPECT_EQ(owners, 1) << "point " << i << " of " << n << " shards";
    }
}

TEST(SweepShard, SlurmArrayTaskIsItsPositionInTheArray) {
  auto shard = [](std::map<std::string, std::string> env) {
    return shard_from_slurm([env](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    });
  };
  auto refused = [&](std::map<std::string, std::string> env) -> std::string {
    try {
      shard(env);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "(accepted)";
  };
  EXPECT_FALSE(shard({}).has_value());  // not a job array: the whole grid
  // --array=0-3: task 2 is shard 2/4.
  auto s = shard({{"SLURM_ARRAY_TASK_ID", "2"}, {"SLURM_ARRAY_TASK_COUNT", "4"}, {"SLURM_ARRAY_TASK_MIN", "0"}});
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->index, 2);
  EXPECT_EQ(s->count, 4);
  // --array=1-3: ids start at 1, shards at 0.
  s = shard({{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_ARRAY_TASK_MIN", "1"},
             {"SLURM_ARRAY_TASK_MAX", "3"}});
  EXPECT_EQ(s->index, 0);
  EXPECT_EQ(s->count, 3);
  EXPECT_EQ(s->source, "SLURM_ARRAY_TASK_ID=1, SLURM_ARRAY_TASK_COUNT=3, SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_MAX=3");
  // --array=10-18:4 is tasks 10, 14, 18: task 18 is shard 2/3.
  s = shard({{"SLURM_ARRAY_TASK_ID", "18"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_ARRAY_TASK_MIN", "10"},
             {"SLURM_ARRAY_TASK_MAX", "18"}, {"SLURM_ARRAY_TASK_STEP", "4"}});
  EXPECT_EQ(s->index, 2);
  EXPECT_EQ(s->count, 3);
  // --array=1,2,5: no position to take.
  EXPECT_NE(refused({{"SLURM_ARRAY_TASK_ID", "2"}, {"SLURM_ARRAY_TASK_COUNT", "3"}, {"SLURM_ARRAY_TASK_MIN", "1"},
                     {"SLURM_ARRAY_TASK_MAX", "5"}})
                .find("not evenly spaced"),
            std::string::npos);
  EXPECT_NE(refused({{"SLURM_ARRAY_TASK_ID", "2"}}).find("SLURM_ARRAY_TASK_COUNT is not"), std::string::npos);
  // sbatch --array=3 to run shard 3 again would otherwise run the whole grid.
  EXPECT_NE(refused({{"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_COUNT", "1"}, {"SLURM_ARRAY_TASK_MIN", "3"},
                     {"SLURM_ARRAY_TASK_MAX", "3"}})
                .find("this job array has one task (SLURM_ARRAY_TASK_ID=3, SLURM_ARRAY_TASK_COUNT=1, "
                      "SLURM_ARRAY_TASK_MIN=3, SLURM_ARRAY_TASK_MAX=3), which would run the whole grid"),
            std::string::npos);
  EXPECT_NE(refused({{"SLURM_ARRAY_TASK_ID", "x"}, {"SLURM_ARRAY_TASK_COUNT", "3"}}).find("SLURM_ARRAY_TASK_ID='x' is "
                                                                                          "not a whole number"),
            std::string::npos);
  EXPECT_NE(refused({{"SLURM_ARRAY_TASK_ID", "3"}, {"SLURM_ARRAY_TASK_COUNT", "3"}}).find("task 3 is not one of the "
                                                                                          "array's 3 tasks"),
            std::string::npos);
}

TEST(SweepShard, MpiLauncherRankIsTheShard) {
  auto shard = [](std::map<std::string, std::string> env) {
    return shard_from_mpi_launcher([env](const char* name) -> const char* {
      auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    });
  };
  EXPECT_FALSE(shard({}).has_value());
  auto s = shard({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"}});  // Open MPI
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->index, 1);
  EXPECT_EQ(s->count, 4);
  s = shard({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}});  // MPICH
  EXPECT_EQ(s->index, 2);
  EXPECT_EQ(s->count, 3);
  EXPECT_THROW(shard({{"PMI_RANK", "3"}, {"PMI_SIZE", "3"}}), std::invalid_argument);
}

// `mpirun -np 2 seqmix sweep FILE`: each rank runs its shard, and --collect merges them.
// Rank 1's only run fails at once while rank 0's two take seconds: the ranks share no
// work, so one rank's failed run must not end the others. mpirun ends the job when a
// rank exits non-zero, so a shard under a launcher exits 0 and --collect reports.
TEST(SweepCommand, MpirunRanksRunOneShardEach) {
  if (std::system("command -v mpirun > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun (openmpi-bin)";
  const fs::path dir = temp_dir("mpirun");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << "base: config.yaml\ngrid:\n  optimizer.lr: [0.003, 1.0e+30, 0.01]\n"
                                       "set: [training.steps=3000, training.eval_interval=3000, "
                                       "logging.log_interval=1000]\n";
  const std::string sweep = std::string(SEQMIX_BINARY) + " sweep " + (dir / "sweep.yaml").string() + " --out " +
                            (dir / "out").string() + " --progress-interval 0";
  // CI runs as root; two ranks on whatever cores there are.
  const Result r = run("mpirun --allow-run-as-root --oversubscribe -np 2 " + sweep);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("exit code 0 under an MPI launcher, so that the other ranks' shards go on"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("sweep: shard 0/2 (OMPI_COMM_WORLD_RANK=0, OMPI_COMM_WORLD_SIZE=2): 2 of the grid's 3 runs"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("sweep: shard 1/2 (OMPI_COMM_WORLD_RANK=1, OMPI_COMM_WORLD_SIZE=2): 1 of the grid's 3 runs"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("results.shard-0-of-2.csv (2 done, 0 failed)"), std::string::npos) << r.out;
  const Result c = run(sweep + " --collect");
  EXPECT_EQ(c.code, 1) << c.out;
  EXPECT_NE(c.out.find("failed: lr=1.0e_30 (results.shard-1-of-2.csv"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("(2 done, 1 failed, 0 missing)"), std::string::npos) << c.out;
  for (const std::string name : {"lr=0.003", "lr=0.01"})
    EXPECT_NE(file_text(dir / "out" / name / "log.txt").find("done: 3000 steps"), std::string::npos) << name;
  fs::remove_all(dir);
}

// A grid of 5 points run once whole and once as 3 shards (two chosen with --shard, one
// by a Slurm job array's variables), then merged. The runs take most of a minute on a
// busy machine, so one test makes them and then checks each property in turn (ctest
// runs every test in a process of its own: a fixture would repeat them per test).
struct ShardedSweep {
  static void run_all() {
    dir_ = temp_dir("sharded");
    std::ofstream(dir_ / "config.yaml") << kConfig;
    // 5 points, d_model on the x axis of `seqmix plot`; shard 0 owns points 0 and 3,
    // shard 1 points 1 and 4, shard 2 point 2.
    std::ofstream(dir_ / "sweep.yaml") << R"(
base: config.yaml
grid:
  model.d_model, optimizer.lr: [[8, 0.003], [8, 0.01], [16, 0.003], [16, 0.01], [32, 0.003]]
set: [training.steps=6, training.eval_interval=3]
)";
    names_ = {"d_model=8,lr=0.003", "d_model=8,lr=0.01", "d_model=16,lr=0.003", "d_model=16,lr=0.01",
              "d_model=32,lr=0.003"};
    const std::string sweep = std::string(SEQMIX_BINARY) + " sweep " + (dir_ / "sweep.yaml").string();
    whole_ = run(sweep + " --out " + (dir_ / "whole").string() + " --progress-interval 0");
    const std::string out = " --out " + (dir_ / "sharded").string() + " --progress-interval 0";
    shard_[0] = run(sweep + " --shard 0/3" + out);
    // Slurm numbers this array's tasks 1, 2, 3 (--array=1-3): task 2 is shard 1.
    shard_[1] = run("SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_MAX=3 SLURM_ARRAY_TASK_COUNT=3 " +
                    sweep + out);
    partial_ = run(sweep + " --collect --out " + (dir_ / "sharded").string());
    partial_csv_ = read_csv(dir_ / "sharded" / "results.csv");
    // --shard wins over the job array's variables.
    shard_[2] = run("SLURM_ARRAY_TASK_ID=0 SLURM_ARRAY_TASK_COUNT=3 " + sweep + " --shard 2/3" + out);
    collect_ = run(sweep + " --collect --out " + (dir_ / "sharded").string());
  }
  static void remove() { fs::remove_all(dir_); }
  static void ShardsRunEveryPointExactlyOnce();
  static void SlurmArrayVariablesChooseTheShardAndProgressCountsItsPoints();
  static void RunningAShardAgainSkipsWhatItFinished();
  static void CollectNamesTheMissingPointsAndTheirShard();
  static void CollectMergesToTheRowsOfAWholeSweepAndPlotReadsThem();

  static inline fs::path dir_;
  static inline std::vector<std::string> names_;
  static inline Result whole_, shard_[3], partial_, collect_;
  static inline std::vector<std::vector<std::string>> partial_csv_;
};

void ShardedSweep::ShardsRunEveryPointExactlyOnce() {
  ASSERT_EQ(whole_.code, 0) << whole_.out;
  std::multiset<std::string> ran;
  for (int s = 0; s < 3; ++s) {
    ASSERT_EQ(shard_[s].code, 0) << shard_[s].out;
    const std::vector<std::string> mine = started(shard_[s].out);
    ran.insert(mine.begin(), mine.end());
    // Each shard's rows file holds its own points, in grid order, and nothing else.
    const auto rows = read_csv(dir_ / "sharded" / SweepShard{s, 3, ""}.results_file());
    std::vector<std::string> expected, got;
    for (size_t i = 0; i < names_.size(); ++i)
      if (static_cast<int>(i) % 3 == s) expected.push_back(names_[i]);
    EXPECT_EQ(mine, expected) << shard_[s].out;
    for (size_t r = 1; r < rows.size(); ++r) got.push_back(rows[r][0]);
    EXPECT_EQ(got, expected);
  }
  EXPECT_EQ(ran, std::multiset<std::string>(names_.begin(), names_.end()));
  for (const std::string& n : names_) EXPECT_TRUE(fs::exists(dir_ / "sharded" / n / "result.json")) << n;
  // Shards never write the shared results.csv; only --collect does.
  EXPECT_EQ(shard_[0].out.find("results.csv"), std::string::npos) << shard_[0].out;
  EXPECT_NE(shard_[0].out.find("sweep: shard 0/3 (--shard 0/3): 2 of the grid's 5 runs"), std::string::npos)
      << shard_[0].out;
}

void ShardedSweep::SlurmArrayVariablesChooseTheShardAndProgressCountsItsPoints() {
  EXPECT_NE(shard_[1].out.find("sweep: shard 1/3 (SLURM_ARRAY_TASK_ID=2, SLURM_ARRAY_TASK_COUNT=3, "
                               "SLURM_ARRAY_TASK_MIN=1, SLURM_ARRAY_TASK_MAX=3): 2 of the grid's 5 runs"),
            std::string::npos)
      << shard_[1].out;
  EXPECT_EQ(started(shard_[1].out), (std::vector<std::string>{names_[1], names_[4]})) << shard_[1].out;
  EXPECT_NE(shard_[1].out.find("sweep: 2/2 done, 0 running, 0 left, 0 failed"), std::string::npos) << shard_[1].out;
  EXPECT_NE(shard_[2].out.find("sweep: shard 2/3 (--shard 2/3): 1 of the grid's 5 runs"), std::string::npos)
      << shard_[2].out;
}

void ShardedSweep::RunningAShardAgainSkipsWhatItFinished() {
  const fs::path result = dir_ / "sharded" / names_[4] / "result.json";
  const auto stamp = fs::last_write_time(result);
  const Result again = run(std::string(SEQMIX_BINARY) + " sweep " + (dir_ / "sweep.yaml").string() + " --shard 1/3 --out " +
                           (dir_ / "sharded").string() + " --progress-interval 0");
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_TRUE(started(again.out).empty()) << again.out;
  EXPECT_NE(again.out.find("[2/2] " + names_[4] + ": finished before, skipped"), std::string::npos) << again.out;
  EXPECT_EQ(fs::last_write_time(result), stamp);
}

void ShardedSweep::CollectNamesTheMissingPointsAndTheirShard() {
  // Before shard 2 ran: exit 2, its one point listed, the others merged.
  EXPECT_EQ(partial_.code, 2) << partial_.out;
  EXPECT_NE(partial_.out.find("missing: " + names_[2] + " (shard 2/3 has not written results.shard-2-of-3.csv)"),
            std::string::npos)
      << partial_.out;
  EXPECT_EQ(lines_of(partial_.out).size(), 3u) << partial_.out;  // the sources, one missing point, the summary
  EXPECT_NE(partial_.out.find("(4 done, 0 failed, 1 missing)"), std::string::npos) << partial_.out;
  ASSERT_EQ(partial_csv_.size(), 6u);
  const size_t status = 3;  // run, model.d_model, optimizer.lr, status
  ASSERT_EQ(partial_csv_[0][status], "status");
  for (size_t i = 0; i < names_.size(); ++i) {
    EXPECT_EQ(partial_csv_[i + 1][0], names_[i]);
    EXPECT_EQ(partial_csv_[i + 1][status], i == 2 ? "missing" : "done") << names_[i];
  }
}

void ShardedSweep::CollectMergesToTheRowsOfAWholeSweepAndPlotReadsThem() {
  ASSERT_EQ(collect_.code, 0) << collect_.out;
  EXPECT_NE(collect_.out.find("(5 done, 0 failed, 0 missing)"), std::string::npos) << collect_.out;
  const auto merged = read_csv(dir_ / "sharded" / "results.csv");
  const auto whole = read_csv(dir_ / "whole" / "results.csv");
  ASSERT_EQ(merged.size(), 6u);
  ASSERT_EQ(merged.size(), whole.size());
  ASSERT_EQ(merged[0], whole[0]);
  const size_t wall = static_cast<size_t>(std::find(whole[0].begin(), whole[0].end(), "wall_s") - whole[0].begin());
  ASSERT_LT(wall, whole[0].size());
  for (size_t r = 1; r < whole.size(); ++r) {
    ASSERT_EQ(merged[r].size(), whole[r].size()) << r;
    EXPECT_EQ(merged[r][0], names_[r - 1]);
    // The same runs with the same threads: the same numbers, bit for bit; only the time differs.
    for (size_t c = 0; c < whole[r].size(); ++c) {
      if (c != wall) {
        EXPECT_EQ(merged[r][c], whole[r][c]) << whole[0][c] << " of " << whole[r][0];
      }
    }
  }
  const Result p = run(std::string(SEQMIX_BINARY) + " plot " + (dir_ / "sharded").string() + " --format svg");
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_TRUE(fs::exists(dir_ / "sharded" / "plots" / "best_valid_accuracy_vs_d_model.svg")) << p.out;
}

TEST(SweepCommand, ShardsCoverTheGridOnceAndCollectMergesThemAsAWholeSweep) {
  ShardedSweep::run_all();
  {
    SCOPED_TRACE("ShardsRunEveryPointExactlyOnce");
    ShardedSweep::ShardsRunEveryPointExactlyOnce();
  }
  {
    SCOPED_TRACE("SlurmArrayVariablesChooseTheShardAndProgressCountsItsPoints");
    ShardedSweep::SlurmArrayVariablesChooseTheShardAndProgressCountsItsPoints();
  }
  {
    SCOPED_TRACE("RunningAShardAgainSkipsWhatItFinished");
    ShardedSweep::RunningAShardAgainSkipsWhatItFinished();
  }
  {
    SCOPED_TRACE("CollectNamesTheMissingPointsAndTheirShard");
    ShardedSweep::CollectNamesTheMissingPointsAndTheirShard();
  }
  {
    SCOPED_TRACE("CollectMergesToTheRowsOfAWholeSweepAndPlotReadsThem");
    ShardedSweep::CollectMergesToTheRowsOfAWholeSweepAndPlotReadsThem();
  }
  ShardedSweep::remove();
}

TEST(SweepCommand, BadShardValuesAndMisuseAreRefusedBeforeAnythingRuns) {
  const fs::path dir = temp_dir("badshard");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << "base: config.yaml\ngrid:\n  optimizer.lr: [0.001, 0.003]\n";
  const std::string sweep = std::string(SEQMIX_BINARY) + " sweep " + (dir / "sweep.yaml").string() + " --out " +
                            (dir / "out").string();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {sweep + " --shard 3/3", "seqmix sweep: --shard '3/3': shards are numbered from 0, so I must be below N = 3"},
      {sweep + " --shard 0/0", "the number of shards N must be at least 1"},
      {sweep + " --shard=-1/3", "--shard '-1/3': I and N must be whole numbers"},
      {sweep + " --shard 1", "--shard '1': no '/'"},
      {"SLURM_ARRAY_TASK_ID=4 " + sweep, "SLURM_ARRAY_TASK_COUNT is not"},
      {"SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_COUNT=4 " + sweep, "task 4 is not one of the array's 4 tasks"},
      {sweep + " --collect --shard 0/2", "--shard excludes --collect"},
      {sweep + " --collect", "out: no such directory (the shards write results.shard-I-of-N.csv"},
  };
  for (const auto& [cmd, message] : cases) {
    const Result r = run(cmd);
    EXPECT_NE(r.code, 0) << cmd << "\n" << r.out;
    EXPECT_NE(r.out.find(message), std::string::npos) << cmd << "\n" << r.out;
  }
  fs::create_directories(dir / "out");
  const Result empty = run(sweep + " --collect");
  EXPECT_EQ(empty.code, 1) << empty.out;
  EXPECT_NE(empty.out.find("out: no shard rows to collect"), std::string::npos) << empty.out;
  // A shard file of another sweep (other grid keys), then one cut short: named with its line.
  const fs::path shard_file = dir / "out" / "results.shard-0-of-2.csv";
  std::ofstream(shard_file) << "run,model.d_model,status,best_valid_accuracy\n";
  Result r = run(sweep + " --collect");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(shard_file.string() + ":1: its columns are not those of"), std::string::npos) << r.out;
  const SweepSpec spec = load_sweep((dir / "sweep.yaml").string());
  std::ofstream(shard_file) << results_csv_header(spec) << "\nlr=0.001,0.001,done,0.5\n";
  r = run(sweep + " --collect");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(shard_file.string() + ":2: 4 fields, the header has 13 (a file cut short?)"), std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(dir / "out" / "results.csv"));  // nothing half-merged
  // Nothing ran: no run directory was made.
  for (const std::string name : {"lr=0.001", "lr=0.003"}) EXPECT_FALSE(fs::exists(dir / "out" / name)) << name;
  fs::remove_all(dir);
}

// A point that failed after writing metrics.jsonl (here it diverges at step 2, after its
// step-1 line) is started afresh when the sweep runs again, its earlier attempt moved to
// RUN.failed; `seqmix train` alone refuses to append to an earlier run's metrics. A point
// another process trains in is left alone; a finished one is skipped.
TEST(SweepCommand, StartsAFailedPointAfreshAndLeavesARunningOneAlone) {
  const fs::path dir = temp_dir("failedpoint");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << R"(
base: config.yaml
grid:
  optimizer.lr: [0.003, 1.0e+30, 0.002]
set: [logging.log_interval=1, training.steps=4, training.eval_interval=2]
)";
  const fs::path out = dir / "out";
  const std::string sweep = std::string(SEQMIX_BINARY) + " sweep " + (dir / "sweep.yaml").string() + " --out " +
                            out.string() + " --progress-interval 0";
  const fs::path busy = out / "lr=0.002", failed = out / "lr=1.0e_30";
  Result first, second;
  {
    // Another process is training lr=0.002 (it holds the directory's lock) and has written metrics.
    RunLock lock(busy.string());
    std::ofstream(busy / "metrics.jsonl") << R"({"step": 1, "train_loss": 4.2})" << "\n";
    first = run(sweep);
    EXPECT_EQ(first.code, 1) << first.out;
    ASSERT_TRUE(fs::exists(failed / "metrics.jsonl")) << first.out;  // the failure this test is about
    ASSERT_FALSE(fs::exists(failed / "checkpoint.h5")) << first.out;
    second = run(sweep);
    EXPECT_EQ(second.code, 1) << second.out;
    for (const Result* r : {&first, &second}) {
      EXPECT_NE(r->out.find("lr=0.002: running in another process (its directory is locked); left to it"),
                std::string::npos)
          << r->out;
      const std::vector<std::string> names = started(r->out);
      EXPECT_EQ(std::count(names.begin(), names.end(), "lr=0.002"), 0) << r->out;
    }
    EXPECT_EQ(file_text(busy / "metrics.jsonl"), "{\"step\": 1, \"train_loss\": 4.2}\n");
  }
  EXPECT_NE(second.out.find("lr=0.003: finished before, skipped"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("lr=1.0e_30: an earlier attempt stopped without a checkpoint or a result; moved it to "
                            "lr=1.0e_30.failed and starting afresh"),
            std::string::npos)
      << second.out;
  // The new attempt trained (and diverged again, as it must at lr 1e30) instead of being refused.
  const std::string log = file_text(failed / "log.txt");
  EXPECT_NE(log.find("training diverged at step 2"), std::string::npos) << log;
  EXPECT_EQ(log.find("holds an earlier run's metrics.jsonl"), std::string::npos) << log;
  EXPECT_NE(file_text(out / "lr=1.0e_30.failed" / "log.txt").find("training diverged at step 2"), std::string::npos);
  // The lock released, the point that was busy gets its turn: its stray metrics moved aside too.
  const Result third = run(sweep);
  EXPECT_EQ(third.code, 1) << third.out;  // lr=1e30 fails every time
  EXPECT_TRUE(fs::exists(busy / "result.json")) << third.out;
  EXPECT_TRUE(fs::exists(out / "lr=0.002.failed" / "metrics.jsonl")) << third.out;
  fs::remove_all(dir);
}

// SIGTERM (or Ctrl-C) on a sweep stops its trainings with a checkpoint instead of
// leaving them running as orphans, and running the sweep again resumes them.
TEST(SweepCommand, SigtermStopsTheRunningTrainingsWithACheckpointAndListsThemPending) {
  const fs::path dir = temp_dir("sigterm");
  std::ofstream(dir / "config.yaml") << kConfig;
  std::ofstream(dir / "sweep.yaml") << R"(
base: config.yaml
grid:
  optimizer.lr: [0.003, 0.002]
set: [training.steps=100000, training.checkpoint_interval=0, logging.log_interval=1]
)";
  const fs::path out = dir / "out";
  const std::string log = (dir / "sweep.log").string();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setpgid(0, 0);  // a group of its own, so that the end of the test can clean up whatever is left
    execl(SEQMIX_BINARY, SEQMIX_BINARY, "sweep", (dir / "sweep.yaml").c_str(), "--out", out.c_str(), "--jobs", "2",
          "--progress-interval", "0", static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait (generously: the machine may be loaded) until both trainings have logged a step.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  auto training = [&](const char* run) { return fs::exists(out / run / "metrics.jsonl"); };
  while (!(training("lr=0.003") && training("lr=0.002")) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(training("lr=0.003") && training("lr=0.002"));
  ::kill(pid, SIGTERM);
  int wstatus = 0;
  const auto stop_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  pid_t done = 0;
  while ((done = ::waitpid(pid, &wstatus, WNOHANG)) == 0 && std::chrono::steady_clock::now() < stop_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  if (done == 0) {
    ::kill(-pid, SIGKILL);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &wstatus, 0);
    FAIL() << "the sweep did not stop within 120 s of SIGTERM";
  }
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 128 + SIGTERM);
  for (const char* run : {"lr=0.003", "lr=0.002"}) {
    // Stopped by the signal, with a checkpoint, and no process still holds its lock.
    EXPECT_TRUE(fs::exists(out / run / "checkpoint.h5")) << run;
    EXPECT_FALSE(fs::exists(out / run / "result.json")) << run;
    EXPECT_NE(file_text(out / run / "log.txt").find("stopped by SIGTERM"), std::string::npos) << run;
    EXPECT_NO_THROW(RunLock((out / run).string())) << run << " is still locked by a training";
  }
  // results.csv lists both as pending (a sweep run again resumes them from their checkpoints).
  const auto rows = read_csv(out / "results.csv");
  ASSERT_EQ(rows.size(), 3u);
  const auto status = std::find(rows[0].begin(), rows[0].end(), "status") - rows[0].begin();
  for (size_t r = 1; r < rows.size(); ++r) EXPECT_EQ(rows[r].at(static_cast<size_t>(status)), "pending") << rows[r][0];
  ::kill(-pid, SIGKILL);  // nothing is left when the sweep works; trainings orphaned by a broken one
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
