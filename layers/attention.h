// Causal multi-head softmax attention (docs/mixers.md#attention).
//
// Parallel form: Wqkv (linear), the fused attention core (layers/attention_kernel.h,
// FlashAttention forward/backward, no (L, L) matrix kept), out_proj (linear).
// Recurrent form: a KV cache that grows by one key and one value per token.
#pragma once

#include <memory>
#include <string>

#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

// The KV cache of a batch: keys and values of every consumed token, per head.
struct AttentionState : MixerState {
  int64_t batch = 0;
  int64_t capacity = 0;  // tokens the cache can hold before it grows (doubling)
  Tensor k_cache;        // (batch, H, capacity, dh), keys tiled per head (layers/attention_decode.h)
  Tensor v_cache;        // (batch, H, capacity, dh), row-major per head
};

// The rules on the options, shared by the config check and the constructor:
// d_model >= 1, num_heads >= 1 divides d_model, 0 <= dropout < 1.
void check_options(const AttentionOptions& opt, int64_t d_model, OptionCheck& check);
// 2 * D * t: one key and one value of D floats per consumed token.
int64_t state_size(const AttentionOptions& opt, int64_t d_model, int64_t t);

class AttentionMixer : public Mixer {
 public:
  // Throws ShapeError naming every problem that check_options finds.
  AttentionMixer(int64_t d_model, const AttentionOptions& opt, const LayerInit& init);

  Tensor forward(const Tensor& x, bool training, Generator& gen) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;
  Tensor step(MixerState& state, const Tensor& x_t) const override;
  int64_t state_size(int64_t t) const override { return seqmix::state_size(opt_, d_model_, t); }
  // Wqkv.weight (3D, D), Wqkv.bias (3D), out_proj.weight (D, D), out_proj.bias (D).
  void parameters(const std::string& prefix, Parameters& out) const override;

  int64_t d_model() const { return d_model_; }
  int64_t num_heads() const { return opt_.num_heads; }
  const AttentionOptions& options() const { return opt_; }

 private:
  int64_t d_model_;
  AttentionOptions opt_;
  Tensor wqkv_weight_, wqkv_bias_, out_weight_, out_bias_;
};

}  // namespace seqmix
