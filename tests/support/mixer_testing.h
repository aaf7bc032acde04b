// Helpers shared by the mixer tests (with those of tests/support/op_testing.h).
#pragma once

#include <vector>

#include "core/random.h"
#include "layers/module.h"
#include "tests/support/op_testing.h"

namespace seqmix::testing {

NamedTensors params_of(const Mixer& m);

// Overwrites every parameter with U(lo, hi) values: the default init (std 0.02)
// keeps pre-activations near 0, which would hide errors in softmax or feature maps.
void randomise(const Mixer& m, Generator& gen, double lo = -0.5, double hi = 0.5);

// Causality: changing input t0 (float64 x of shape (B, L, D)) leaves every output
// before t0 bit-identical and changes output t0.
void expect_causal(Mixer& layer, const Tensor& x, const std::vector<int64_t>& changed_positions);

// x[:, t, :] of a (B, L, D) tensor, as (B, D): the input of a recurrent step.
Tensor time_slice(const Tensor& x, int64_t t);

// Copies the parameter values of `from` into `to` (converting the dtype).
void copy_params(const Mixer& from, const Mixer& to);

}  // namespace seqmix::testing
