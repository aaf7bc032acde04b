// Configuration: unknown keys, wrong types and out-of-range values are reported with file,
// line and a suggestion; --set overrides; to_yaml round trips.
#include "layers/mixer_registry.h"
#include "layers/model.h"
#include "tests/support/file_testing.h"
#include "train/config.h"
#include "train/config_docs.h"
#include "train/sweep.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#ifndef SEQMIX_SOURCE_DIR
#define SEQMIX_SOURCE_DIR "."
#endif

namespace seqmix {
namespace {

using seqmix::testing::contains;

// A valid base: a small MQAR run; tests append or override keys.
const std::string kBase =
    "model:\n"            // 1
    "  d_model: 64\n"     // 2
    "  mixer:\n"          // 3
    "    type: attention\n"  // 4
    "    num_heads: 2\n"  // 5
    "data:\n"             // 6
    "  task: mqar\n"      // 7
    "  seq_len: 64\n"     // 8
    "  num_kv_pairs: 4\n" // 9
    "training:\n"         // 10
    "  steps: 100\n";     // 11

// The message of the ConfigError that parsing throws; fails the test if none is thrown.
std::string error_of(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(yaml, "run.yaml", overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError for:\n" << yaml;
  return "";
}

TEST(Config, BaseIsValid) {
  const Config c = parse_config(kBase, "run.yaml");
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.model.mixer.type, "attention");
  EXPECT_EQ(c.model.mixer.attention.num_heads, 2);
  EXPECT_EQ(c.data.recall.num_kv_pairs, 4);
  EXPECT_EQ(c.training.steps, 100);
  EXPECT_EQ(c.optimizer.type, "adamw");  // untouched keys keep their defaults
}

TEST(Config, UnknownKeyNamesLineAndClosestKey) {
  const std::string yaml =
      "# a comment\n"
      "model:\n"
      "  n_layers: 2\n"
      "  d_modle: 64\n"
      "training:\n"
      "  steps: 10\n";
  EXPECT_EQ(error_of(yaml), "run.yaml:4: unknown key 'd_modle' in model; did you mean 'd_model'?");
  EXPECT_TRUE(contains(error_of("training:\n  steps: 10\n  batchsize: 8\n"),
                       "run.yaml:3: unknown key 'batchsize' in training; did you mean 'batch_size'?"));
  EXPECT_TRUE(contains(error_of("modle:\n  d_model: 64\n"),
                       "run.yaml:1: unknown key 'modle' at the top level; did you mean 'model'?"));
}

TEST(Config, UnknownKeyWithNothingCloseListsValidKeys) {
  const std::string message = error_of("optimizer:\n  learning_rate: 0.1\ntraining:\n  steps: 10\n");
  EXPECT_TRUE(contains(message, "run.yaml:2: unknown key 'learning_rate' in optimizer"));
  EXPECT_TRUE(contains(message, "valid keys are: type, lr, beta1, beta2, eps, weight_decay, grad_clip"))
      << message;
}

TEST(Config, OptionOfAnotherMixerIsUnknown) {
  const std::string yaml =
      "model:\n"
      "  mixer:\n"
      "    num_heads: 4\n"  // before the type: the type decides, wherever it is written
      "    type: mamba\n"
      "training:\n"
      "  steps: 10\n";
  const std::string message = error_of(yaml);
  EXPECT_TRUE(contains(message, "run.yaml:3: unknown key 'num_heads' in model.mixer for type 'mamba'"))
      << message;
  EXPECT_TRUE(contains(message, "attention")) << message;  // says whose option it is
  EXPECT_TRUE(contains(message, "d_state")) << message;    // and lists mamba's keys
}

TEST(Config, OptionOfAnotherDataKindIsUnknown) {
  const std::string message = error_of("data:\n  kind: recall\n  path: input.txt\n");
  EXPECT_TRUE(contains(message, "run.yaml:3: unknown key 'path' in data for kind 'recall'")) << message;
}

TEST(Config, UnknownMixerTypeSuggests) {
  EXPECT_EQ(error_of("model:\n  mixer:\n    type: mamaba\n    d_state: 8\n"),
            "run.yaml:3: model.mixer.type = 'mamaba' is not a valid choice; did you mean 'mamba'?");
}

TEST(Config, WrongTypes) {
  EXPECT_EQ(error_of("model:\n  d_model: abc\ntraining:\n  steps: 10\n"),
            "run.yaml:2: model.d_model: expected an integer, got 'abc'");
  EXPECT_EQ(error_of("model:\n  d_model: 64.5\n"),
            "run.yaml:2: model.d_model: expected an integer, got '64.5'");
  EXPECT_EQ(error_of("model:\n  tie_embeddings: maybe\n"),
            "run.yaml:2: model.tie_embeddings: expected true or false, got 'maybe'");
  EXPECT_EQ(error_of("optimizer:\n  lr: [1, 2]\n"),
            "run.yaml:2: optimizer.lr: expected a finite number, got a list");
  EXPECT_EQ(error_of("training:\n  seed: -1\n"),
            "run.yaml:2: training.seed: expected a non-negative integer, got '-1'");
  EXPECT_EQ(error_of("model:\n  d_model:\n"),
            "run.yaml:2: model.d_model: expected an integer, got nothing (null)");
  EXPECT_EQ(error_of("model: 3\n"), "run.yaml:1: model: expected a map of keys, got '3'");
  EXPECT_TRUE(contains(error_of("model:\n  d_model: 99999999999999999999\n"),
                       "run.yaml:2: model.d_model = 99999999999999999999 is out of range"));
}

TEST(Config, DuplicateKey) {
  EXPECT_EQ(error_of(kBase + "  eval_interval: 5\n" "model:\n  dropout: 0.5\n"),
            "run.yaml:13: duplicate key 'model' in the top level (first at line 1)");
  EXPECT_EQ(error_of("training:\n  steps: 10\n  steps: 20\n"),
            "run.yaml:3: duplicate key 'steps' in training (first at line 2)");
}

TEST(Config, OutOfRange) {
  const std::string yaml =
      "model:\n"
      "  dropout: 1.5\n"
      "training:\n"
      "  steps: 10\n";
  EXPECT_EQ(error_of(yaml), "run.yaml:2: model.dropout = 1.5 is out of range [0, 1)");
  EXPECT_EQ(error_of("model:\n  d_model: 0\ntraining:\n  steps: 10\n"),
            "run.yaml:2: model.d_model = 0 is out of range: must be >= 1");
  EXPECT_EQ(error_of("optimizer:\n  beta2: 1.0\ntraining:\n  steps: 10\n"),
            "run.yaml:2: optimizer.beta2 = 1 is out of range [0, 1)");
  EXPECT_EQ(error_of("model:\n  norm: batchnorm\ntraining:\n  steps: 10\n"),
            "run.yaml:2: model.norm = 'batchnorm' is not a valid choice; valid choices are: "
            "layernorm, rmsnorm");
}

TEST(Config, AllProblemsAreReportedTogether) {
  const std::string message = error_of(
      "model:\n  dropout: -0.1\noptimizer:\n  lr: 0\ntraining:\n  steps: 10\n  batch_size: 0\n");
  EXPECT_TRUE(contains(message, "run.yaml:2: model.dropout = -0.1 is out of range")) << message;
  EXPECT_TRUE(contains(message, "run.yaml:4: optimizer.lr = 0 is out of range: must be > 0")) << message;
  EXPECT_TRUE(contains(message, "run.yaml:7: training.batch_size = 0")) << message;
}

TEST(Config, YamlSyntaxErrorNamesTheLine) {
  const std::string yaml =
      "model:\n"
      "  d_model: 64\n"
      "   n_layers: 2\n"  // bad indentation
      "training:\n"
      "  steps: 10\n";
  const std::string message = error_of(yaml);
  EXPECT_TRUE(contains(message, "run.yaml:3: YAML syntax error")) << message;
  EXPECT_TRUE(contains(error_of("model: {d_model: 64\n"), "run.yaml:")) << "unclosed flow map";
}

TEST(Config, OverrideNestedKeys) {
  const Config c = parse_config(kBase, "run.yaml", {"model.mixer.num_heads=4", "model.d_model=128"});
  EXPECT_EQ(c.model.mixer.attention.num_heads, 4);
  EXPECT_EQ(c.model.d_model, 128);
  const Config d = parse_config(kBase, "run.yaml",
                                {"optimizer.lr=3e-4", "data.random_non_queries=false", "training.seed=7"});
  EXPECT_EQ(d.optimizer.lr, 3e-4);
  EXPECT_FALSE(d.data.recall.random_non_queries);
  EXPECT_EQ(d.training.seed, 7u);
}

TEST(Config, OverrideProblemsNameTheOverride) {
  EXPECT_EQ(error_of(kBase, {"model.d_model=abc"}),
            "--set model.d_model=abc: model.d_model: expected an integer, got 'abc'");
  // A rule broken by an override points at the override, not at the file.
  EXPECT_EQ(error_of(kBase, {"model.mixer.num_heads=3"}),
            "--set model.mixer.num_heads=3: model.d_model = 64 is not divisible by "
            "model.mixer.num_heads = 3 (each head takes d_model / num_heads channels)");
}

TEST(Config, OverrideOfUnknownKey) {
  EXPECT_EQ(error_of(kBase, {"model.d_modle=64"}),
            "--set model.d_modle=64: unknown key 'd_modle' in model; did you mean 'd_model'?");
  EXPECT_EQ(error_of(kBase, {"modle.d_model=64"}),
            "--set modle.d_model=64: unknown key 'modle' at the top level; did you mean 'model'?");
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.d_state=8"}),
                       "--set model.mixer.d_state=8: unknown key 'd_state' in model.mixer for type "
                       "'attention'"));
  EXPECT_TRUE(contains(error_of(kBase, {"model=64"}), "'model' is a section"));
  EXPECT_TRUE(contains(error_of(kBase, {"model.d_model"}), "expected KEY=VALUE"));
}

