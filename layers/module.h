// Layers: named parameters and the mixer interface (docs/model.md, docs/mixers.md).
//
// Every layer lists its parameters by documented name (the checkpoint's dataset names),
// so training, checkpoints and tests refer to "layers.0.mixer.Wqkv.weight", never
// to positions. Layers are built in float32 for training or float64 for the
// gradient checks (LayerInit::dtype); initialisation draws in double from a
// seeded Generator and then casts, so both dtypes start from the same values.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"

namespace seqmix {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A parameter with its documented name and whether AdamW's weight decay applies to it. The layer
// that creates a parameter sets the flag, by the rule of docs/model.md#weight-decay-groups: weights of two or more
// dimensions decay; biases, norm weights and the SSM parameters (h3's ssm_shift.* and
// ssm_diag.*, mamba's A_log and D) do not. The optimizer reads the flag, not the name.
struct Parameter {
  // All three always: a forgotten flag would silently mean "no decay".
  Parameter(std::string name_, Tensor tensor_, bool decay_)
      : name(std::move(name_)), tensor(std::move(tensor_)), decay(decay_) {}
  std::string name;
  Tensor tensor;
  bool decay;
};
using Parameters = std::vector<Parameter>;
inline constexpr bool kDecay = true, kNoDecay = false;
NamedTensors named(const Parameters& params);

struct LayerInit {
  Generator* gen = nullptr;  // initialisation draws
  int64_t n_layers = 1;      // for the scaled init of out_proj/o_proj/fc2 (docs/model.md)
  DType dtype = DType::f32;
};

// Parameter constructors: allocate with requires_grad, fill as docs/model.md#initialisation says.
Tensor param_normal(const Shape& shape, double std, const LayerInit& init);
Tensor param_uniform(const Shape& shape, double lo, double hi, const LayerInit& init);
Tensor param_constant(const Shape& shape, double value, const LayerInit& init);
// Parameter from explicit values (computed in double), e.g. mamba's A_log.
Tensor param_from(const Shape& shape, const std::vector<double>& values, const LayerInit& init);
// std of the scaled output projections: 0.02 / sqrt(2 * n_layers).
double scaled_init_std(const LayerInit& init);

// The recurrent state of one mixer for a batch of sequences.
struct MixerState {
  virtual ~MixerState() = default;
  int64_t t = 0;  // tokens consumed so far
};

class Mixer {
 public:
  virtual ~Mixer() = default;
  // Parallel (training) form: x (B, L, D) -> (B, L, D), differentiable.
  // gen supplies dropout draws when training (attention's probability dropout).
  virtual Tensor forward(const Tensor& x, bool training, Generator& gen) = 0;
  // Recurrent (decoding) form: a fresh state for `batch` sequences, and one step
  // x_t (B, D) -> y_t (B, D). Steps record nothing on the tape.
  virtual std::unique_ptr<MixerState> init_state(int64_t batch) const = 0;
  virtual Tensor step(MixerState& state, const Tensor& x_t) const = 0;
  // Floats of recurrent state per sequence after t tokens (docs/mixers.md#state-sizes).
  virtual int64_t state_size(int64_t t) const = 0;
  // Appends (prefix + documented name, tensor, decay) for every parameter.
  virtual void parameters(const std::string& prefix, Parameters& out) const = 0;
  // The same without the decay flags.
  void named_parameters(const std::string& prefix, NamedTensors& out) const;
};

}  // namespace seqmix
