#include "train/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <limits>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sstream>

#include "core/tape.h"
#include "train/checkpoint.h"
#include "train/distributed.h"
#include "train/memory_estimate.h"

namespace seqmix {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(s) / 60, int(s) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(s) / 3600, (int(s) % 3600) / 60);
  return buf;
}

std::string format_rate(double r) {
  char buf[32];
  if (r >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM", r / 1e6);
  else if (r >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", r / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", r);
  return buf;
}

LrSchedule make_schedule(const Config& c, int64_t total_steps) {
  LrSchedule s;
  s.type = c.schedule.type;
  s.lr = c.optimizer.lr;
  s.min_lr = c.schedule.min_lr;
  s.warmup_steps = c.schedule.warmup_steps;
  s.total_steps = total_steps;
  s.validate();
  return s;
}

constexpr const char* kCheckpointName = "checkpoint.h5";

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    // The second signal: the user does not want to wait for the checkpoint.
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal = sig;
  static const char msg[] = "\nseqmix: stopping after this step and writing a checkpoint (signal again to quit at once)\n";
  ssize_t ignored = ::write(2, msg, sizeof msg - 1);
  (void)ignored;
}

std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

bool all_finite(const Tensor& t) {
  if (t.dtype() == DType::f32) {
    const float* p = t.f32();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(p[i])) return false;
    return true;
  }
  for (int64_t i = 0, n = t.numel(); i < n; ++i)
    if (!std::isfinite(t.item(i))) return false;
  return true;
}

}  // namespace

void install_stop_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // a checkpoint being written is not cut short by EINTR
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

int stop_signal_received() { return g_stop_signal; }
void clear_stop_signal() { g_stop_signal = 0; }

std::string resume_override_refusal(const std::string& key) {
  static const char* allowed[] = {"optimizer.lr",          "optimizer.grad_clip",         "training.steps",
                                  "training.epochs",       "training.eval_interval",      "training.eval_batches",
                                  "training.checkpoint_interval", "training.early_stop_accuracy",
                                  "training.parallel"};
  for (const char* a : allowed)
    if (key == a) return "";
  const auto under = [&](const char* prefix) { return key.rfind(prefix, 0) == 0; };
  if (under("schedule.") || under("logging.") || key == "schedule" || key == "logging") return "";
  if (under("model")) return "it would change the model whose weights the checkpoint holds";
  if (under("data") || key == "training.batch_size")
    return "it would change the data the run draws, so the resumed run would not continue the same one";
  if (key == "training.seed") return "it would change the dropout stream the run continues";
  if (under("optimizer"))
    return "the checkpoint's Adam moments belong to the optimizer as it was (only optimizer.lr and "
           "optimizer.grad_clip may change)";
  return "only optimizer.lr, optimizer.grad_clip, training.steps/epochs/eval_interval/eval_batches/"
         "checkpoint_interval/early_stop_accuracy/parallel, schedule.* and logging.* may change on --resume";
}

namespace {

// Rank `rank` of `ranks` evaluates its slice of the rows of every evaluation batch;
// the sums over the slices are reduced over the ranks.
EvalResult evaluate_on_ranks(const LanguageModel& model, const DataSource& data, int rank, int ranks) {
  NoGradGuard no_grad;
  Generator unused;
  double sums[3] = {0, 0, 0};  // loss * labelled, labelled, correct
  for (int64_t i = 0; i < data.num_eval_batches(); ++i) {
    Batch whole = data.eval_batch(i);
    const RowRange mine = slice_rows(whole.inputs.size(0), rank, ranks);
    if (mine.end == mine.begin) continue;
    Batch b = batch_rows(whole, mine.begin, mine.end);
    LossResult r = model.loss(b.inputs, b.labels, false, unused);
    if (r.labelled == 0) continue;
    sums[0] += r.loss.item() * static_cast<double>(r.labelled);
    sums[1] += static_cast<double>(r.labelled);
    sums[2] += static_cast<double>(r.correct);
  }
  allreduce_sum(sums, 3);
  EvalResult e;
  e.labelled = static_cast<int64_t>(sums[1]);
  e.loss = e.labelled ? sums[0] / sums[1] : 0.0;
  e.accuracy = e.labelled ? sums[2] / sums[1] : 0.0;
  return e;
}

}  // namespace

