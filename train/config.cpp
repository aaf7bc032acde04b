// Configuration rules: every range and cross-field check in one place (check_config),
// and the machinery that locates and phrases problems. Parsing, overrides and to_yaml
// are in config_yaml.cpp.
#include "train/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <tuple>

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

std::string format_number(double x) {
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), x);
  return std::string(buffer, result.ptr);
}

// ---- The rules ---------------------------------------------------------------------

namespace {

std::string str(int64_t v) { return std::to_string(v); }
std::string str(double v) { return format_number(v); }

// Each check adds a problem and returns false when the value is out of range, so that
// cross-field rules run only on values that are individually sane (no modulo by zero).
bool at_least(Problems& p, const std::string& key, int64_t v, int64_t min) {
  if (v >= min) return true;
  p.add({key}, key + " = " + str(v) + " is out of range: must be >= " + str(min));
  return false;
}

bool positive(Problems& p, const std::string& key, double v) {
  if (v > 0 && std::isfinite(v)) return true;
  p.add({key}, key + " = " + str(v) + " is out of range: must be > 0");
  return false;
}

bool non_negative(Problems& p, const std::string& key, double v) {
  if (v >= 0 && std::isfinite(v)) return true;
  p.add({key}, key + " = " + str(v) + " is out of range: must be >= 0");
  return false;
}

// lo <= v < hi, or lo <= v <= hi when closed.
bool in_range(Problems& p, const std::string& key, double v, double lo, double hi,
              bool closed = false) {
  if (v >= lo && (closed ? v <= hi : v < hi)) return true;
  p.add({key}, key + " = " + str(v) + " is out of range [" + str(lo) + ", " + str(hi) +
                   (closed ? "]" : ")"));
  return false;
}

bool one_of(Problems& p, const std::string& key, const std::string& v,
            const std::vector<std::string>& options) {
  if (std::find(options.begin(), options.end(), v) != options.end()) return true;
  p.add({key}, key + " = '" + v + "' is not a valid choice" + did_you_mean(v, options, "choices"));
  return false;
}

// heads divide a width; `width_text` says where the width comes from.
void heads_divide(Problems& p, int64_t width, const std::string& width_text, int64_t heads,
                  const std::string& what) {
  if (width % heads == 0) return;
  p.add({"model.mixer.num_heads", "model.d_model"},
        width_text + " = " + str(width) + " is not divisible by model.mixer.num_heads = " +
            str(heads) + " (" + what + ")");
}

void check_mixer(const ModelOptions& m, bool d_model_ok, Problems& p) {
  const MixerOptions& x = m.mixer;
  const int64_t D = m.d_model;
  if (!one_of(p, "model.mixer.type", x.type,
              {"attention", "linear_attention", "gla", "h3", "mamba"}))
    return;
  if (x.type == "attention") {
    if (at_least(p, "model.mixer.num_heads", x.attention.num_heads, 1) && d_model_ok)
      heads_divide(p, D, "model.d_model", x.attention.num_heads, "each head takes d_model / num_heads channels");
    in_range(p, "model.mixer.dropout", x.attention.dropout, 0, 1);
  } else if (x.type == "linear_attention") {
    if (at_least(p, "model.mixer.num_heads", x.linear_attention.num_heads, 1) && d_model_ok)
      heads_divide(p, D, "model.d_model", x.linear_attention.num_heads, "each head takes d_model / num_heads channels");
    positive(p, "model.mixer.eps", x.linear_attention.eps);
  } else if (x.type == "gla") {
    const GlaOptions& g = x.gla;
    const bool heads_ok = at_least(p, "model.mixer.num_heads", g.num_heads, 1);
    const bool k_ok = positive(p, "model.mixer.expand_k", g.expand_k);
    const bool v_ok = positive(p, "model.mixer.expand_v", g.expand_v);
    at_least(p, "model.mixer.gate_low_rank_dim", g.gate_low_rank_dim, 1);
    positive(p, "model.mixer.gate_logit_normalizer", g.gate_logit_normalizer);
    positive(p, "model.mixer.norm_eps", g.norm_eps);
    // Dk = D * expand_k and Dv = D * expand_v must be whole numbers of channels that the
    // heads split evenly.
    for (const auto& [name, expand, ok] :
         {std::tuple<std::string, double, bool>{"expand_k", g.expand_k, k_ok},
          std::tuple<std::string, double, bool>{"expand_v", g.expand_v, v_ok}}) {
      if (!ok || !d_model_ok) continue;
      const double width = static_cast<double>(D) * expand;
      const double rounded = std::round(width);
      const std::string text = "model.d_model * model.mixer." + name;
      if (std::fabs(width - rounded) > 1e-9 * std::max(1.0, width) || rounded < 1) {
        p.add({"model.mixer." + name, "model.d_model"},
              text + " = " + str(D) + " * " + str(expand) + " = " + str(width) +
                  " is not a positive whole number of channels");
      } else if (heads_ok) {
        heads_divide(p, static_cast<int64_t>(rounded), text, g.num_heads,
                     "gla splits it into equal heads");
      }
    }
  } else if (x.type == "h3") {
    if (at_least(p, "model.mixer.d_state", x.h3.d_state, 2) && x.h3.d_state % 2 != 0)
      p.add({"model.mixer.d_state"}, "model.mixer.d_state = " + str(x.h3.d_state) +
                                         " must be even (h3's diagonal SSM uses d_state/2 complex modes)");
    if (at_least(p, "model.mixer.head_dim", x.h3.head_dim, 1) && d_model_ok &&
        D % x.h3.head_dim != 0)
      p.add({"model.mixer.head_dim", "model.d_model"},
            "model.d_model = " + str(D) + " is not divisible by model.mixer.head_dim = " +
                str(x.h3.head_dim) + " (h3 has d_model / head_dim heads)");
  } else if (x.type == "mamba") {
    const MambaOptions& s = x.mamba;
    at_least(p, "model.mixer.d_state", s.d_state, 1);
    at_least(p, "model.mixer.d_conv", s.d_conv, 1);
    at_least(p, "model.mixer.expand", s.expand, 1);
    if (s.dt_rank < 0)
      p.add({"model.mixer.dt_rank"}, "model.mixer.dt_rank = " + str(s.dt_rank) +
                                         " is out of range: must be a positive integer or 'auto'");
    const bool min_ok = positive(p, "model.mixer.dt_min", s.dt_min);
    const bool max_ok = positive(p, "model.mixer.dt_max", s.dt_max);
    if (min_ok && max_ok && !(s.dt_min < s.dt_max))
      p.add({"model.mixer.dt_min", "model.mixer.dt_max"},
            "model.mixer.dt_min = " + str(s.dt_min) + " must be smaller than model.mixer.dt_max = " +
                str(s.dt_max));
    non_negative(p, "model.mixer.dt_init_floor", s.dt_init_floor);
  }
}

// Necessary conditions for each recall task to be constructible (SPEC section 3). The
// data library's own validate() is the authority on its generators; these catch the
// common mistakes early, with file and line.
void check_recall(const Config& c, Problems& p) {
  const RecallTaskOptions& r = c.data.recall;
  const bool task_ok = one_of(p, "data.task", r.task,
                              {"mqar", "associative_recall", "induction_heads", "selective_copying"});
  bool v_ok = at_least(p, "data.vocab_size", r.vocab_size, 2);
  if (v_ok && r.vocab_size > 2147483647) {  // token ids are int32 in the data library
    p.add({"data.vocab_size"}, "data.vocab_size = " + str(r.vocab_size) +
                                   " is out of range: must be < 2^31");
    v_ok = false;
  }
  const bool l_ok = at_least(p, "data.seq_len", r.seq_len, 1);
  const bool k_ok = at_least(p, "data.num_kv_pairs", r.num_kv_pairs, 1);
  positive(p, "data.power_a", r.power_a);
  const bool m_ok = at_least(p, "data.num_tokens_to_copy", r.num_tokens_to_copy, 1);
  at_least(p, "data.num_train_examples", r.num_train_examples, 1);
  at_least(p, "data.num_test_examples", r.num_test_examples, 1);

  const int64_t V = r.vocab_size, L = r.seq_len, K = r.num_kv_pairs;
  if (task_ok && l_ok && r.task == "mqar") {
    if (L % 2 != 0)
      p.add({"data.seq_len"}, "data.seq_len = " + str(L) +
                                  " must be even for mqar (the query region is made of pairs)");
    if (v_ok && V <= L)
      p.add({"data.vocab_size", "data.seq_len"},
            "mqar needs data.vocab_size > data.seq_len, got vocab_size = " + str(V) +
                ", seq_len = " + str(L));
    if (k_ok && 4 * K > L)
      p.add({"data.num_kv_pairs", "data.seq_len"},
            "mqar needs 4 * data.num_kv_pairs <= data.seq_len (2K tokens of pairs, then K "
            "queries in (seq_len - 2K) / 2 slots), got num_kv_pairs = " + str(K) +
                ", seq_len = " + str(L) + "; use num_kv_pairs <= " + str(L / 4));
  } else if (task_ok && k_ok && r.task == "associative_recall") {
    if (l_ok && 2 * K + 1 > L)
      p.add({"data.num_kv_pairs", "data.seq_len"},
            "associative_recall needs 2 * data.num_kv_pairs + 1 <= data.seq_len (the pairs, then "
            "the query), got num_kv_pairs = " + str(K) + ", seq_len = " + str(L));
    if (v_ok && V / 2 - 1 < K)
      p.add({"data.vocab_size", "data.num_kv_pairs"},
            "associative_recall draws distinct keys from [1, vocab_size / 2): data.vocab_size = " +
                str(V) + " is too small for num_kv_pairs = " + str(K) + "; use vocab_size >= " +
                str(2 * (K + 1)));
  } else if (task_ok && r.task == "induction_heads") {
    if (l_ok && L < 3) p.add({"data.seq_len"}, "induction_heads needs data.seq_len >= 3, got " + str(L));
    if (v_ok && V < 3)
      p.add({"data.vocab_size"}, "induction_heads needs data.vocab_size >= 3 (the special token "
                                 "and two ordinary ones), got " + str(V));
  } else if (task_ok && r.task == "selective_copying") {
    if (l_ok && m_ok && 2 * r.num_tokens_to_copy > L)
      p.add({"data.num_tokens_to_copy", "data.seq_len"},
            "selective_copying needs 2 * data.num_tokens_to_copy <= data.seq_len (the data "
            "tokens, then as many markers), got num_tokens_to_copy = " +
                str(r.num_tokens_to_copy) + ", seq_len = " + str(L));
    if (v_ok && V < 3)
      p.add({"data.vocab_size"}, "selective_copying needs data.vocab_size >= 3 (blank, marker "
                                 "and data tokens), got " + str(V));
  }
  if (v_ok && c.model.vocab_size >= 1 && c.model.vocab_size < V)
    p.add({"model.vocab_size", "data.vocab_size"},
          "model.vocab_size = " + str(c.model.vocab_size) + " is smaller than the task's " +
              "vocabulary data.vocab_size = " + str(V) + ": the model must embed every token " +
              "id in [0, " + str(V) + "); set model.vocab_size >= " + str(V));
}

void check_text(const Config& c, Problems& p) {
  const TextOptions& t = c.data.text;
  if (t.path.empty())
    p.add({"data.path", "data.kind"}, "data.path is not set: kind 'text' needs the path of a UTF-8 text file");
  if (one_of(p, "data.tokenizer", t.tokenizer, {"char", "byte"}) && t.tokenizer == "byte" &&
      c.model.vocab_size >= 1 && c.model.vocab_size < 256)
    p.add({"model.vocab_size", "data.tokenizer"},
          "model.vocab_size = " + str(c.model.vocab_size) +
              " is smaller than the byte tokenizer's 256 tokens; set model.vocab_size >= 256");
  at_least(p, "data.seq_len", t.seq_len, 1);
  if (!(t.train_fraction > 0 && t.train_fraction < 1))
    p.add({"data.train_fraction"}, "data.train_fraction = " + str(t.train_fraction) +
                                       " is out of range (0, 1)");
  if (c.training.eval_interval == 0)
    p.add({"training.eval_interval", "data.kind"},
          "training.eval_interval = 0: text runs need an evaluation interval in steps (> 0); "
          "0 (once per epoch) applies to recall tasks only");
}

}  // namespace

