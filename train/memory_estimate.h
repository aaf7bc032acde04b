// What a configuration will ask of the machine, computed from the config alone
// before anything is allocated: a run that cannot fit is refused with
// "needs X GiB, this machine has Y GiB" instead of dying in the allocator (or
// being killed by the OOM killer) minutes later.
//
// Counts are computed in long double: a config may hold sizes near 2^63, whose
// products overflow any integer type (the check must not itself overflow).
#pragma once

#include <cstdint>
#include <string>

#include "layers/options.h"
#include "train/config.h"

namespace seqmix {

// The parameters of one mixer (one layer) and of the whole model, as the
// layers create them (docs/model.md and docs/mixers.md list the tensors).
// Exact for every size that fits in memory.
long double mixer_parameter_count(const ModelOptions& model);
long double model_parameter_count(const ModelOptions& model);

struct MemoryEstimate {
  long double parameters = 0;  // count
  long double weights_bytes = 0;     // parameters, gradients
  long double optimizer_bytes = 0;   // Adam moments
  long double activation_bytes = 0;  // what one training step keeps for the backward
  long double data_bytes = 0;        // the token streams held in memory
  long double total_bytes() const { return weights_bytes + optimizer_bytes + activation_bytes + data_bytes; }
};

// training: a training run (gradients, moments, activations of a step, data);
// otherwise evaluation of a loaded model (weights and one forward pass).
// ranks: the MPI ranks training.batch_size (the global batch) is split among; each
// process keeps the activations of its own batch_size / ranks rows only.
MemoryEstimate estimate_memory(const Config& config, bool training, int64_t ranks = 1);

// Physical memory of this machine in bytes (0 if unknown).
long double machine_memory_bytes();

// bytes in GiB to three significant digits, for messages ("0.75", "24").
std::string format_gib(long double bytes);

// Throws std::invalid_argument "<what> needs X GiB (parameters ..., ...), this
// machine has Y GiB" when the estimate exceeds the machine's memory.
void check_memory_fits(const Config& config, bool training, const std::string& what, int64_t ranks = 1);

}  // namespace seqmix