EvalResult Trainer::evaluate_all() const {
  if (ranks_ == 1) return evaluate(*model_, *data_, batch_threads_ ? batch_threads_->threads() : 1);
  return evaluate_on_ranks(*model_, *data_, rank_, ranks_);
}

EvalResult evaluate(const LanguageModel& model, const DataSource& data, int threads) {
  // Per batch: loss * labelled, labelled, correct; summed in batch order below, so the
  // result does not depend on which thread evaluated which batch.
  struct Sums {
    double loss = 0;
    int64_t labelled = 0, correct = 0;
    std::exception_ptr error;
  };
  const int64_t n = data.num_eval_batches();
  std::vector<Sums> per(static_cast<size_t>(n));
  auto one = [&](int64_t i) {
    NoGradGuard no_grad;  // per thread
    Generator unused;
    const Batch b = data.eval_batch(i);
    const LossResult r = model.loss(b.inputs, b.labels, false, unused);
    Sums& s = per[static_cast<size_t>(i)];
    s.loss = r.loss.item() * static_cast<double>(r.labelled);
    s.labelled = r.labelled;
    s.correct = r.correct;
  };
  if (threads > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) {
      try {
        one(i);
      } catch (...) {
        per[static_cast<size_t>(i)].error = std::current_exception();
      }
    }
  } else {
    for (int64_t i = 0; i < n; ++i) one(i);
  }
  double loss_sum = 0;
  int64_t labelled = 0, correct = 0;
  for (const Sums& s : per) {
    if (s.error) std::rethrow_exception(s.error);
    loss_sum += s.loss;
    labelled += s.labelled;
    correct += s.correct;
  }
  EvalResult e;
  e.labelled = labelled;
  e.loss = labelled ? loss_sum / static_cast<double>(labelled) : 0.0;
  e.accuracy = labelled ? static_cast<double>(correct) / static_cast<double>(labelled) : 0.0;
  return e;
}

Trainer::Trainer(const Config& config, const std::string& out_dir) : config_(config), out_dir_(out_dir) {
  const TrainingConfig& t = config_.training;
  rank_ = world_rank();
  ranks_ = world_size();
  if (t.batch_size % ranks_ != 0)
    throw ConfigError("training.batch_size = " + std::to_string(t.batch_size) + " does not divide among the " +
                      std::to_string(ranks_) + " MPI ranks (mpirun -np " + std::to_string(ranks_) +
                      "): it is the global batch, and every rank computes an equal slice of it; choose a multiple of " +
                      std::to_string(ranks_) + " (e.g. " +
                      std::to_string((t.batch_size + ranks_ - 1) / ranks_ * ranks_) + ") or another -np");
  // Before the data and the model allocate anything.
  check_memory_fits(config_, true, "this configuration", ranks_);
  data_ = make_data_source(config_.data, t.batch_size, t.eval_batches);
  if (data_->vocab_size() > config_.model.vocab_size)
    throw std::invalid_argument("model.vocab_size = " + std::to_string(config_.model.vocab_size) +
                                " is smaller than the data's vocabulary of " + std::to_string(data_->vocab_size()));
  Generator init_gen(config_.training.seed);
  LayerInit init{&init_gen, config_.model.n_layers, DType::f32};
  model_ = std::make_unique<LanguageModel>(config_.model, init);
  AdamOptions ao;
  ao.decoupled = config_.optimizer.type == "adamw";
  ao.beta1 = config_.optimizer.beta1;
  ao.beta2 = config_.optimizer.beta2;
  ao.eps = config_.optimizer.eps;
  ao.weight_decay = config_.optimizer.weight_decay;
  optimizer_ = std::make_unique<Adam>(model_->parameters(), ao);
  if (t.steps > 0) {
    total_steps_ = t.steps;
  } else {
    if (data_->batches_per_epoch() == 0)
      throw std::invalid_argument("training.epochs needs a recall task; a text corpus trains for training.steps");
    total_steps_ = t.epochs * data_->batches_per_epoch();
  }
  schedule_ = make_schedule(config_, total_steps_);
  dropout_gen_ = Generator(hash_counter(config_.training.seed, 0xD0D0));
  // Each rank draws the dropout masks one process would draw for its rows of the batch.
  dropout_gen_.set_batch_slice(static_cast<uint64_t>(rank_), static_cast<uint64_t>(ranks_));
  const int threads = omp_get_max_threads();
  if (t.parallel == "batch" && ranks_ > 1)
    throw ConfigError("training.parallel: batch splits the batch over the threads of one process; with " +
                      std::to_string(ranks_) + " MPI ranks use ops (or auto)");
  if (t.parallel == "batch" && t.batch_size % threads != 0)
    throw ConfigError("training.parallel: batch gives each of the " + std::to_string(threads) +
                      " threads (OMP_NUM_THREADS) an equal slice of the batch, and training.batch_size = " +
                      std::to_string(t.batch_size) + " does not divide among them; choose a multiple of " +
                      std::to_string(threads) + " or training.parallel: ops");
  const bool batch = ranks_ == 1 && batch_parallel_chosen(t.parallel, config_.model, t.batch_size, threads);
  if (batch && threads > 1) batch_threads_ = std::make_unique<BatchThreads>(*model_, threads);
  if (batch_threads_)
    spdlog::info("batch-parallel steps (training.parallel: {}): {} threads, {} sequences each", t.parallel, threads,
                 t.batch_size / threads);
  fs::create_directories(out_dir_);
}