void check_config(const Config& c, Problems& p) {
  const ModelOptions& m = c.model;
  at_least(p, "model.vocab_size", m.vocab_size, 1);
  const bool d_model_ok = at_least(p, "model.d_model", m.d_model, 1);
  at_least(p, "model.n_layers", m.n_layers, 1);
  one_of(p, "model.norm", m.norm, {"layernorm", "rmsnorm"});
  one_of(p, "model.mlp", m.mlp, {"none", "gelu"});
  const bool positions_ok = at_least(p, "model.max_position_embeddings", m.max_position_embeddings, 0);
  in_range(p, "model.dropout", m.dropout, 0, 1);
  check_mixer(m, d_model_ok, p);

  if (one_of(p, "data.kind", c.data.kind, {"recall", "text"})) {
    if (c.data.kind == "recall") check_recall(c, p);
    else check_text(c, p);
    const int64_t L = c.data.kind == "recall" ? c.data.recall.seq_len : c.data.text.seq_len;
    if (positions_ok && m.max_position_embeddings > 0 && m.max_position_embeddings < L)
      p.add({"model.max_position_embeddings", "data.seq_len"},
            "model.max_position_embeddings = " + str(m.max_position_embeddings) +
                " is smaller than data.seq_len = " + str(L) +
                " (set it >= seq_len, or 0 for no learned positions)");
  }

  const OptimizerConfig& o = c.optimizer;
  one_of(p, "optimizer.type", o.type, {"adam", "adamw"});
  const bool lr_ok = positive(p, "optimizer.lr", o.lr);
  in_range(p, "optimizer.beta1", o.beta1, 0, 1);
  in_range(p, "optimizer.beta2", o.beta2, 0, 1);
  positive(p, "optimizer.eps", o.eps);
  non_negative(p, "optimizer.weight_decay", o.weight_decay);
  non_negative(p, "optimizer.grad_clip", o.grad_clip);

  const ScheduleConfig& s = c.schedule;
  const TrainingConfig& t = c.training;
  one_of(p, "schedule.type", s.type, {"constant", "linear_warmup", "cosine"});
  const bool warmup_ok = at_least(p, "schedule.warmup_steps", s.warmup_steps, 0);
  const bool min_lr_ok = non_negative(p, "schedule.min_lr", s.min_lr);
  if (s.type == "cosine" && lr_ok && min_lr_ok && s.min_lr > o.lr)
    p.add({"schedule.min_lr", "optimizer.lr"},
          "schedule.min_lr = " + str(s.min_lr) + " exceeds optimizer.lr = " + str(o.lr) +
              ": the cosine floor must not exceed the peak learning rate");

  const bool steps_ok = at_least(p, "training.steps", t.steps, 0);
  const bool epochs_ok = at_least(p, "training.epochs", t.epochs, 0);
  if (steps_ok && epochs_ok) {
    if (t.steps > 0 && t.epochs > 0)
      p.add({"training.epochs", "training.steps"},
            "training.steps = " + str(t.steps) + " and training.epochs = " + str(t.epochs) +
                " are both set; set exactly one of them (the other to 0)");
    else if (t.steps == 0 && t.epochs == 0)
      p.add({"training.steps", "training.epochs", "training"},
            "neither training.steps nor training.epochs is set; set exactly one of them > 0");
  }
  // With epochs the number of steps is known only once the data is loaded.
  if (warmup_ok && steps_ok && t.steps > 0 && s.warmup_steps > t.steps)
    p.add({"schedule.warmup_steps", "training.steps"},
          "schedule.warmup_steps = " + str(s.warmup_steps) + " exceeds training.steps = " +
              str(t.steps));
  at_least(p, "training.batch_size", t.batch_size, 1);
  at_least(p, "training.eval_interval", t.eval_interval, 0);
  at_least(p, "training.eval_batches", t.eval_batches, 0);
  in_range(p, "training.early_stop_accuracy", t.early_stop_accuracy, 0, 1, /*closed=*/true);
  at_least(p, "training.checkpoint_interval", t.checkpoint_interval, 0);

  at_least(p, "logging.log_interval", c.logging.log_interval, 1);
  one_of(p, "logging.level", c.logging.level,
         {"trace", "debug", "info", "warn", "error", "critical", "off"});
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
