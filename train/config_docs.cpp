#include "train/config_docs.h"

#include <yaml-cpp/yaml.h>

#include <map>
#include <stdexcept>
#include <vector>

#include "layers/mixer_registry.h"
#include "train/config.h"

namespace seqmix {

namespace {

// One line per key outside model.mixer (the registry describes those). A key that the
// parser knows and this table does not is an error, so the reference cannot lag behind.
const std::map<std::string, std::string>& help() {
  static const std::map<std::string, std::string> h = {
      {"model.vocab_size", "tokens the model embeds; at least the data's vocabulary"},
      {"model.d_model", "width D of the residual stream"},
      {"model.n_layers", "blocks (mixer, then MLP if any), >= 1"},
      {"model.norm", "`layernorm` or `rmsnorm`, before the mixer, the MLP and the head"},
      {"model.mlp", "`none` or `gelu` (a 4D-wide MLP after each mixer)"},
      {"model.max_position_embeddings", "learned positions for sequences up to this length; 0 = none"},
      {"model.tie_embeddings", "the output head reuses the token embeddings"},
      {"model.dropout", "dropout on the embeddings and on each residual branch, in [0, 1)"},
      {"model.mixer.type", "the sequence mixer; one of the types below"},
      {"data.kind", "`recall` (a synthetic task), `text` (a UTF-8 file) or `tokens` (pre-tokenized uint16 files)"},
      {"data.seed", "data seed; the train and test streams derive from it disjointly"},
      {"data.task", "`mqar`, `associative_recall`, `induction_heads` or `selective_copying`"},
      {"data.vocab_size", "the vocabulary V (tokens: every id in the files must be < V, at most 65536)"},
      {"data.seq_len", "sequence length L (text, tokens: the context; windows of L+1 tokens)"},
      {"data.num_kv_pairs", "key-value pairs K (mqar: 4K <= L; associative_recall: 2K+1 <= L)"},
      {"data.power_a", "mqar: query positions drawn with p(g) proportional to (g+1)^(power_a-1), > 0"},
      {"data.random_non_queries", "mqar: fill the query region's gaps with random tokens"},
      {"data.num_tokens_to_copy", "selective_copying: data tokens M to copy, 2M <= L"},
      {"data.num_train_examples", "training examples generated, >= 1"},
      {"data.num_test_examples", "test examples generated, >= 1"},
      {"data.path", "the text file; a relative path is taken from the config file's folder if it exists there"},
      {"data.tokenizer", "`char` (the corpus's distinct characters) or `byte` (256)"},
      {"data.train_path", "tokens: the training file; a relative path is taken from the config file's folder if it exists there"},
      {"data.val_path", "tokens: the validation file, resolved as data.train_path"},
      {"data.format",
       "tokens: `nanogpt` (raw uint16), `llmc` (llm.c's 1024-byte header, then uint16) or `auto` (llmc if the file "
       "starts with its magic number)"},
      {"data.train_fraction", "the leading fraction of tokens that trains, in (0, 1); the rest validates"},
      {"optimizer.type", "`adam` or `adamw`"},
      {"optimizer.lr", "peak learning rate, > 0"},
      {"optimizer.beta1", "first-moment decay, in [0, 1)"},
      {"optimizer.beta2", "second-moment decay, in [0, 1)"},
      {"optimizer.eps", "added to the root of the second moment, > 0"},
      {"optimizer.weight_decay",
       "decoupled (adamw) or L2 (adam) decay of weights of 2+ dimensions, not of biases, norms or SSM parameters"},
      {"optimizer.grad_clip", "global gradient-norm clip; 0 = off"},
      {"schedule.type", "`constant`, `linear_warmup` or `cosine`"},
      {"schedule.warmup_steps", "linear warmup from 0 to optimizer.lr"},
      {"schedule.min_lr", "cosine floor, an absolute learning rate <= optimizer.lr"},
      {"training.steps", "optimizer steps; exactly one of steps and epochs is > 0"},
      {"training.epochs", "passes over the recall training set"},
      {"training.batch_size", "sequences per step"},
      {"training.eval_interval", "steps between evaluations; 0 = once per epoch (recall only)"},
      {"training.eval_batches", "text, tokens: batches per validation estimate; 0 = the whole split"},
      {"training.early_stop_accuracy", "stop once test accuracy reaches this; 0 = off"},
      {"training.seed", "seed of the initialisation and dropout"},
      {"training.checkpoint_interval", "steps between checkpoints; 0 = only the final one"},
      {"training.parallel",
       "how a step uses the threads: `ops` splits every op, `batch` gives each thread a slice of the batch, "
       "`auto` chooses batch for models of d_model <= 256 whose batch divides among the threads"},
      {"logging.log_interval", "steps between progress lines"},
      {"logging.level", "`trace`, `debug`, `info`, `warn`, `error`, `critical` or `off`"},
  };
  return h;
}

// (path, printed default) of every value key of a config, in print order.
void collect(const YAML::Node& node, const std::string& section,
             std::vector<std::pair<std::string, std::string>>& out) {
  for (const auto& entry : node) {
    const std::string path = section.empty() ? entry.first.Scalar() : section + "." + entry.first.Scalar();
    if (entry.second.IsMap()) collect(entry.second, path, out);
    else out.emplace_back(path, entry.second.Scalar());
  }
}

std::vector<std::pair<std::string, std::string>> keys_of(const Config& c) {
  std::vector<std::pair<std::string, std::string>> out;
  collect(YAML::Load(to_yaml(c)), "", out);
  return out;
}

std::string row(const std::string& key, const std::string& value, const std::string& meaning) {
  return "| `" + key + "` | `" + (value.empty() ? "\"\"" : value) + "` | " + meaning + " |\n";
}

const std::string& help_of(const std::string& path) {
  auto it = help().find(path);
  if (it == help().end())
    throw std::logic_error("config_reference_markdown: no description of key '" + path +
                           "' (add it to train/config_docs.cpp)");
  return it->second;
}

const char* kHeader = "| key | default | meaning |\n|---|---|---|\n";

}  // namespace

std::string config_reference_markdown() {
  std::string md =
      "# Configuration keys\n\n"
      "<!-- Generated by seqmix::config_reference_markdown() (train/config_docs.cpp) from the\n"
      "     parser's key table and the mixer registry; do not edit by hand. Regenerate with\n"
      "     SEQMIX_UPDATE_DOCS=1 ./build/test_config --gtest_filter='*ConfigReference*'. -->\n\n"
      "A run is one YAML file; every key is optional and takes the default below. Unknown keys,\n"
      "wrong types and out-of-range values are errors that name the file and line. Any key can\n"
      "be overridden from the command line with `--set section.key=value`. The options under\n"
      "`model.mixer` depend on `model.mixer.type`, and those under `data` on `data.kind`: the\n"
      "options of another type or kind are unknown keys. Checkpoints store the resolved config,\n"
      "every key with its value, in this format.\n";
  const Config defaults;
  std::string section;
  for (const auto& [path, value] : keys_of(defaults)) {
    if (path.rfind("model.mixer.", 0) == 0 && path != "model.mixer.type") continue;
    if (path.rfind("data.", 0) == 0 && path != "data.kind" && path != "data.seed") continue;
    const std::string top = path.substr(0, path.find('.'));
    if (top != section) {
      section = top;
      md += "\n## " + section + "\n\n" + kHeader;
    }
    md += row(path, value, help_of(path));
    if (path == "data.seed") {
      for (const char* kind : {"recall", "text", "tokens"}) {
        Config c;
        c.data.kind = kind;
        md += std::string("\n### data, kind: ") + kind + "\n\n" + kHeader;
        for (const auto& [p, v] : keys_of(c))
          if (p.rfind("data.", 0) == 0 && p != "data.kind" && p != "data.seed") md += row(p, v, help_of(p));
      }
    }
  }
  md += "\n## model.mixer, by type\n\nThe options of each `model.mixer.type`, from the mixer registry "
        "(layers/mixer_registry.cpp).\n";
  for (const MixerEntry& e : mixer_registry()) {
    Config c;
    c.model.mixer.type = e.name;
    std::map<std::string, std::string> defaults_of;
    for (const auto& [p, v] : keys_of(c)) defaults_of[p] = v;
    md += "\n### " + e.name + "\n\n" + e.summary + ".\n\n" + kHeader;
    for (const MixerOption& o : e.options) {
      const std::string path = "model.mixer." + o.key;
      md += row(path, defaults_of.at(path), o.help);
    }
  }
  return md;
}

}  // namespace seqmix
