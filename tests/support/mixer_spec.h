// The test row of each mixer: what docs/mixers.md promises for it (parameter names and shapes,
// state size), written out independently of the layer; its reference twin; and the options
// and shapes the shared suite (tests/test_mixer_suite.cpp) runs it at. One row per registry
// type, in tests/support/mixer_spec.cpp; the suite fails for a registered type without one.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"
#include "layers/options.h"
#include "tests/support/reference_twin.h"

namespace seqmix::testing {

// d_model of the small options.
constexpr int64_t kSmallDModel = 8;

// One set of options the suite runs a mixer at: the gradient check at (batch, length), the
// twin, the recurrent form and causality at fixed lengths that cross the kernels' chunks.
struct MixerVariant {
  std::string label;  // the end of the test's name: "B3_L67_H2_drop0p3"
  MixerOptions options;
  int64_t d_model = kSmallDModel;
  int64_t batch = 2, length = 7;
  // Applied to a freshly built layer (Mamba: a short scan chunk, so that the gradient
  // check crosses chunk boundaries at a small length); may be null.
  void (*adjust)(Mixer&) = nullptr;
};

// The float32 layer against the twin, forward and every gradient, at a size where the
// kernels run their blocked and threaded paths. An element passes when
// |got - ref| <= rtol * (|ref| + rms(ref)): relative to the element, but never tighter
// than relative to the tensor's typical size (a small difference of large terms is only
// as accurate as those terms).
struct Float32Case {
  MixerOptions options;
  int64_t d_model = 32, batch = 2, length = 300;
  double rtol = 1e-5;
};

struct MixerTestSpec {
  std::string name;  // the registry's type name
  MixerOptions small;  // at kSmallDModel: two heads where there are heads, small states
  // The documented parameters (names without the "layers.i.mixer." prefix, shapes), in the
  // order named_parameters lists them.
  std::vector<std::pair<std::string, Shape>> (*parameters)(const MixerOptions& opt, int64_t d_model);
  // Floats of recurrent state per sequence after t tokens (docs/mixers.md#state-sizes).
  int64_t (*state_size)(const MixerOptions& opt, int64_t d_model, int64_t t);
  // The reference twin (tests/support/reference_twin.h), on the layer's named parameters.
  Tensor (*reference_forward)(const NamedTensors& params, const MixerOptions& opt, const Tensor& x);
  ReferenceGrads (*reference_backward)(const NamedTensors& params, const MixerOptions& opt, const Tensor& x,
                                       const Tensor& dy);
  std::vector<MixerVariant> variants;
  double grad_atol = 1e-6;  // the float64 gradient check's absolute tolerance
  Float32Case float32;
};

// Every row, in registry order where the registry has the type.
const std::vector<MixerTestSpec>& mixer_test_specs();
// The row of a type, or nullptr.
const MixerTestSpec* find_mixer_test_spec(const std::string& type);
// The row of a type; throws std::invalid_argument saying which file to edit.
const MixerTestSpec& mixer_test_spec(const std::string& type);

// Shorthands over the row of opt.type.
std::vector<std::pair<std::string, Shape>> spec_mixer_parameters(const MixerOptions& opt, int64_t d_model);
int64_t spec_state_size(const MixerOptions& opt, int64_t d_model, int64_t t);
MixerOptions small_mixer_options(const std::string& type);

}  // namespace seqmix::testing
