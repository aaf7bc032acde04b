// One API over the mixers' reference twins: the whole layer recomputed with plain loops
// from the layer's own parameters. Each mixer's twin lives in tests/support/reference_X.*;
// a new mixer adds its case here.
#pragma once

#include "core/tensor.h"
#include "layers/module.h"
#include "layers/options.h"

namespace seqmix::testing {

// x: float64 (B, L, D) -> (B, L, D), the output of `layer` (built from opt) by its twin.
Tensor reference_mixer_forward(const Mixer& layer, const MixerOptions& opt, const Tensor& x);

}  // namespace seqmix::testing
