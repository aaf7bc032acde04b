// Builds the mixer named by MixerOptions::type, through the registry (layers/mixer_registry.h).
#pragma once

#include <memory>

#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

// The rules of the chosen type's options (the type itself must be valid).
void check_mixer_options(const MixerOptions& opt, int64_t d_model, OptionCheck& check);

// Both throw std::invalid_argument for an unknown type, listing the valid ones.
std::unique_ptr<Mixer> make_mixer(const MixerOptions& opt, int64_t d_model, const LayerInit& init);

}  // namespace seqmix
