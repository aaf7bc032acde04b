// The training loop: AdamW with the decay groups of docs/model.md#weight-decay-groups, a learning-rate schedule,
// gradient clipping, evaluation every N steps or every epoch, early stopping at
// an accuracy threshold, periodic and final checkpoints, and exact resumption.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/model.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
#include "train/batch_threads.h"
#include "train/config.h"
#include "train/data_source.h"

namespace seqmix {

struct EvalResult {
  double loss = 0;      // mean cross-entropy over labelled positions
  double accuracy = 0;  // argmax hits / labelled positions
  int64_t labelled = 0;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t epochs_completed = 0;
  double final_train_loss = 0;
  EvalResult final_eval;
  double best_valid_accuracy = 0;
  double wall_seconds = 0;
  double tokens_per_second = 0;
  bool early_stopped = false;
  bool already_finished = false;  // --resume of a run that had ended
  int stopped_by_signal = 0;      // SIGINT/SIGTERM: stopped after a step, checkpoint written
};

// Thrown when training cannot go on (a non-finite loss, gradient or update); the
// message says where and what to change. No checkpoint is written for the
// diverged state: the last one on disk stays the last good one.
struct TrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The first SIGINT or SIGTERM asks the training loop to stop after the current
// step and write a checkpoint (Trainer::run returns with stopped_by_signal); a
// second one ends the process at once. The handler only sets a flag.
void install_stop_signal_handlers();
int stop_signal_received();  // 0 or the signal number
void clear_stop_signal();    // tests

// Config keys `train --resume DIR --set key=value` may change: the learning rate,
// gradient clipping, the schedule, the length of the run, evaluation,
// checkpointing and logging. Keys that would change the model, the data or the
// optimizer's state are refused: returns "" when allowed, else the reason.
std::string resume_override_refusal(const std::string& key);

// Loss and accuracy over every evaluation batch. threads > 1 shares the batches out
// among that many threads, each running its batches alone (for small models, as
// batch-parallel steps do: training.parallel); the sums are taken in batch order.
EvalResult evaluate(const LanguageModel& model, const DataSource& data, int threads = 1);

class Trainer {
 public:
  // out_dir receives config.yaml, metrics.jsonl and checkpoint.h5.
  Trainer(const Config& config, const std::string& out_dir);
  // Continues the run in out_dir from its checkpoint.h5 (config taken from there,
  // with `overrides` applied: see resume_override_refusal).
  static std::unique_ptr<Trainer> resume(const std::string& out_dir, const std::vector<std::string>& overrides = {});

  // crash_after_step >= 0 (tests only) returns right after that step without the
  // final checkpoint, as a crash would: what a resume must recover from.
  TrainResult run(int64_t crash_after_step = -1);

  const LanguageModel& model() const { return *model_; }
  const DataSource& data() const { return *data_; }
  const Config& config() const { return config_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  // What the progress line and metrics.jsonl average over since the last line;
  // saved in checkpoints so that a resumed run logs the same numbers.
  struct LogWindow {
    double loss_sum = 0;
    int64_t steps = 0, labelled = 0, correct = 0, tokens = 0;
  };

  void save_checkpoint(bool finished);
  void restore(const std::string& path);
  void append_metrics(const std::string& json_line);
  [[noreturn]] void diverged(int64_t at_step, const std::string& what, double lr) const;
  bool model_state_finite(std::string* bad_name) const;
  // evaluate(), split over the MPI ranks and reduced: every rank gets the result.
  EvalResult evaluate_all() const;

  Config config_;
  std::string out_dir_;
  std::unique_ptr<DataSource> data_;
  std::unique_ptr<LanguageModel> model_;
  std::unique_ptr<Adam> optimizer_;
  LrSchedule schedule_;
  Generator dropout_gen_;
  int64_t total_steps_ = 0;
  int64_t step_ = 0;
  double best_accuracy_ = 0;
  double elapsed_before_ = 0;  // seconds of earlier sessions of a resumed run
  bool finished_ = false;
  std::chrono::steady_clock::time_point session_start_ = std::chrono::steady_clock::now();
  bool early_stopped_ = false;
  LogWindow window_;
  int64_t last_saved_step_ = -1;  // -1: no checkpoint on disk yet
  int rank_ = 0, ranks_ = 1;      // this process's MPI rank and the number of ranks
  std::unique_ptr<BatchThreads> batch_threads_;  // training.parallel: batch; null for op-parallel steps
};

}  // namespace seqmix