TEST(Config, OverrideSwitchesMixerType) {
  // The file's attention options are dropped; the d_state override is applied after the
  // switch although it is written first.
  const Config c =
      parse_config(kBase, "run.yaml", {"model.mixer.d_state=32", "model.mixer.type=mamba"});
  EXPECT_EQ(c.model.mixer.type, "mamba");
  EXPECT_EQ(c.model.mixer.mamba.d_state, 32);
  EXPECT_EQ(c.model.mixer.mamba.d_conv, MambaOptions{}.d_conv);
  EXPECT_FALSE(contains(to_yaml(c), "num_heads"));

  const Config h = parse_config(kBase, "run.yaml", {"model.mixer.type=h3", "model.mixer.d_state=8"});
  EXPECT_EQ(h.model.mixer.type, "h3");
  EXPECT_EQ(h.model.mixer.h3.d_state, 8);

  EXPECT_EQ(error_of(kBase, {"model.mixer.type=mamaba"}),
            "--set model.mixer.type=mamaba: model.mixer.type = 'mamaba' is not a valid choice; "
            "did you mean 'mamba'?");
  // h3 needs an even d_state; the message points at the override that set it.
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.type=h3", "model.mixer.d_state=7"}),
                       "--set model.mixer.d_state=7: model.mixer.d_state = 7 must be even"));
}

