// A trained model read back from a checkpoint, for eval, info and sample.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/text.h"
#include "layers/model.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace seqmix {

struct LoadedModel {
  std::string path;
  Config config;          // with the overrides applied
  Config trained_config;  // as the checkpoint holds it
  std::unique_ptr<LanguageModel> model;
  std::optional<Tokenizer> tokenizer;  // text runs only
  int64_t step = 0;                    // training steps behind these weights
};

// Reads and validates the checkpoint (CheckpointError naming the file and the
// problem), rebuilds the model from its config (config_overrides apply to it,
// e.g. data keys for eval) and loads the weights.
LoadedModel load_model(const std::string& checkpoint_path, const std::vector<std::string>& config_overrides = {});

// A run directory holds checkpoint.h5; accept either.
std::string checkpoint_path_of(const std::string& path_or_run_dir);

}  // namespace seqmix
