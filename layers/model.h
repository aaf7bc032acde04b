// The language model around the mixers (docs/model.md):
//   x = E[tokens] (+ P[positions]); x = dropout(x)
//   per layer: x += dropout(mixer(norm1(x))); x += dropout(mlp(norm2(x))) if mlp
//   logits = norm_f(x) E^T (tied) or lm_head(norm_f(x))
// The loss is computed only at positions whose label is set: the final hidden
// states are gathered at those rows before the output head, so a recall task
// with a few labelled positions pays for a few rows of the (rows, V) head GEMM.
#pragma once

#include <memory>
#include <vector>

#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

struct Norm {
  Tensor weight, bias;  // bias undefined for rmsnorm
  Tensor operator()(const Tensor& x) const;
};

struct Mlp {
  Tensor fc1_weight, fc1_bias, fc2_weight, fc2_bias;
  Tensor operator()(const Tensor& x) const;
};

struct Block {
  Norm norm1;
  std::unique_ptr<Mixer> mixer;
  bool has_mlp = false;
  Norm norm2;
  Mlp mlp;
};

// Loss and accuracy over labelled positions.
struct LossResult {
  Tensor loss;            // scalar, differentiable
  int64_t labelled = 0;   // positions with label != -100
  int64_t correct = 0;    // argmax == label among them
};

struct DecodeState {
  std::vector<std::unique_ptr<MixerState>> layers;
  int64_t t = 0;
};

// The rules on the model's options and its mixer's, shared by the config check and the
// constructor: vocab_size, d_model, n_layers >= 1; norm and mlp and mixer.type among their
// choices; max_position_embeddings >= 0; 0 <= dropout < 1; then the mixer's own rules.
// Keys are named check.prefix() + key, the mixer's check.prefix() + "mixer." + key.
void check_options(const ModelOptions& opt, OptionCheck& check);

class LanguageModel {
 public:
  // Throws ShapeError naming every problem that check_options finds.
  LanguageModel(const ModelOptions& opt, const LayerInit& init);

  // tokens: int32 (B, L) -> final normalised hidden states (B, L, D).
  Tensor hidden(const Tensor& tokens, bool training, Generator& gen) const;
  // hidden (..., D) -> logits (..., V).
  Tensor head(const Tensor& h) const;
  Tensor logits(const Tensor& tokens, bool training, Generator& gen) const { return head(hidden(tokens, training, gen)); }
  // Mean cross-entropy over labelled positions (labels int32 (B, L)), with the
  // head applied only at those rows; counts argmax hits for accuracy.
  LossResult loss(const Tensor& tokens, const Tensor& labels, bool training, Generator& gen) const;

  // Recurrent decoding: one token per sequence per step, tokens int32 (B) ->
  // logits (B, V). Records nothing on the tape.
  DecodeState init_state(int64_t batch) const;
  Tensor step(DecodeState& state, const Tensor& tokens) const;
  // Floats of recurrent state per sequence in layer i after t tokens.
  int64_t state_size(int64_t layer, int64_t t) const { return blocks_[layer].mixer->state_size(t); }

  // Every parameter with its decay flag (see Parameter), and the same without the flags.
  Parameters parameters() const;
  NamedTensors named_parameters() const { return named(parameters()); }
  int64_t num_parameters() const;
  const ModelOptions& options() const { return opt_; }
  DType dtype() const { return dtype_; }

 private:
  Tensor embed(const Tensor& tokens, int64_t position_offset, bool training, Generator& gen) const;

  ModelOptions opt_;
  DType dtype_;
  Tensor word_embeddings_, position_embeddings_, lm_head_;
  std::vector<Block> blocks_;
  Norm norm_f_;
};

}  // namespace seqmix
