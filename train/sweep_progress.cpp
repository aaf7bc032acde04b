#include "train/sweep_progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

namespace seqmix {

double estimate_eta_seconds(const std::vector<double>& finished_s, const std::vector<double>& running_elapsed_s,
                            int64_t left, int64_t jobs) {
  if (left == 0 && running_elapsed_s.empty()) return 0;
  if (finished_s.empty()) return -1;
  const double mean = std::accumulate(finished_s.begin(), finished_s.end(), 0.0) / double(finished_s.size());
  // free_at[j]: seconds from now until slot j is free. A running run that has already
  // taken longer than the mean is taken to end now: we know no better.
  std::vector<double> free_at(static_cast<size_t>(std::max<int64_t>(1, jobs)), 0.0);
  for (size_t r = 0; r < running_elapsed_s.size(); ++r)
    free_at[r % free_at.size()] = std::max(free_at[r % free_at.size()], mean - running_elapsed_s[r]);
  for (int64_t i = 0; i < left; ++i) {
    auto slot = std::min_element(free_at.begin(), free_at.end());
    *slot += mean;
  }
  return std::max(0.0, *std::max_element(free_at.begin(), free_at.end()));
}

std::string format_duration_short(double s) {
  char buf[32];
  s = std::floor(std::max(0.0, s) + 0.5);  // 59.6 s is 1m00s, not 60s
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

std::string format_sweep_progress(const SweepCounts& c, double elapsed_s, double eta_s) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "sweep: %lld/%lld done, %lld running, %lld left, %lld failed | elapsed %s | ",
                (long long)c.done, (long long)c.total(), (long long)c.running, (long long)c.left,
                (long long)c.failed, format_duration_short(elapsed_s).c_str());
  return std::string(buf) + (eta_s < 0 ? "ETA unknown until a run finishes" : "ETA " + format_duration_short(eta_s));
}

}  // namespace seqmix
