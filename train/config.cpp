// Configuration rules: every range and cross-field check in one place (check_config),
// and the machinery that locates and phrases problems. Parsing, overrides and to_yaml
// are in config_yaml.cpp.
#include "train/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <tuple>

#include "data/recall_tasks.h"
#include "layers/model.h"
#include "layers/option_check.h"
#include "train/config_errors.h"

namespace seqmix {
namespace config_detail {

// ---- Problems ----------------------------------------------------------------------

void Problems::forget_origins_under(const std::string& section,
                                    const std::vector<std::string>& keep) {
  const std::string prefix = section + ".";
  for (auto it = origins_.begin(); it != origins_.end();) {
    const bool under = it->first.compare(0, prefix.size(), prefix) == 0;
    const bool kept = std::find(keep.begin(), keep.end(), it->first) != keep.end();
    it = (under && !kept) ? origins_.erase(it) : std::next(it);
  }
}

std::string Problems::locate(const std::vector<std::string>& keys) const {
  for (const std::string& key : keys) {
    auto it = origins_.find(key);
    if (it != origins_.end()) return it->second;
  }
  // No key was written anywhere (all defaults): point at the nearest enclosing section.
  for (const std::string& key : keys) {
    std::string section = key;
    for (size_t dot; (dot = section.rfind('.')) != std::string::npos;) {
      section.resize(dot);
      auto it = origins_.find(section);
      if (it != origins_.end()) return it->second;
    }
  }
  return source_;
}

void Problems::add(const std::vector<std::string>& keys, const std::string& message) {
  add_at(locate(keys), message);
}

void Problems::add_at(const std::string& where, const std::string& message) {
  lines_.push_back(where + ": " + message);
}

void Problems::throw_if_any() {
  if (lines_.empty()) return;
  std::string text = join(lines_, "\n");
  lines_.clear();
  throw ConfigError(text);
}

// ---- Words and numbers -------------------------------------------------------------

int64_t edit_distance(const std::string& a, const std::string& b) {
  // One row of the classic dynamic programme: row[j] = distance(a[0..i), b[0..j)).
  std::vector<int64_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int64_t diagonal = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

static std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates,
                         const std::string& what) {
  const std::string* best = nullptr;
  int64_t best_distance = 0;
  for (const std::string& candidate : candidates) {
    const int64_t d = edit_distance(lower(word), lower(candidate));
    if (best == nullptr || d < best_distance) {
      best = &candidate;
      best_distance = d;
    }
  }
  // "Close": one edit for words of up to 3 letters (so that "lr" does not match every short
  // key), two up to 8 letters (a swapped pair, "modle", costs two), three beyond.
  if (best != nullptr) {
    const size_t longest = std::max(word.size(), best->size());
    const int64_t allowed = longest <= 3 ? 1 : longest <= 8 ? 2 : 3;
    if (best_distance <= allowed) return "; did you mean '" + *best + "'?";
  }
  return "; valid " + what + " are: " + join(candidates);
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? sep : "") + items[i];
  return out;
}

// ---- The rules ---------------------------------------------------------------------

namespace {

std::string str(int64_t v) { return std::to_string(v); }
std::string str(double v) { return format_number(v); }

// Training needs examples on top of what the data library accepts (>= 0).
void check_recall(const Config& c, OptionCheck& check) {
  const RecallTaskOptions& r = c.data.recall;
  if (!check.one_of("data.task", r.task, recall_task_names())) return;
  for (const RecallProblem& problem : recall_task_problems(r, "data.")) check.add(problem.keys, problem.message);
  if (r.num_train_examples == 0) check.at_least("data.num_train_examples", r.num_train_examples, 1);
  if (r.num_test_examples == 0) check.at_least("data.num_test_examples", r.num_test_examples, 1);
  const int64_t V = r.vocab_size;
  if (V >= 2 && c.model.vocab_size >= 1 && c.model.vocab_size < V)
    check.add({"model.vocab_size", "data.vocab_size"},
              "model.vocab_size = " + str(c.model.vocab_size) + " is smaller than the task's " +
                  "vocabulary data.vocab_size = " + str(V) + ": the model must embed every token " +
                  "id in [0, " + str(V) + "); set model.vocab_size >= " + str(V));
}

void check_text(const Config& c, OptionCheck& check) {
  const TextOptions& t = c.data.text;
  if (t.path.empty())
    check.add({"data.path", "data.kind"}, "data.path is not set: kind 'text' needs the path of a UTF-8 text file");
  if (check.one_of("data.tokenizer", t.tokenizer, {"char", "byte"}) && t.tokenizer == "byte" &&
      c.model.vocab_size >= 1 && c.model.vocab_size < 256)
    check.add({"model.vocab_size", "data.tokenizer"},
              "model.vocab_size = " + str(c.model.vocab_size) +
                  " is smaller than the byte tokenizer's 256 tokens; set model.vocab_size >= 256");
  check.at_least("data.seq_len", t.seq_len, 1);
  if (!(t.train_fraction > 0 && t.train_fraction < 1))
    check.add({"data.train_fraction"}, "data.train_fraction = " + str(t.train_fraction) + " is out of range (0, 1)");
  if (c.training.eval_interval == 0)
    check.add({"training.eval_interval", "data.kind"},
              "training.eval_interval = 0: text runs need an evaluation interval in steps (> 0); "
              "0 (once per epoch) applies to recall tasks only");
}

// The files themselves are checked when the run opens them (data/token_file.h); here
// only what the config alone decides.
void check_tokens(const Config& c, OptionCheck& check) {
  const TokenFileOptions& t = c.data.tokens;
  if (t.train_path.empty())
    check.add({"data.train_path", "data.kind"},
              "data.train_path is not set: kind 'tokens' needs a file of uint16 token ids to train on");
  if (t.val_path.empty())
    check.add({"data.val_path", "data.kind"},
              "data.val_path is not set: kind 'tokens' needs a file of uint16 token ids to validate on");
  check.one_of("data.format", t.format, {"auto", "nanogpt", "llmc"});
  // Token files hold uint16 ids, so no vocabulary beyond 65536 can occur.
  if (t.vocab_size < 1 || t.vocab_size > 65536)
    check.add({"data.vocab_size"}, "data.vocab_size = " + str(t.vocab_size) +
                                       " is out of range [1, 65536]: token files hold uint16 ids");
  else if (c.model.vocab_size >= 1 && c.model.vocab_size < t.vocab_size)
    check.add({"model.vocab_size", "data.vocab_size"},
              "model.vocab_size = " + str(c.model.vocab_size) + " is smaller than data.vocab_size = " +
                  str(t.vocab_size) + ": the model must embed every token id in [0, " + str(t.vocab_size) +
                  "); set model.vocab_size >= " + str(t.vocab_size));
  check.at_least("data.seq_len", t.seq_len, 1);
  if (c.training.eval_interval == 0)
    check.add({"training.eval_interval", "data.kind"},
              "training.eval_interval = 0: token-file runs need an evaluation interval in steps (> 0); "
              "0 (once per epoch) applies to recall tasks only");
}

}  // namespace

void check_config(const Config& c, Problems& p) {
  // Keys are written in full ("optimizer.lr"); the model's rules are the layers' own.
  OptionCheck check("", "model.d_model", [](const std::string& word, const std::vector<std::string>& choices) {
    return did_you_mean(word, choices, "choices");
  });
  const ModelOptions& m = c.model;
  OptionCheck model = check.with_prefix("model.");
  check_options(m, model);

  if (check.one_of("data.kind", c.data.kind, {"recall", "text", "tokens"})) {
    if (c.data.kind == "recall") check_recall(c, check);
    else if (c.data.kind == "text") check_text(c, check);
    else check_tokens(c, check);
    const int64_t L = c.data.seq_len();
    if (m.max_position_embeddings > 0 && m.max_position_embeddings < L)
      check.add({"model.max_position_embeddings", "data.seq_len"},
                "model.max_position_embeddings = " + str(m.max_position_embeddings) +
                    " is smaller than data.seq_len = " + str(L) +
                    " (set it >= seq_len, or 0 for no learned positions)");
  }

  const OptimizerConfig& o = c.optimizer;
  check.one_of("optimizer.type", o.type, {"adam", "adamw"});
  const bool lr_ok = check.positive("optimizer.lr", o.lr);
  check.in_range("optimizer.beta1", o.beta1, 0, 1);
  check.in_range("optimizer.beta2", o.beta2, 0, 1);
  check.positive("optimizer.eps", o.eps);
  check.non_negative("optimizer.weight_decay", o.weight_decay);
  check.non_negative("optimizer.grad_clip", o.grad_clip);

  const ScheduleConfig& s = c.schedule;
  const TrainingConfig& t = c.training;
  check.one_of("schedule.type", s.type, {"constant", "linear_warmup", "cosine"});
  const bool warmup_ok = check.at_least("schedule.warmup_steps", s.warmup_steps, 0);
  const bool min_lr_ok = check.non_negative("schedule.min_lr", s.min_lr);
  if (s.type == "cosine" && lr_ok && min_lr_ok && s.min_lr > o.lr)
    check.add({"schedule.min_lr", "optimizer.lr"},
              "schedule.min_lr = " + str(s.min_lr) + " exceeds optimizer.lr = " + str(o.lr) +
                  ": the cosine floor must not exceed the peak learning rate");

  const bool steps_ok = check.at_least("training.steps", t.steps, 0);
  const bool epochs_ok = check.at_least("training.epochs", t.epochs, 0);
  if (steps_ok && epochs_ok) {
    if (t.steps > 0 && t.epochs > 0)
      check.add({"training.epochs", "training.steps"},
                "training.steps = " + str(t.steps) + " and training.epochs = " + str(t.epochs) +
                    " are both set; set exactly one of them (the other to 0)");
    else if (t.steps == 0 && t.epochs == 0)
      check.add({"training.steps", "training.epochs", "training"},
                "neither training.steps nor training.epochs is set; set exactly one of them > 0");
  }
  // With epochs the number of steps is known only once the data is loaded.
  if (warmup_ok && steps_ok && t.steps > 0 && s.warmup_steps > t.steps)
    check.add({"schedule.warmup_steps", "training.steps"},
              "schedule.warmup_steps = " + str(s.warmup_steps) + " exceeds training.steps = " + str(t.steps));
  check.at_least("training.batch_size", t.batch_size, 1);
  check.at_least("training.eval_interval", t.eval_interval, 0);
  check.at_least("training.eval_batches", t.eval_batches, 0);
  check.in_range("training.early_stop_accuracy", t.early_stop_accuracy, 0, 1, /*closed=*/true);
  check.at_least("training.checkpoint_interval", t.checkpoint_interval, 0);
  check.one_of("training.parallel", t.parallel, {"auto", "ops", "batch"});

  check.at_least("logging.log_interval", c.logging.log_interval, 1);
  check.one_of("logging.level", c.logging.level, {"trace", "debug", "info", "warn", "error", "critical", "off"});

  for (const OptionProblem& problem : check.problems()) p.add(problem.keys, problem.message);
}

}  // namespace config_detail

void validate(const Config& config, const std::string& source_name) {
  config_detail::Problems problems(source_name);
  config_detail::check_config(config, problems);
  problems.throw_if_any();
}

// to_yaml prints every active key with a round-trip exact number format, so comparing the
// texts compares exactly the keys that matter.
bool operator==(const Config& a, const Config& b) { return to_yaml(a) == to_yaml(b); }

}  // namespace seqmix
