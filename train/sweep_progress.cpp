#include "train/sweep_progress.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "train/config.h"

namespace seqmix {

double estimate_eta_seconds(const std::vector<RunTime>& finished, const std::vector<RunTime>& running,
                            const std::vector<double>& left_weights, int64_t jobs) {
  if (left_weights.empty() && running.empty()) return 0;
  double seconds = 0, weight = 0;
  for (const RunTime& r : finished) {
    seconds += r.seconds;
    weight += r.weight;
  }
  if (finished.empty() || weight <= 0) return -1;
  const double per_weight = seconds / weight;
  // free_at[j]: seconds from now until slot j is free. A running run that has already
  // taken longer than expected is taken to end now: we know no better.
  std::vector<double> free_at(static_cast<size_t>(std::max<int64_t>(1, jobs)), 0.0);
  for (size_t r = 0; r < running.size(); ++r) {
    double& slot = free_at[r % free_at.size()];
    slot = std::max(slot, per_weight * running[r].weight - running[r].seconds);
  }
  for (const double w : left_weights) *std::min_element(free_at.begin(), free_at.end()) += per_weight * w;
  return std::max(0.0, *std::max_element(free_at.begin(), free_at.end()));
}

double run_cost_weight(const Config& c) {
  const TrainingConfig& t = c.training;
  double steps = static_cast<double>(t.steps);
  if (steps <= 0) {
    steps = static_cast<double>(t.epochs);
    if (c.data.kind == "recall")
      steps *= std::ceil(double(c.data.recall.num_train_examples) / double(std::max<int64_t>(1, t.batch_size)));
  }
  const int64_t seq_len = c.data.seq_len();
  return steps * double(t.batch_size) * double(seq_len) * double(c.model.d_model) * double(c.model.n_layers);
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