TEST(Config, OverrideSwitchesDataKind) {
  const Config c = parse_config(kBase, "run.yaml",
                                {"data.path=corpus.txt", "data.kind=text", "training.eval_interval=50"});
  EXPECT_EQ(c.data.kind, "text");
  EXPECT_EQ(c.data.text.path, "corpus.txt");
  // The file's seq_len was recall's; the text seq_len keeps its default.
  EXPECT_EQ(c.data.text.seq_len, TextOptions{}.seq_len);
}

// data.kind: tokens (pre-tokenized uint16 files): its keys, its rules and its paths.
const std::string kTokens =
    "model:\n"                      // 1
    "  vocab_size: 512\n"           // 2
    "data:\n"                       // 3
    "  kind: tokens\n"              // 4
    "  train_path: train.bin\n"     // 5
    "  val_path: val.bin\n"         // 6
    "  vocab_size: 500\n"           // 7
    "  seq_len: 32\n"               // 8
    "training:\n"                   // 9
    "  steps: 10\n"                 // 10
    "  eval_interval: 5\n";         // 11

TEST(Config, TokensKind) {
  const Config c = parse_config(kTokens, "run.yaml", {"data.format=llmc"});
  EXPECT_EQ(c.data.kind, "tokens");
  EXPECT_EQ(c.data.tokens.train_path, "train.bin");
  EXPECT_EQ(c.data.tokens.val_path, "val.bin");
  EXPECT_EQ(c.data.tokens.format, "llmc");
  EXPECT_EQ(c.data.tokens.vocab_size, 500);
  EXPECT_EQ(c.data.seq_len(), 32);
  EXPECT_TRUE(parse_config(to_yaml(c), "back.yaml") == c) << to_yaml(c);

  // The model must embed every id the files may hold.
  const std::string small = error_of(kTokens, {"model.vocab_size=499"});
  EXPECT_TRUE(contains(small, "--set model.vocab_size=499: model.vocab_size = 499 is smaller than "
                              "data.vocab_size = 500")) << small;
  EXPECT_TRUE(contains(error_of(kTokens, {"data.vocab_size=70000", "model.vocab_size=70000"}),
                       "--set data.vocab_size=70000: data.vocab_size = 70000 is out of range [1, 65536]"));
  EXPECT_TRUE(contains(error_of(kTokens, {"data.format=npy"}), "data.format"));
  EXPECT_TRUE(contains(error_of(kTokens, {"data.seq_len=0"}), "data.seq_len"));
  const std::string no_paths = error_of("data:\n  kind: tokens\ntraining:\n  steps: 1\n  eval_interval: 1\n");
  EXPECT_TRUE(contains(no_paths, "run.yaml:2: data.train_path is not set")) << no_paths;
  EXPECT_TRUE(contains(no_paths, "run.yaml:2: data.val_path is not set")) << no_paths;
  EXPECT_TRUE(contains(error_of(kTokens, {"training.eval_interval=0"}), "training.eval_interval = 0"));
  EXPECT_TRUE(contains(error_of(kTokens, {"model.max_position_embeddings=16"}),
                       "model.max_position_embeddings = 16 is smaller than data.seq_len = 32"));
  // Keys of the other kinds are unknown here, and say whose they are.
  EXPECT_TRUE(contains(error_of(kTokens + "data:\n  path: x\n"), "duplicate key 'data'"));
  const std::string other = error_of(kTokens, {"data.path=x.txt"});
  EXPECT_TRUE(contains(other, "unknown key 'path' in data for kind 'tokens' (it is an option of kind text)")) << other;
}