std::unique_ptr<Trainer> Trainer::resume(const std::string& out_dir, const std::vector<std::string>& overrides) {
  const std::string path = (fs::path(out_dir) / kCheckpointName).string();
  if (!fs::exists(path))
    throw CheckpointError(path + ": no checkpoint to resume from (is '" + out_dir + "' a run directory?)");
  for (const std::string& o : overrides) {
    const std::string key = o.substr(0, o.find('='));
    const std::string why = resume_override_refusal(key);
    if (!why.empty()) throw std::invalid_argument("--resume --set " + o + ": '" + key + "' cannot change on resume: " + why);
  }
  CheckpointData ck = read_checkpoint(path);
  Config cfg = parse_config(ck.config_yaml, path + " (config attribute)", overrides);
  auto trainer = std::make_unique<Trainer>(cfg, out_dir);
  trainer->restore(path);
  return trainer;
}

void Trainer::restore(const std::string& path) {
  CheckpointData ck = read_checkpoint(path);
  load_named(path, ck.params, model_->named_parameters(), "params");
  NamedTensors ms, vs;
  for (auto& s : optimizer_->slots()) {
    ms.emplace_back(s.name, s.m);
    vs.emplace_back(s.name, s.v);
  }
  load_named(path, ck.adam_m, ms, "optimizer/m");
  load_named(path, ck.adam_v, vs, "optimizer/v");
  optimizer_->set_step_count(ck.optimizer_step);
  auto need = [&](const std::string& key) {
    auto it = ck.train_u64.find(key);
    if (it == ck.train_u64.end()) throw CheckpointError(path + ": /train/" + key + " is missing");
    return it->second;
  };
  step_ = static_cast<int64_t>(need("step"));
  finished_ = need("finished") != 0;
  early_stopped_ = need("early_stopped") != 0;
  dropout_gen_.set_state(need("dropout_rng_seed"), need("dropout_rng_counter"));
  std::map<std::string, uint64_t> ds;
  for (const auto& [k, v] : ck.train_u64)
    if (k.rfind("data_", 0) == 0) ds[k] = v;
  for (const auto& [k, v] : data_->state())
    if (!ds.count(k)) throw CheckpointError(path + ": /train/" + k + " is missing (the data kind does not match?)");
  data_->set_state(ds);
  // Checkpoints of earlier versions have no window: the first line after resume
  // then averages fewer steps.
  window_ = LogWindow{};
  if (ck.train_f64.count("log_window_loss_sum")) {
    window_.loss_sum = ck.train_f64.at("log_window_loss_sum");
    window_.steps = static_cast<int64_t>(need("log_window_steps"));
    window_.labelled = static_cast<int64_t>(need("log_window_labelled"));
    window_.correct = static_cast<int64_t>(need("log_window_correct"));
    window_.tokens = static_cast<int64_t>(need("log_window_tokens"));
  }
  if (step_ > total_steps_ && !finished_)
    throw CheckpointError(path + ": the checkpoint is at step " + std::to_string(step_) + ", past training.steps = " +
                          std::to_string(total_steps_));
  // --resume --set training.steps=<more> continues a run that had finished.
  if (finished_ && !early_stopped_ && step_ < total_steps_) finished_ = false;
  last_saved_step_ = step_;
  best_accuracy_ = ck.train_f64.count("best_valid_accuracy") ? ck.train_f64.at("best_valid_accuracy") : 0.0;
  elapsed_before_ = ck.train_f64.count("elapsed_s") ? ck.train_f64.at("elapsed_s") : 0.0;
  // Metrics written after the checkpoint belong to the lost part of the run; the
  // resumed run writes them again.
  const fs::path mpath = fs::path(out_dir_) / "metrics.jsonl";
  if (rank_ == 0 && fs::exists(mpath)) {
    std::ifstream in(mpath);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", int64_t{0}) <= step_) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // A line cut by a crash is dropped.
      }
    }
    in.close();
    std::ofstream out(mpath, std::ios::trunc);
    out << kept;
  }
  spdlog::info("resumed {} at step {} of {}", path, step_, total_steps_);
}

