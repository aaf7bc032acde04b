// seqmix sweep: a base config and a grid over any config keys (as Zoology's MQAR
// sweeps), one run directory per point of the grid, and results.csv.
//
//   base: ../mqar/attention.yaml        # relative to the sweep file
//   grid:
//     model.mixer.type: [attention, gla, mamba]
//     model.d_model: [64, 128]
//     optimizer.lr: [1.0e-3, 3.0e-3]
//   set: [training.steps=200]           # optional overrides applied to every run
//
// Each run is a child process `seqmix train BASE --set ... --out DIR/RUN` with its
// output in DIR/RUN/log.txt, so a crash or a bad point fails that run only. A run
// whose result.json exists is skipped; one with a checkpoint but no result is
// resumed. results.csv has a row per run in grid order.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace seqmix {

struct SweepArgs {
  std::string sweep_path;
  int64_t jobs = 1;
  std::string out_dir;  // default: runs/<sweep file stem>
};

struct SweepPoint {
  std::string name;  // directory name, e.g. "type=gla,d_model=64,lr=0.001"
  std::vector<std::pair<std::string, std::string>> values;  // (key, value) in grid order
};

struct SweepSpec {
  std::string base_config;              // absolute or relative to the cwd
  std::vector<std::string> keys;        // grid keys in file order
  std::vector<std::vector<std::string>> values;  // values per key
  std::vector<std::string> common_overrides;
};

// Throws ConfigError naming the sweep file and line for a malformed sweep.
SweepSpec load_sweep(const std::string& path);
// The cartesian product, the last key varying fastest.
std::vector<SweepPoint> expand_grid(const SweepSpec& spec);

int cmd_sweep(const SweepArgs& args, const std::string& seqmix_binary);

}  // namespace seqmix