TEST(Config, TokensPathsResolveAgainstTheConfigFile) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("seqmix_test_config_tokens_" + std::to_string(::getpid()));
  fs::create_directories(dir / "conf");
  std::ofstream(dir / "train.bin") << "ab";
  std::ofstream(dir / "conf" / "run.yaml")
      << "model:\n  vocab_size: 50304\ndata:\n  kind: tokens\n  train_path: ../train.bin\n  val_path: val.bin\n"
         "training:\n  steps: 10\n  eval_interval: 5\n";
  const Config c = load_config((dir / "conf" / "run.yaml").string());
  // Found next to the config file: resolved against its directory; not there: left as is.
  EXPECT_EQ(fs::path(c.data.tokens.train_path), (dir / "train.bin").lexically_normal());
  EXPECT_EQ(c.data.tokens.val_path, "val.bin");
  fs::remove_all(dir);
}

TEST(Config, EpochsAndStepsAreExclusive) {
  EXPECT_TRUE(contains(error_of("training:\n  steps: 10\n  epochs: 2\n"),
                       "run.yaml:3: training.steps = 10 and training.epochs = 2 are both set"));
  EXPECT_TRUE(contains(error_of("training:\n  batch_size: 8\n"),
                       "run.yaml:1: neither training.steps nor training.epochs is set"));
  const Config c = parse_config("training:\n  epochs: 3\n", "run.yaml");
  EXPECT_EQ(c.training.epochs, 3);
  EXPECT_TRUE(contains(error_of(kBase, {"training.epochs=2"}),
                       "--set training.epochs=2: training.steps = 100 and training.epochs = 2"));
  EXPECT_NO_THROW(parse_config(kBase, "run.yaml", {"training.epochs=2", "training.steps=0"}));
}