void Trainer::append_metrics(const std::string& line) {
  if (rank_ != 0) return;
  std::ofstream out(fs::path(out_dir_) / "metrics.jsonl", std::ios::app);
  out << line << "\n";
}

bool Trainer::model_state_finite(std::string* bad) const {
  for (const auto& [name, p] : model_->named_parameters())
    if (!all_finite(p)) return *bad = "parameter " + name, false;
  for (const auto& s : optimizer_->slots()) {
    if (!all_finite(s.m)) return *bad = "Adam first moment of " + s.name, false;
    if (!all_finite(s.v)) return *bad = "Adam second moment of " + s.name, false;
  }
  return true;
}

void Trainer::diverged(int64_t at_step, const std::string& what, double lr) const {
  tape().clear();
  char peak[32], lower[32], clip[32];
  std::snprintf(peak, sizeof peak, "%g", config_.optimizer.lr);
  std::snprintf(lower, sizeof lower, "%g", config_.optimizer.lr / 10);
  std::snprintf(clip, sizeof clip, "%g", config_.optimizer.grad_clip);
  std::string msg = "training diverged at step " + std::to_string(at_step) + ": " + what + " (learning rate " +
                    fmt_g(lr) + "). Lower optimizer.lr (now " + peak + ")";
  if (config_.optimizer.grad_clip <= 0) msg += " or set optimizer.grad_clip (e.g. 1.0)";
  else msg += "; optimizer.grad_clip is already " + std::string(clip);
  if (last_saved_step_ >= 0)
    msg += ". The checkpoint of step " + std::to_string(last_saved_step_) + " in " + out_dir_ +
           " is intact; continue from it with: seqmix train --resume " + out_dir_ + " --set optimizer.lr=" + lower;
  else
    msg += ". No checkpoint was written (training.checkpoint_interval keeps earlier ones); start again with "
           "--set optimizer.lr=" + std::string(lower);
  throw TrainingError(msg);
}

