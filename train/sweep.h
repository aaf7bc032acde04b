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
// `seqmix sweep FILE --set key=value` adds overrides for every run after the file's set
// (a quick look at a long sweep: --set training.steps=100 --out runs/quick).
//
// A grid entry may name several keys, separated by commas, that move together: each
// value is then a list with one value per key, and the entry is one axis of the grid
// (a zip, not a product). It expresses settings that depend on each other:
//
//     data.seq_len, data.num_kv_pairs: [[64, 4], [128, 8], [256, 16]]
//     model.mixer.type, model.max_position_embeddings: [[attention, 256], [gla, 0]]
//
// A value of null (~) leaves its key unset in that row: the base config's value (or the
// default) applies, the key is not part of the run's directory name, and its results.csv
// field is empty. It sets an option of one mixer only, which the other mixers would refuse:
//
//     model.mixer.type, model.mixer.head_dim: [[attention, ~], [h3, 2]]
//
// Each run is a child process `seqmix train BASE --set ... --out DIR/RUN` with its
// output in DIR/RUN/log.txt, so a crash or a bad point fails that run only. A run
// whose result.json exists is skipped; one with a checkpoint but no result is
// resumed. results.csv has a row per run in grid order and a column per grid key.
// While the sweep runs it prints a progress line (runs done / running / left / failed
// and an ETA, see train/sweep_progress.h) after every start and finish, and every
// --progress-interval seconds in between.
//
// Before a point starts: a run directory whose lock another `seqmix train` holds is
// running elsewhere and is left alone; one that an earlier attempt left with
// metrics.jsonl but neither a checkpoint nor a result (the run failed, or was killed
// before its first checkpoint) is renamed RUN.failed (replacing an older one) and the
// point starts afresh. A finished point (result.json) is never touched.
//
// Over many machines, `--shard I/N` (or a Slurm job array's task, or an MPI launcher's
// rank) runs one part of the grid and writes its rows to results.shard-I-of-N.csv
// (train/sweep_shard.h); `--collect` merges them into results.csv
// (train/sweep_collect.h). docs/cluster.md shows both.
//
// Exit code: 0 when every point of the sweep (of the shard) has finished, 1 otherwise
// (a run failed, or a point is running in another process); under an MPI launcher
// always 0, since mpirun ends every rank when one exits non-zero.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace seqmix {

struct SweepArgs {
  std::string sweep_path;
  int64_t jobs = 1;
  std::string out_dir;  // default: runs/<sweep file stem>
  std::vector<std::string> overrides;  // --set, applied to every run after the file's set
  double progress_interval_s = 60;  // seconds between progress lines while nothing happens; 0: only on events
  std::string shard;                // --shard I/N; empty: from a Slurm job array's variables, or the whole grid
  bool collect = false;             // --collect: merge the shards' rows, run nothing
};

// The value of a grid key left unset in a row (null in the sweep file).
inline const std::string kGridUnset;

struct SweepPoint {
  std::string name;  // directory name, e.g. "type=gla,d_model=64,lr=0.001"
  std::vector<std::pair<std::string, std::string>> values;  // (key, value or kGridUnset) in grid order
};

// One axis of the grid: one key, or several keys whose values move together.
struct SweepAxis {
  std::vector<std::string> keys;
  std::vector<std::vector<std::string>> values;  // values[i][k] is keys[k]'s value at step i
};

struct SweepSpec {
  std::string base_config;        // absolute or relative to the cwd
  std::vector<SweepAxis> axes;    // in file order
  std::vector<std::string> common_overrides;
  // Every grid key, axis by axis (the columns of results.csv).
  std::vector<std::string> keys() const;
};

// Throws ConfigError naming the sweep file and line for a malformed sweep.
// extra_overrides (the CLI's --set) apply to every run after the file's set.
SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& extra_overrides = {});
// The cartesian product of the axes, the last axis varying fastest.
std::vector<SweepPoint> expand_grid(const SweepSpec& spec);

// The overrides that make a point's config: the sweep's common ones, then the grid's
// (an unset key adds none).
std::vector<std::string> point_overrides(const SweepSpec& spec, const SweepPoint& p);

// The first line of results.csv: run, the grid keys, status, then the results.
std::string results_csv_header(const SweepSpec& spec);
// A CSV field: quoted when it holds a comma, a quote or a newline.
std::string csv_escape(const std::string& s);

// OMP_NUM_THREADS for each child: the user's value when set and not blank, else the
// cores divided among the jobs (at least 1). A blank value (`OMP_NUM_THREADS= seqmix
// sweep`) counts as unset: passed on, libgomp rejects it and each child takes every core.
std::string child_thread_count(const char* omp_num_threads, long cores, int jobs);

int cmd_sweep(const SweepArgs& args, const std::string& seqmix_binary);

}  // namespace seqmix