TEST(Config, MqarInconsistency) {
  const std::string too_many_pairs = error_of(kBase, {"data.num_kv_pairs=17"});
  EXPECT_TRUE(contains(too_many_pairs, "--set data.num_kv_pairs=17: mqar needs 4 * data.num_kv_pairs "
                                       "<= data.seq_len"))
      << too_many_pairs;
  EXPECT_TRUE(contains(too_many_pairs, "use num_kv_pairs <= 16")) << too_many_pairs;
  EXPECT_EQ(error_of("data:\n  seq_len: 63\n  num_kv_pairs: 4\ntraining:\n  steps: 10\n"),
            "run.yaml:2: data.seq_len must be even for mqar (the query region is made of pairs), got 63");
  EXPECT_TRUE(contains(error_of(kBase, {"data.vocab_size=64", "model.vocab_size=64"}),
                       "mqar needs data.vocab_size > data.seq_len"));
  const std::string small_model = error_of(kBase, {"model.vocab_size=100"});
  EXPECT_TRUE(contains(small_model, "--set model.vocab_size=100: model.vocab_size = 100 is smaller "
                                    "than the task's vocabulary data.vocab_size = 8192"))
      << small_model;
}

TEST(Config, OtherRecallTasks) {
  EXPECT_TRUE(contains(error_of(kBase, {"data.task=associative_recall", "data.num_kv_pairs=32"}),
                       "associative_recall needs 2 * data.num_kv_pairs + 1 <= data.seq_len"));
  EXPECT_TRUE(contains(error_of(kBase, {"data.task=selective_copying", "data.num_tokens_to_copy=40"}),
                       "selective_copying needs 2 * data.num_tokens_to_copy <= data.seq_len"));
  EXPECT_NO_THROW(parse_config(kBase, "run.yaml", {"data.task=induction_heads"}));
}

TEST(Config, MixerRules) {
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.type=gla", "model.mixer.expand_k=0.3"}),
                       "model.d_model * model.mixer.expand_k = 64 * 0.3 = 19.2 is not a positive "
                       "whole number"));
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.type=gla", "model.mixer.num_heads=3"}),
                       "model.d_model * model.mixer.expand_k = 32 is not divisible by "
                       "model.mixer.num_heads = 3"));
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.type=h3", "model.mixer.head_dim=3"}),
                       "model.d_model = 64 is not divisible by model.mixer.head_dim = 3"));
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.type=mamba", "model.mixer.dt_min=0.5"}),
                       "model.mixer.dt_min = 0.5 must be smaller than model.mixer.dt_max = 0.1"));
  EXPECT_TRUE(contains(error_of(kBase, {"model.mixer.type=mamba", "model.mixer.dt_rank=0"}),
                       "model.mixer.dt_rank = 0 is out of range"));
  const Config m = parse_config(kBase, "run.yaml", {"model.mixer.type=mamba", "model.mixer.dt_rank=auto"});
  EXPECT_EQ(m.model.mixer.mamba.dt_rank, 0);
  const Config r = parse_config(kBase, "run.yaml", {"model.mixer.type=mamba", "model.mixer.dt_rank=8"});
  EXPECT_EQ(r.model.mixer.mamba.dt_rank, 8);
}