void Trainer::save_checkpoint(bool finished) {
  // Never write a checkpoint that cannot be resumed from.
  std::string bad;
  if (!model_state_finite(&bad))
    throw TrainingError("refusing to write a checkpoint at step " + std::to_string(step_) + ": " + bad +
                        " is not finite");
  // Every rank holds the same state; rank 0 writes it.
  if (rank_ != 0) {
    last_saved_step_ = step_;
    return;
  }
  CheckpointData ck;
  ck.config_yaml = to_yaml(config_);
  ck.params = model_->named_parameters();
  ck.optimizer_step = optimizer_->step_count();
  for (const auto& s : optimizer_->slots()) {
    ck.adam_m.emplace_back(s.name, s.m);
    ck.adam_v.emplace_back(s.name, s.v);
  }
  if (const Tokenizer* tok = data_->tokenizer()) ck.tokenizer = std::make_pair(tok->kind(), tok->vocabulary_utf8());
  ck.train_u64 = data_->state();
  ck.train_u64["step"] = static_cast<uint64_t>(step_);
  ck.train_u64["finished"] = finished ? 1 : 0;
  ck.train_u64["early_stopped"] = early_stopped_ ? 1 : 0;
  ck.train_u64["dropout_rng_seed"] = dropout_gen_.seed();
  ck.train_u64["dropout_rng_counter"] = dropout_gen_.counter();
  ck.train_f64["best_valid_accuracy"] = best_accuracy_;
  ck.train_f64["elapsed_s"] = elapsed_before_ + std::chrono::duration<double>(Clock::now() - session_start_).count();
  ck.train_f64["log_window_loss_sum"] = window_.loss_sum;
  ck.train_u64["log_window_steps"] = static_cast<uint64_t>(window_.steps);
  ck.train_u64["log_window_labelled"] = static_cast<uint64_t>(window_.labelled);
  ck.train_u64["log_window_correct"] = static_cast<uint64_t>(window_.correct);
  ck.train_u64["log_window_tokens"] = static_cast<uint64_t>(window_.tokens);
  write_checkpoint((fs::path(out_dir_) / kCheckpointName).string(), ck);
  last_saved_step_ = step_;
}

