#include "train/model_io.h"

#include <filesystem>

#include "train/memory_estimate.h"

namespace seqmix {

std::string checkpoint_path_of(const std::string& p) {
  if (std::filesystem::is_directory(p)) return (std::filesystem::path(p) / "checkpoint.h5").string();
  return p;
}

LoadedModel load_model(const std::string& checkpoint_path, const std::vector<std::string>& overrides) {
  LoadedModel lm;
  lm.path = checkpoint_path_of(checkpoint_path);
  CheckpointData ck = read_checkpoint(lm.path);
  // A ConfigError names the checkpoint or the --set override at fault.
  lm.config = parse_config(ck.config_yaml, lm.path + " (config attribute)", overrides);
  lm.trained_config = overrides.empty() ? lm.config : parse_config(ck.config_yaml, lm.path + " (config attribute)");
  check_memory_fits(lm.config, false, lm.path + ": the model in its config attribute");
  Generator gen(0);
  LayerInit init{&gen, lm.config.model.n_layers, DType::f32};
  lm.model = std::make_unique<LanguageModel>(lm.config.model, init);
  load_named(lm.path, ck.params, lm.model->named_parameters(), "params");
  if (ck.tokenizer) {
    try {
      lm.tokenizer = Tokenizer::from_vocabulary(ck.tokenizer->first, ck.tokenizer->second);
    } catch (const std::exception& e) {
      throw CheckpointError(lm.path + ": /tokenizer is invalid: " + e.what());
    }
  }
  auto it = ck.train_u64.find("step");
  lm.step = it == ck.train_u64.end() ? ck.optimizer_step : static_cast<int64_t>(it->second);
  return lm;
}

}  // namespace seqmix