// The config check and the layer constructors run the same rules, so a config that
// validates builds, and one that does not is refused by the constructor too. Each case
// below once disagreed: gla's key width was rounded by the config and truncated by the
// layer (100 * 0.29 = 28.999999999999996: 29 channels promised, 28 built), linear
// attention's eps = 0 passed the layer only, and mamba's dt_min = dt_max passed the layer only.
TEST(Config, ConfigAndConstructorsAgree) {
  struct Case {
    std::vector<std::string> overrides;
    bool valid;
  };
  const std::vector<Case> cases = {
      {{"model.d_model=100", "model.mixer.type=gla", "model.mixer.num_heads=1", "model.mixer.expand_k=0.29"}, true},
      {{"model.mixer.type=linear_attention", "model.mixer.eps=0"}, false},
      {{"model.mixer.type=mamba", "model.mixer.dt_min=0.1", "model.mixer.dt_max=0.1"}, false},
      {{"model.mixer.type=mamba", "model.mixer.dt_min=0.01", "model.mixer.dt_max=0.1"}, true},
      {{"model.mixer.type=attention", "model.mixer.num_heads=3"}, false},
      {{"model.mixer.type=h3", "model.mixer.d_state=7"}, false},
      {{"model.mlp=relu"}, false},
  };
  for (const Case& c : cases) {
    std::string joined;
    for (const std::string& o : c.overrides) joined += o + " ";
    bool config_ok = true;
    try {
      parse_config(kBase, "run.yaml", c.overrides);
    } catch (const ConfigError&) {
      config_ok = false;
    }
    EXPECT_EQ(config_ok, c.valid) << joined;
    // The same options with the checks bypassed, straight into the constructor.
    Config raw = parse_config(kBase, "run.yaml");
    for (const std::string& o : c.overrides) {
      const std::string key = o.substr(0, o.find('=')), value = o.substr(o.find('=') + 1);
      ModelOptions& m = raw.model;
      if (key == "model.d_model") m.d_model = std::stoll(value);
      else if (key == "model.mlp") m.mlp = value;
      else if (key == "model.mixer.type") m.mixer.type = value;
      else if (key == "model.mixer.num_heads") m.mixer.attention.num_heads = m.mixer.gla.num_heads = std::stoll(value);
      else if (key == "model.mixer.expand_k") m.mixer.gla.expand_k = std::stod(value);
      else if (key == "model.mixer.eps") m.mixer.linear_attention.eps = std::stod(value);
      else if (key == "model.mixer.dt_min") m.mixer.mamba.dt_min = std::stod(value);
      else if (key == "model.mixer.dt_max") m.mixer.mamba.dt_max = std::stod(value);
      else if (key == "model.mixer.d_state") m.mixer.h3.d_state = std::stoll(value);
      else FAIL() << "the test does not know " << key;
    }
    Generator gen(1);
    bool built = true;
    try {
      LanguageModel model(raw.model, LayerInit{&gen, raw.model.n_layers, DType::f32});
      if (raw.model.mixer.type == "gla") {
        // The key width the config promised: round(100 * 0.29) = 29.
        for (const auto& [name, t] : model.named_parameters()) {
          if (name == "layers.0.mixer.gk_proj.1.bias") {
            EXPECT_EQ(t.size(0), 29) << joined;
          }
        }
      }
    } catch (const ShapeError&) {
      built = false;
    }
    EXPECT_EQ(built, c.valid) << joined;
  }
}

TEST(Config, OtherRules) {
  EXPECT_TRUE(contains(error_of(kBase + "schedule:\n  warmup_steps: 200\n"),
                       "run.yaml:13: schedule.warmup_steps = 200 exceeds training.steps = 100"));
  EXPECT_TRUE(contains(error_of(kBase, {"model.max_position_embeddings=32"}),
                       "model.max_position_embeddings = 32 is smaller than data.seq_len = 64"));
  EXPECT_TRUE(contains(error_of("data:\n  kind: text\n  path: a.txt\ntraining:\n  steps: 10\n"),
                       "run.yaml:2: training.eval_interval = 0: text runs need an evaluation interval"));
  EXPECT_TRUE(contains(error_of("data:\n  kind: text\ntraining:\n  steps: 10\n  eval_interval: 5\n"),
                       "run.yaml:2: data.path is not set"));
  EXPECT_TRUE(contains(error_of(kBase, {"schedule.min_lr=0.01"}),
                       "schedule.min_lr = 0.01 exceeds optimizer.lr = 0.001"));
}

TEST(Config, ValidateOnStructs) {
  Config c;
  c.training.steps = 10;
  EXPECT_NO_THROW(validate(c));
  c.model.dropout = 1.0;
  try {
    validate(c);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "config: model.dropout = 1 is out of range [0, 1)");
  }
}

