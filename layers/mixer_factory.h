// Builds the mixer named by MixerOptions::type (SPEC section 2).
#pragma once

#include <memory>

#include "layers/module.h"
#include "layers/options.h"

namespace seqmix {

// Throws std::invalid_argument for an unknown type, listing the five valid ones.
std::unique_ptr<Mixer> make_mixer(const MixerOptions& opt, int64_t d_model, const LayerInit& init);

}  // namespace seqmix
