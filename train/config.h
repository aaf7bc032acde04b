// Run configuration: YAML (through yaml-cpp) into typed structs, validated as a whole.
//
// Layout (every key optional; defaults are the struct initialisers below and in
// layers/options.h and data/options.h; docs/config.md lists every key with its default):
//
//   model:      vocab_size, d_model, n_layers, norm, mlp, max_position_embeddings,
//               tie_embeddings, dropout,
//               mixer: {type, then only that type's options, as the mixer registry
//                 (layers/mixer_registry.cpp) lists them; docs/config.md has every key}
//   data:       kind (recall | text | tokens), seed, then for recall: task, vocab_size, seq_len,
//               num_kv_pairs, power_a, random_non_queries, num_tokens_to_copy,
//               num_train_examples, num_test_examples; for text: path, tokenizer, seq_len,
//               train_fraction; for tokens: train_path, val_path, format, vocab_size, seq_len
//   optimizer:  type, lr, beta1, beta2, eps, weight_decay, grad_clip
//   schedule:   type, warmup_steps, min_lr
//   training:   steps, epochs, batch_size, eval_interval, eval_batches,
//               early_stop_accuracy, seed, checkpoint_interval
//   logging:    log_interval, level
//
// Rules:
// - Every key is checked. An unknown key, a wrong type or an out-of-range value throws
//   ConfigError "FILE:LINE: problem"; an unknown key names the closest valid key (or lists
//   the valid ones). Options of another mixer type (num_heads under type: mamba) or of
//   another data kind (path under kind: recall) are unknown keys. Several problems are
//   reported together, one per line.
// - Overrides "a.b.c=value" (the CLI's --set) are applied after the file; the value is
//   parsed as a YAML scalar. Overrides of model.mixer.type and data.kind are applied first,
//   so that "--set model.mixer.d_state=32 --set model.mixer.type=mamba" works in any order;
//   switching the type drops the file's options of the old type (the new type starts from
//   its defaults). Problems caused by an override are reported as "--set KEY=VALUE: problem".
// - A relative data.path (text) or data.train_path / data.val_path (tokens) from a config
//   *file* is resolved against the file's directory (and made absolute, so that
//   a saved config works from any directory) if
//   the file exists there, otherwise it is left relative to the current directory. A path
//   given by --set is always relative to the current directory. parse_config never
//   resolves (it has no directory), so a resolved config saved in a checkpoint reloads as is.
// - Range and cross-field rules live in check_config in config.cpp, which calls the rules the
//   layers and the data library apply themselves (check_options in layers/, the recall
//   tasks' in data/), so that a config that validates also builds; reading, overrides and
//   to_yaml are in config_yaml.cpp.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/options.h"
#include "layers/options.h"

namespace seqmix {

// what() is "FILE:LINE: problem" (or "--set KEY=VALUE: problem", or "FILE: problem" when
// no line applies); several problems are separated by newlines.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct OptimizerConfig {
  std::string type = "adamw";  // adam | adamw
  double lr = 1e-3;            // peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.1;   // adamw only; docs/model.md#weight-decay-groups says which tensors decay
  double grad_clip = 1.0;      // global gradient-norm clip; 0 = off
  bool operator==(const OptimizerConfig&) const = default;
};

struct ScheduleConfig {
  std::string type = "cosine";  // constant | linear_warmup | cosine
  int64_t warmup_steps = 0;
  double min_lr = 0.0;          // cosine floor, an absolute learning rate
  bool operator==(const ScheduleConfig&) const = default;
};

struct TrainingConfig {
  int64_t steps = 0;    // exactly one of steps and epochs is > 0
  int64_t epochs = 0;
  int64_t batch_size = 64;
  int64_t eval_interval = 0;  // steps; 0 = once per epoch (recall only; text needs > 0)
  int64_t eval_batches = 20;  // text, tokens: batches per validation estimate; 0 = whole split
  double early_stop_accuracy = 0.0;  // stop when test accuracy >= this; 0 = off
  uint64_t seed = 0;                 // model initialisation and dropout
  int64_t checkpoint_interval = 0;   // steps; 0 = only the final checkpoint
  // How a step uses the threads: ops (every op split over them), batch (each thread
  // a slice of the batch, train/batch_threads.h) or auto (batch where it pays).
  std::string parallel = "auto";
  bool operator==(const TrainingConfig&) const = default;
};

struct LoggingConfig {
  int64_t log_interval = 10;    // steps between progress lines
  std::string level = "info";   // trace | debug | info | warn | error | critical | off
  bool operator==(const LoggingConfig&) const = default;
};

struct Config {
  ModelOptions model;
  DataOptions data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainingConfig training;
  LoggingConfig logging;
};

// Equal when every key that to_yaml prints is equal: options of the mixer types and the
// data kind that are not chosen are ignored (to_yaml does not print them).
bool operator==(const Config& a, const Config& b);

// Reads, parses, applies overrides ("a.b.c=value"), resolves data paths (see above) and
// validates. Throws ConfigError.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The same from text; source_name stands for the file name in messages.
Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides = {});

// The fully resolved config, every key with its value: parse_config(to_yaml(c), ...) == c.
std::string to_yaml(const Config& config);

// Range and cross-field rules; throws ConfigError "SOURCE: problem" listing every problem.
// load_config and parse_config call it with file lines instead.
void validate(const Config& config, const std::string& source_name = "config");

}  // namespace seqmix