TEST(Config, RoundTrip) {
  std::vector<Config> configs;
  for (const std::string& type : mixer_names()) {
    Config c = parse_config(kBase, "run.yaml", {"model.mixer.type=" + type});
    configs.push_back(c);
  }
  Config odd = parse_config(kBase, "run.yaml",
                            {"model.mixer.type=mamba", "model.mixer.dt_rank=5", "model.mixer.dt_min=1e-4",
                             "optimizer.lr=0.30000000000000004", "optimizer.eps=1e-300",
                             "training.seed=18446744073709551615", "model.tie_embeddings=false",
                             "logging.level=debug"});
  configs.push_back(odd);
  Config text = parse_config("training:\n  steps: 10\n  eval_interval: 5\n", "run.yaml",
                             {"data.kind=text", "data.path=x.txt", "data.tokenizer=byte"});
  for (const std::string path : {"plain/path.txt", "with space: and \"quotes\" \\ é.txt", "true",
                                 "~", "123", "-dash"}) {
    text.data.text.path = path;
    configs.push_back(text);
  }
  for (const Config& c : configs) {
    const std::string yaml = to_yaml(c);
    const Config back = parse_config(yaml, "roundtrip.yaml");
    EXPECT_TRUE(back == c) << yaml;
    EXPECT_EQ(to_yaml(back), yaml);
  }
  EXPECT_EQ(odd.training.seed, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(parse_config(to_yaml(odd), "r").optimizer.lr, 0.30000000000000004);
  EXPECT_TRUE(contains(to_yaml(odd), "dt_rank: 5"));
  EXPECT_TRUE(contains(to_yaml(configs[4]), "dt_rank: auto"));
  EXPECT_TRUE(contains(to_yaml(odd), "eps: 1.0e-300"));  // a dot, so YAML 1.1 readers see a float
  EXPECT_FALSE(configs[0] == configs[1]);
}

TEST(Config, LoadFileResolvesPathAndNamesTheFile) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("seqmix_test_config_" + std::to_string(::getpid()));
  fs::create_directories(dir / "sub");
  std::ofstream(dir / "corpus.txt") << "hello\n";
  const std::string text_yaml =
      "data:\n  kind: text\n  path: corpus.txt\ntraining:\n  steps: 10\n  eval_interval: 5\n";
  std::ofstream(dir / "text.yaml") << text_yaml;
  std::ofstream(dir / "missing.yaml") << "data:\n  kind: text\n  path: sub/nothing.txt\n"
                                         "training:\n  steps: 10\n  eval_interval: 5\n";
  std::ofstream(dir / "bad.yaml") << "model:\n  d_model: 64\n  nlayers: 2\n";

  // Found next to the config file: resolved against its directory.
  const Config c = load_config((dir / "text.yaml").string());
  EXPECT_EQ(fs::path(c.data.text.path), (dir / "corpus.txt").lexically_normal());
  // Not there: left relative to the current directory.
  EXPECT_EQ(load_config((dir / "missing.yaml").string()).data.text.path, "sub/nothing.txt");
  // A --set path is relative to the current directory.
  EXPECT_EQ(load_config((dir / "text.yaml").string(), {"data.path=other.txt"}).data.text.path,
            "other.txt");

  const std::string bad = (dir / "bad.yaml").string();
  try {
    load_config(bad);
    ADD_FAILURE() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              bad + ":3: unknown key 'nlayers' in model; did you mean 'n_layers'?");
  }
  EXPECT_THROW(load_config((dir / "absent.yaml").string()), ConfigError);
  fs::remove_all(dir);
}

// Every config shipped in configs/ loads and validates.
// Every registered mixer ships an MQAR config, a text config and a place in the MQAR
// sweep; and every shipped mixer config names a registered mixer.
TEST(Config, EveryRegisteredMixerHasItsConfigs) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SEQMIX_SOURCE_DIR) / "configs";
  if (!fs::is_directory(dir)) GTEST_SKIP() << "no configs in " << dir;
  const SweepSpec sweep = load_sweep((dir / "sweeps" / "mqar.yaml").string());
  std::set<std::string> swept;
  for (const SweepAxis& axis : sweep.axes)
    for (size_t k = 0; k < axis.keys.size(); ++k)
      if (axis.keys[k] == "model.mixer.type")
        for (const auto& point : axis.values) swept.insert(point[k]);
  for (const std::string& name : mixer_names()) {
    const Config mqar = load_config((dir / "mqar" / (name + ".yaml")).string());
    EXPECT_EQ(mqar.model.mixer.type, name);
    const Config text = load_config((dir / "text" / ("shakespeare_char_" + name + ".yaml")).string());
    EXPECT_EQ(text.model.mixer.type, name);
    EXPECT_EQ(swept.count(name), 1u) << name << " is missing from configs/sweeps/mqar.yaml";
  }
  EXPECT_EQ(swept.size(), mixer_names().size());
}

