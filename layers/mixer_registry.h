// The mixer registry: one row per mixer type, the single list that the config parser, the
// factory, the docs (docs/config.md), the benches and the tests iterate over.
//
// Adding a mixer: its layer (a Mixer with check_options and state_size beside it), its
// kernel, its reference twin and test instance in tests/support, its config files, and one
// row in mixer_registry.cpp. Nothing else names the types.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

// An integer option that also accepts "auto", stored as 0 (mamba's dt_rank).
struct AutoInt {
  int64_t* value;
};
// Where an option lives in MixerOptions.
using OptionRef = std::variant<int64_t*, double*, AutoInt>;

struct MixerOption {
  std::string key;   // the YAML key under model.mixer
  std::string help;  // one line: what it is and its constraint
  OptionRef (*field)(MixerOptions&);
};

struct MixerEntry {
  std::string name;     // MixerOptions::type and model.mixer.type
  std::string summary;  // one line for the docs
  std::vector<MixerOption> options;  // in YAML print order
  // The option rules (the layer's check_options for this type).
  void (*check)(const MixerOptions& opt, int64_t d_model, OptionCheck& check);
  std::unique_ptr<Mixer> (*make)(const MixerOptions& opt, int64_t d_model, const LayerInit& init);
  // Floats of recurrent state per sequence after t tokens (the formula of docs/mixers.md#state-sizes), without
  // building the layer; equal to the layer's state_size(t).
  int64_t (*state_size)(const MixerOptions& opt, int64_t d_model, int64_t t);
};

// Every mixer, in the order the docs and benches list them.
const std::vector<MixerEntry>& mixer_registry();
// The names, in registry order.
const std::vector<std::string>& mixer_names();
// The row of a type, or nullptr.
const MixerEntry* find_mixer(const std::string& type);
// The row of a type; throws std::invalid_argument listing the valid names.
const MixerEntry& mixer_entry(const std::string& type);

}  // namespace seqmix
