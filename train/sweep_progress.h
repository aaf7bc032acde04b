// The progress line of `seqmix sweep`: how many runs are done, running, left and
// failed, and when the sweep will end.
//
// The ETA assumes every unfinished run takes as long as the mean of the runs that
// finished (successfully; a failed run may stop at once and says nothing about the
// cost of the others), and schedules them on the sweep's job slots in grid order.
// Grid points differ in cost (a sequence 4x longer costs about 4x), so the estimate
// moves as runs of new sizes finish; it is a guide, not a promise.
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

// Seconds until every run has finished, or a negative number when no run has finished
// yet (nothing to estimate from). finished_s: wall seconds of finished runs;
// running_elapsed_s: how long each running run has been running; jobs: parallel slots.
double estimate_eta_seconds(const std::vector<double>& finished_s, const std::vector<double>& running_elapsed_s,
                            int64_t left, int64_t jobs);

// "sweep: 3/20 done, 2 running, 14 left, 1 failed | elapsed 12m05s | ETA 25m10s"
// ("ETA unknown until a run finishes" when eta_s < 0; "ETA 0s" when nothing is left).
std::string format_sweep_progress(const SweepCounts& counts, double elapsed_s, double eta_s);

// 42s, 12m05s, 2h03m.
std::string format_duration_short(double seconds);

}  // namespace seqmix