// A sweep that compares mixers (its model.mixer.type axis lists more than one) compares all
// of them: a new registry row missing from any such sweep under configs/ fails here, naming
// the file to edit.
TEST(Config, MixerSweepsListEveryRegisteredMixer) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SEQMIX_SOURCE_DIR) / "configs";
  if (!fs::is_directory(dir)) GTEST_SKIP() << "no configs in " << dir;
  int comparisons = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.path().parent_path().filename() != "sweeps" || entry.path().extension() != ".yaml") continue;
    const SweepSpec sweep = load_sweep(entry.path().string());
    std::set<std::string> swept;
    for (const SweepAxis& axis : sweep.axes)
      for (size_t k = 0; k < axis.keys.size(); ++k)
        if (axis.keys[k] == "model.mixer.type")
          for (const auto& point : axis.values) swept.insert(point[k]);
    if (swept.size() < 2) continue;
    ++comparisons;
    const std::string file = fs::relative(entry.path(), fs::path(SEQMIX_SOURCE_DIR)).string();
    for (const std::string& name : mixer_names())
      EXPECT_EQ(swept.count(name), 1u) << "mixer '" << name << "' is registered but missing from " << file
                                       << ": add it to the model.mixer.type axis there";
    for (const std::string& name : swept)
      EXPECT_NE(find_mixer(name), nullptr) << file << " sweeps mixer '" << name << "', which is not registered";
  }
  EXPECT_GE(comparisons, 1) << "no sweep under configs/ compares mixers";
}

// docs/config.md is the generated reference: every key the parser knows, with the default it
// really has. SEQMIX_UPDATE_DOCS=1 rewrites the file instead of failing.
TEST(Config, ConfigReferenceIsUpToDate) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path(SEQMIX_SOURCE_DIR) / "docs" / "config.md";
  const std::string expected = config_reference_markdown();
  if (const char* update = std::getenv("SEQMIX_UPDATE_DOCS"); update && std::string(update) == "1") {
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << expected;
  }
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path << " is missing; run SEQMIX_UPDATE_DOCS=1 ./build/test_config";
  const std::string actual((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(actual, expected) << path << " is stale; run SEQMIX_UPDATE_DOCS=1 ./build/test_config";
  // Every key of every mixer type appears with its default.
  for (const MixerEntry& e : mixer_registry()) {
    EXPECT_NE(actual.find("### " + e.name + "\n"), std::string::npos) << e.name;
    for (const MixerOption& o : e.options)
      EXPECT_NE(actual.find("| `model.mixer." + o.key + "` |"), std::string::npos) << e.name << " " << o.key;
  }
}

TEST(Config, ShippedConfigsLoad) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(SEQMIX_SOURCE_DIR) / "configs";
  int count = 0;
  if (fs::is_directory(dir)) {
    for (const auto& entry : fs::recursive_directory_iterator(dir)) {
      if (entry.path().extension() != ".yaml" && entry.path().extension() != ".yml") continue;
      ++count;
      // configs/sweeps/ holds sweep files: a base config plus a grid, every point of
      // which load_sweep validates as a config.
      if (entry.path().parent_path().filename() == "sweeps") {
        EXPECT_NO_THROW(load_sweep(entry.path().string())) << entry.path();
        continue;
      }
      EXPECT_NO_THROW(load_config(entry.path().string())) << entry.path();
    }
  }
  if (count == 0) GTEST_SKIP() << "no configs in " << dir;
}

}  // namespace
}  // namespace seqmix
