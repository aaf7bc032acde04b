// The progress line of `seqmix sweep`: how many runs are done, running, left and
// failed, and when the sweep will end.
//
// The ETA assumes that a run's time is proportional to its cost weight (the work its
// config asks for: steps x batch x seq_len x d_model x layers, see run_cost_weight), at
// the rate of the runs that finished (successfully; a failed run may stop at once and
// says nothing about the cost of the others), and schedules the runs left on the
// sweep's job slots in grid order. The weight follows the sizes, not the mixer's own
// speed nor early stopping, so the estimate moves as runs finish; it is a guide, not a
// promise. (Measured on the Zoology grid, a step's time grows about as L x d_model: 16x
// from L=64, d=32 to L=256, d=128 for attention, H3 and Mamba, 10x for GLA.)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace seqmix {

struct SweepCounts {
  int64_t done = 0;     // finished with a result (including runs finished before this sweep started)
  int64_t running = 0;
  int64_t left = 0;     // not started yet
  int64_t failed = 0;
  int64_t total() const { return done + running + left + failed; }
};

struct Config;

// A run's time (finished: its wall seconds; running: seconds so far) and cost weight.
struct RunTime {
  double seconds = 0;
  double weight = 1;
};

// Seconds until every run has finished, or a negative number when no run has finished
// yet (nothing to estimate from). left_weights: the runs not started, in launch order;
// jobs: parallel slots.
double estimate_eta_seconds(const std::vector<RunTime>& finished, const std::vector<RunTime>& running,
                            const std::vector<double>& left_weights, int64_t jobs);

// The work a config asks for, in arbitrary units: optimizer steps x batch_size x seq_len
// x d_model x n_layers (recall tasks with epochs: steps = epochs x examples / batch; text
// with epochs, whose size is not known before reading the file: epochs).
double run_cost_weight(const Config& config);

// "sweep: 3/20 done, 2 running, 14 left, 1 failed | elapsed 12m05s | ETA 25m10s"
// ("ETA unknown until a run finishes" when eta_s < 0; "ETA 0s" when nothing is left).
std::string format_sweep_progress(const SweepCounts& counts, double elapsed_s, double eta_s);

// 42s, 12m05s, 2h03m.
std::string format_duration_short(double seconds);

}  // namespace seqmix
