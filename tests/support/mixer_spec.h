// What docs/mixers.md promises for each mixer, written out independently of the layers so
// that the tests can hold the layers to it, and the small options each mixer is tested with.
// A new mixer adds its case to each function here (the tests fail for a registry type
// that has none).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/options.h"

namespace seqmix::testing {

// The mixer's parameters, documented names (without the "layers.i.mixer." prefix) and shapes,
// in the order named_parameters lists them.
std::vector<std::pair<std::string, Shape>> spec_mixer_parameters(const MixerOptions& opt, int64_t d_model);

// Floats of recurrent state per sequence after t tokens, as docs/mixers.md#state-sizes states it.
int64_t spec_state_size(const MixerOptions& opt, int64_t d_model, int64_t t);

// Small options of the given type for the tests at d_model = 8: two heads where a
// mixer has heads, small states, so that every path (heads, head_dim > 1) is taken.
MixerOptions small_mixer_options(const std::string& type);

}  // namespace seqmix::testing
