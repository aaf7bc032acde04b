// The training loop: AdamW with SPEC's decay groups, a learning-rate schedule,
// gradient clipping, evaluation every N steps or every epoch, early stopping at
// an accuracy threshold, periodic and final checkpoints, and exact resumption.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "layers/model.h"
#include "optim/adamw.h"
#include "optim/schedule.h"
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
};

// Thrown when training cannot go on (a non-finite loss); the message says where.
struct TrainingError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

EvalResult evaluate(const LanguageModel& model, const DataSource& data);

class Trainer {
 public:
  // out_dir receives config.yaml, metrics.jsonl and checkpoint.h5.
  Trainer(const Config& config, const std::string& out_dir);
  // Continues the run in out_dir from its checkpoint.h5 (config taken from there).
  static std::unique_ptr<Trainer> resume(const std::string& out_dir);

  // crash_after_step >= 0 (tests only) returns right after that step without the
  // final checkpoint, as a crash would: what a resume must recover from.
  TrainResult run(int64_t crash_after_step = -1);

  const LanguageModel& model() const { return *model_; }
  const DataSource& data() const { return *data_; }
  const Config& config() const { return config_; }
  int64_t total_steps() const { return total_steps_; }

 private:
  void save_checkpoint(bool finished);
  void restore(const std::string& path);
  void append_metrics(const std::string& json_line);

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
};

}  // namespace seqmix