TrainResult Trainer::run(int64_t crash_after_step) {
  TrainResult res;
  const TrainingConfig& t = config_.training;
  if (rank_ == 0) {
    std::ofstream cfg(fs::path(out_dir_) / "config.yaml");
    cfg << to_yaml(config_);
  }
  if (finished_) {
    spdlog::info("the run in {} has already finished at step {}", out_dir_, step_);
    res.already_finished = true;
    res.steps = step_;
    res.best_valid_accuracy = best_accuracy_;
    res.final_eval = evaluate_all();
    return res;
  }
  spdlog::info("data: {}", data_->describe());
  spdlog::info("model: {} x {}, d_model {}, {} parameters", config_.model.n_layers, config_.model.mixer.type,
               config_.model.d_model, model_->num_parameters());
  if (ranks_ > 1)
    spdlog::info("data-parallel on {} MPI ranks: {} sequences of the global batch of {} each", ranks_,
                 t.batch_size / ranks_, t.batch_size);
  const bool tty = rank_ == 0 && isatty(fileno(stderr));
  const double allreduce_s_before = allreduce_seconds();
  const int64_t bpe = data_->batches_per_epoch();
  const int64_t eval_every = t.eval_interval > 0 ? t.eval_interval : (bpe > 0 ? bpe : total_steps_);
  const NamedTensors params = model_->named_parameters();
  const auto start = Clock::now();
  session_start_ = start;
  auto elapsed = [&] { return elapsed_before_ + std::chrono::duration<double>(Clock::now() - start).count(); };
  auto window_start = Clock::now();
  const int64_t first_step = step_;
  double last_train_loss = 0;

  while (step_ < total_steps_) {
    const double lr = schedule_.at(step_);
    // Every rank draws the whole global batch from the same stream and computes its rows.
    Batch b = data_->next_train_batch();
    const int64_t batch_tokens = b.inputs.numel();
    if (ranks_ > 1) {
      const int64_t rows = b.inputs.size(0) / ranks_;
      b = batch_rows(b, rank_ * rows, (rank_ + 1) * rows);
    }
    double loss = 0;
    int64_t labelled = 0, correct = 0;
    int stop_sig = 0;
    if (batch_threads_) {
      // Forward and backward together, a slice of the batch per thread; a non-finite
      // loss stops the run below, before anything reaches the weights.
      const BatchStepResult r = batch_threads_->step(*model_, b, dropout_gen_);
      loss = r.loss;
      labelled = r.labelled;
      correct = r.correct;
      stop_sig = stop_signal_received();
      if (!std::isfinite(loss)) diverged(step_ + 1, "the loss is " + std::to_string(loss), lr);
    } else {
      LossResult r = model_->loss(b.inputs, b.labels, true, dropout_gen_);
      loss = r.loss.item();
      stop_sig = stop_signal_received();
      float grad_weight = 1.0f;
      if (ranks_ > 1) {
        // The loss is the mean over the global batch's labelled positions: rank r's mean
        // weighs labelled_r / labelled in it, and so does its gradient. A stop signal
        // that reached any rank stops them all after this step.
        double s[5] = {r.labelled ? loss * static_cast<double>(r.labelled) : 0.0, static_cast<double>(r.labelled),
                       static_cast<double>(r.correct), stop_sig == SIGINT ? 1.0 : 0.0,
                       stop_sig != 0 && stop_sig != SIGINT ? 1.0 : 0.0};
        allreduce_sum(s, 5);
        loss = s[1] > 0 ? s[0] / s[1] : 0.0;
        grad_weight = s[1] > 0 ? static_cast<float>(static_cast<double>(r.labelled) / s[1]) : 0.0f;
        r.labelled = static_cast<int64_t>(s[1]);
        r.correct = static_cast<int64_t>(s[2]);
        stop_sig = s[3] > 0 ? SIGINT : s[4] > 0 ? SIGTERM : 0;
      }
      if (!std::isfinite(loss)) diverged(step_ + 1, "the loss is " + std::to_string(loss), lr);
      // A slice without labelled positions contributes no gradient (its mean is 0/0).
      if (grad_weight > 0.0f) backward(r.loss);
      else tape().clear();
      allreduce_gradients(params, grad_weight);
      labelled = r.labelled;
      correct = r.correct;
    }
    // The norm is needed even without clipping: a non-finite gradient must not
    // reach the parameters and the Adam moments. The clip is folded into the update
    // (bit for bit clip_grad_norm then step, one pass over the gradients fewer).
    const double max_norm = config_.optimizer.grad_clip > 0 ? config_.optimizer.grad_clip
                                                             : std::numeric_limits<double>::infinity();
    const double gnorm = grad_norm(params);
    if (!std::isfinite(gnorm)) {
      optimizer_->zero_grad();
      diverged(step_ + 1, "the gradient norm is " + std::to_string(gnorm), lr);
    }
    const bool finite = optimizer_->step(lr, clip_coefficient(gnorm, max_norm));
    optimizer_->zero_grad();
    // The update reports a non-finite value it wrote; only then is the state searched
    // for its name (the values it did not write were finite before).
    if (!finite) {
      std::string bad = "parameters or Adam moments";
      model_state_finite(&bad);
      diverged(step_ + 1, "the update made the " + bad + " non-finite", lr);
    }
    ++step_;
    last_train_loss = loss;
    window_.tokens += batch_tokens;
    window_.loss_sum += loss;
    window_.labelled += labelled;
    window_.correct += correct;
    ++window_.steps;

    const bool log_now = step_ % config_.logging.log_interval == 0 || step_ == total_steps_;
    const bool eval_now = step_ % eval_every == 0 || step_ == total_steps_;
    if (log_now || eval_now) {
      const double window_s = std::chrono::duration<double>(Clock::now() - window_start).count();
      const double tps = window_s > 0 ? window_.tokens / window_s : 0;
      const double train_loss = window_.loss_sum / std::max<int64_t>(1, window_.steps);
      const double train_acc = window_.labelled ? double(window_.correct) / window_.labelled : 0;
      nlohmann::json j;
      j["step"] = step_;
      j["epoch"] = bpe > 0 ? double(step_) / bpe : 0.0;
      j["lr"] = lr;
      j["train_loss"] = train_loss;
      j["train_accuracy"] = train_acc;
      j["tokens_per_s"] = tps;
      j["elapsed_s"] = elapsed();
      std::string line;
      if (eval_now) {
        EvalResult e = evaluate_all();
        if (!std::isfinite(e.loss)) diverged(step_, "the validation loss is " + std::to_string(e.loss), lr);
        best_accuracy_ = std::max(best_accuracy_, e.accuracy);
        j["valid_loss"] = e.loss;
        j["valid_accuracy"] = e.accuracy;
        res.final_eval = e;
        if (t.early_stop_accuracy > 0 && e.accuracy >= t.early_stop_accuracy) early_stopped_ = true;
      }
      append_metrics(j.dump());
      const double done_s = std::chrono::duration<double>(Clock::now() - start).count();
      const double eta = step_ > first_step ? done_s / (step_ - first_step) * (total_steps_ - step_) : 0;
      char msg[256];
      std::snprintf(msg, sizeof msg, "step %lld/%lld | loss %.4f | acc %.3f | %s tok/s | ETA %s",
                    (long long)step_, (long long)total_steps_, train_loss, train_acc, format_rate(tps).c_str(),
                    format_duration(eta).c_str());
      std::string text = msg;
      if (eval_now) {
        char ev[128];
        std::snprintf(ev, sizeof ev, " | valid loss %.4f acc %.4f", j["valid_loss"].get<double>(),
                      j["valid_accuracy"].get<double>());
        text += ev;
      }
      if (tty && !eval_now) {
        std::fprintf(stderr, "\r\033[K%s", text.c_str());
        std::fflush(stderr);
      } else {
        if (tty) std::fprintf(stderr, "\r\033[K");
        spdlog::info("{}", text);
      }
      window_ = LogWindow{};
      window_start = Clock::now();
    }
    if (early_stopped_) {
      spdlog::info("early stop: valid accuracy {:.4f} >= {} at step {}", res.final_eval.accuracy,
                   t.early_stop_accuracy, step_);
      break;
    }
    if (t.checkpoint_interval > 0 && step_ % t.checkpoint_interval == 0 && step_ < total_steps_) save_checkpoint(false);
    if (step_ == crash_after_step) return res;
    // One process reads the flag afresh; ranks act on the flag they reduced together.
    if (const int sig = ranks_ > 1 ? stop_sig : stop_signal_received(); sig != 0 && step_ < total_steps_) {
      if (last_saved_step_ != step_) save_checkpoint(false);
      res.stopped_by_signal = sig;
      res.steps = step_;
      res.final_train_loss = last_train_loss;
      res.best_valid_accuracy = best_accuracy_;
      res.wall_seconds = elapsed();
      return res;
    }
  }
  if (res.final_eval.labelled == 0) res.final_eval = evaluate_all();
  if (!std::isfinite(res.final_eval.loss))
    diverged(step_, "the validation loss is " + std::to_string(res.final_eval.loss), schedule_.at(step_ - 1));
  finished_ = true;
  save_checkpoint(true);
  res.steps = step_;
  res.epochs_completed = bpe > 0 ? step_ / bpe : 0;
  res.final_train_loss = last_train_loss;
  res.best_valid_accuracy = best_accuracy_;
  res.early_stopped = early_stopped_;
  res.wall_seconds = elapsed();
  const double session_s = std::chrono::duration<double>(Clock::now() - start).count();
  res.tokens_per_second =
      session_s > 0 ? double(step_ - first_step) * t.batch_size * data_->seq_len() / session_s : 0;
  if (ranks_ > 1 && step_ > first_step) {
    const double ar = allreduce_seconds() - allreduce_s_before;
    spdlog::info("gradient allreduce: {:.2f} ms per step, {:.1f}% of the time; {:.2f} MB of gradients reduced per step",
                 1e3 * ar / static_cast<double>(step_ - first_step), session_s > 0 ? 100.0 * ar / session_s : 0.0,
                 4.0 * static_cast<double>(model_->num_parameters()) / 1e6);
  }
  return res;
}

}  // namespace seqmix
