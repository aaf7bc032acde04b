#include "train/commands.h"

#include <omp.h>

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/tape.h"
#include "data/errors.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/init_from.h"
#include "train/model_io.h"
#include "train/run_lock.h"
#include "train/trainer.h"

namespace seqmix {

namespace {

// logging.level of the config: the least severe log line a training prints (progress lines
// are info; warn keeps only warnings and errors). Other ranks of an MPI job stay at warn.
void apply_log_level(const Config& c) { spdlog::set_level(spdlog::level::from_str(c.logging.level)); }

}  // namespace


namespace fs = std::filesystem;

int report_errors(const std::string& command, const std::function<int()>& f) {
  try {
    return f();
  } catch (const ConfigError& e) {
    std::cerr << "seqmix " << command << ": configuration error:\n" << e.what() << "\n";
  } catch (const CheckpointError& e) {
    std::cerr << "seqmix " << command << ": checkpoint error: " << e.what() << "\n";
  } catch (const DataError& e) {
    std::cerr << "seqmix " << command << ": data error: " << e.what() << "\n";
  } catch (const TrainingError& e) {
    std::cerr << "seqmix " << command << ": training stopped: " << e.what() << "\n";
  } catch (const ShapeError& e) {
    std::cerr << "seqmix " << command << ": " << e.what() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "seqmix " << command << ": " << e.what() << "\n";
  }
  return 1;
}

int cmd_train(const TrainArgs& args) {
  std::unique_ptr<Trainer> trainer;
  std::string out_dir;
  std::unique_ptr<RunLock> lock;  // held until the run ends: one writer per directory
  // Under mpirun, rank 0 is the writer: it alone takes the lock and prints.
  const bool writer = world_rank() == 0;
  if (!args.resume_dir.empty()) {
    if (!args.init_from.empty()) throw std::invalid_argument("--resume continues a run; --init-from starts a new one");
    if (!args.config_path.empty())
      throw std::invalid_argument("--resume takes its configuration from the checkpoint; drop CONFIG (--set may "
                                  "change the learning rate, the schedule, the number of steps and logging)");
    out_dir = args.resume_dir;
    if (writer) lock = std::make_unique<RunLock>(out_dir);
    trainer = Trainer::resume(out_dir, args.overrides);
    if (writer) apply_log_level(trainer->config());
  } else {
    if (args.config_path.empty()) throw std::invalid_argument("a CONFIG file (or --resume DIR) is required");
    Config cfg = load_config(args.config_path, args.overrides);
    out_dir = args.out_dir.empty() ? (fs::path("runs") / fs::path(args.config_path).stem()).string() : args.out_dir;
    if (writer) lock = std::make_unique<RunLock>(out_dir);
    if (fs::exists(fs::path(out_dir) / "checkpoint.h5"))
      throw std::invalid_argument("'" + out_dir + "' already holds a run (checkpoint.h5): continue it with --resume " +
                                  out_dir + " or choose another --out");
    // A run stopped before its first checkpoint leaves metrics.jsonl; a new run
    // appending to it would mix two runs' steps.
    if (fs::exists(fs::path(out_dir) / "metrics.jsonl"))
      throw std::invalid_argument("'" + out_dir + "' holds an earlier run's metrics.jsonl but no checkpoint to resume; "
                                  "remove the directory or choose another --out");
    if (writer) std::cout << "# resolved configuration\n" << to_yaml(cfg) << std::flush;
    if (writer) apply_log_level(cfg);
    trainer = std::make_unique<Trainer>(cfg, out_dir);
    if (!args.init_from.empty()) init_weights_from(args.init_from, trainer->model(), trainer->data());
  }
  install_stop_signal_handlers();
  TrainResult r = trainer->run();
  if (!writer) return r.stopped_by_signal ? 128 + r.stopped_by_signal : 0;
  if (r.stopped_by_signal) {
    std::cout << "stopped by " << (r.stopped_by_signal == SIGINT ? "SIGINT" : "SIGTERM") << " at step " << r.steps
              << "; checkpoint written to " << (fs::path(out_dir) / "checkpoint.h5").string()
              << "; continue with: seqmix train --resume " << out_dir << std::endl;
    return 128 + r.stopped_by_signal;
  }
  char line[512];
  std::snprintf(line, sizeof line,
                "done: %lld steps in %.1fs | train loss %.4f | valid loss %.4f | valid accuracy %.4f (best %.4f)%s | "
                "%.0f tok/s | %s",
                (long long)r.steps, r.wall_seconds, r.final_train_loss, r.final_eval.loss, r.final_eval.accuracy,
                r.best_valid_accuracy, r.early_stopped ? " | early stop" : "", r.tokens_per_second,
                (fs::path(out_dir) / "checkpoint.h5").string().c_str());
  std::cout << line << std::endl;
  // result.json: the run's outcome in one place, for sweeps and scripts.
  const Trainer& t = *trainer;
  const int64_t L = t.data().seq_len();
  int64_t state = 0;
  for (int64_t i = 0; i < t.config().model.n_layers; ++i) state += t.model().state_size(i, L);
  nlohmann::json j;
  j["steps"] = r.steps;
  j["best_valid_accuracy"] = r.best_valid_accuracy;
  j["final_train_loss"] = r.final_train_loss;
  j["final_valid_loss"] = r.final_eval.loss;
  j["final_valid_accuracy"] = r.final_eval.accuracy;
  j["parameters"] = t.model().num_parameters();
  j["state_size"] = state;
  j["state_size_at_tokens"] = L;
  j["wall_s"] = r.wall_seconds;
  j["early_stopped"] = r.early_stopped;
  const fs::path result = fs::path(out_dir) / "result.json";
  {
    std::ofstream o(result.string() + ".tmp");
    o << j.dump(2) << "\n";
  }
  fs::rename(result.string() + ".tmp", result);
  return 0;
}

int cmd_eval(const EvalArgs& args, std::ostream& out) {
  LoadedModel lm = load_model(args.checkpoint, args.overrides);
  const Tokenizer* tok = lm.tokenizer ? &*lm.tokenizer : nullptr;
  // On a text file other than the one trained on, every token is scored (there is
  // no training part to hold out); on the training file, its validation split.
  const bool other_text = lm.config.data.kind == "text" &&
                          (lm.trained_config.data.kind != "text" || lm.config.data.text.path != lm.trained_config.data.text.path);
  auto data = make_data_source(lm.config.data, lm.config.training.batch_size,
                               other_text ? 0 : lm.config.training.eval_batches, tok, other_text);
  // Small models evaluate a batch per thread, as they train (training.parallel).
  const int threads = omp_get_max_threads();
  const TrainingConfig& t = lm.config.training;
  const bool by_batch = batch_parallel_chosen(t.parallel, lm.config.model, t.batch_size, threads);
  EvalResult e = evaluate(*lm.model, *data, by_batch ? threads : 1);
  nlohmann::json j;
  j["checkpoint"] = lm.path;
  j["step"] = lm.step;
  j["data"] = data->describe();
  j["loss"] = e.loss;
  j["accuracy"] = e.accuracy;
  j["labelled_positions"] = e.labelled;
  out << j.dump(2) << std::endl;
  return 0;
}

int cmd_info(const std::string& checkpoint, std::ostream& out) {
  LoadedModel lm = load_model(checkpoint);
  out << "checkpoint: " << lm.path << " (step " << lm.step << ")\n";
  out << "config:\n";
  std::istringstream cfg(to_yaml(lm.config));
  for (std::string line; std::getline(cfg, line);) out << "  " << line << "\n";
  out << "tensors:\n";
  int64_t total = 0;
  for (const auto& [name, t] : lm.model->named_parameters()) {
    out << "  " << name << "  " << shape_str(t.shape()) << "  " << t.numel() << "\n";
    total += t.numel();
  }
  out << "parameters: " << total << "\n";
  const int64_t L = lm.config.data.seq_len();
  out << "recurrent state per sequence (floats):\n";
  for (int64_t i = 0; i < lm.config.model.n_layers; ++i) {
    const int64_t s1 = lm.model->state_size(i, 1), sL = lm.model->state_size(i, L);
    out << "  layers." << i << " (" << lm.config.model.mixer.type << "): ";
    if (s1 == sL) out << sL << " (fixed)\n";
    else out << sL << " after " << L << " tokens (grows with t: " << s1 << " per token)\n";
  }
  if (lm.tokenizer) out << "tokenizer: " << lm.tokenizer->kind() << ", " << lm.tokenizer->vocab_size() << " tokens\n";
  return 0;
}

int cmd_sample(const SampleArgs& args, std::ostream& out) {
  LoadedModel lm = load_model(args.checkpoint);
  std::vector<int32_t> prompt;
  if (lm.tokenizer) {
    prompt = lm.tokenizer->encode(args.prompt);  // DataError names a character outside the vocabulary
  } else {
    // A recall-task model has no text vocabulary: the prompt is token ids.
    std::istringstream is(args.prompt);
    std::string word;
    while (is >> word) {
      char* end = nullptr;
      long v = std::strtol(word.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v >= lm.config.model.vocab_size)
        throw std::invalid_argument("--prompt: '" + word + "' is not a token id in [0, " +
                                    std::to_string(lm.config.model.vocab_size) + ") (this model has no tokenizer)");
      prompt.push_back(static_cast<int32_t>(v));
    }
  }
  if (prompt.empty()) throw std::invalid_argument("--prompt is empty");
  if (lm.tokenizer) out << args.prompt << std::flush;
  generate(*lm.model, prompt, args.options, [&](int32_t t) {
    if (lm.tokenizer) out << lm.tokenizer->decode({t});
    else out << " " << t;
    out << std::flush;
  });
  out << std::endl;
  return 0;
}

}  // namespace seqmix
