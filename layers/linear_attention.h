// Linear attention of Katharopoulos et al. 2020 (docs/mixers.md#linear_attention).
//
// Parallel form: q_proj, k_proj, v_proj (linear), the fused chunked core
// (layers/linear_attention_kernel.h; the feature map phi = elu + 1 is fused into
// it), out_proj (linear). Recurrent form: per head the state S (dk x dv) and the
// normaliser z (dk).
#pragma once

#include <memory>
#include <string>

#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

struct LinearAttentionState : MixerState {
  int64_t batch = 0;
  Tensor S;  // (batch, H, dk, dv): sum over consumed tokens of phi(k_t) v_t^T
  Tensor z;  // (batch, H, dk): sum over consumed tokens of phi(k_t)
};

// The rules on the options, shared by the config check and the constructor:
// d_model >= 1, num_heads >= 1 divides d_model, eps > 0.
void check_options(const LinearAttentionOptions& opt, int64_t d_model, OptionCheck& check);
// H * (dk * dv + dk) with dk = dv = D / H, whatever t.
int64_t state_size(const LinearAttentionOptions& opt, int64_t d_model, int64_t t);

class LinearAttentionMixer : public Mixer {
 public:
  // Throws ShapeError naming every problem that check_options finds.
  LinearAttentionMixer(int64_t d_model, const LinearAttentionOptions& opt, const LayerInit& init);

  Tensor forward(const Tensor& x, bool training, Generator& gen) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;
  Tensor step(MixerState& state, const Tensor& x_t) const override;
  int64_t state_size(int64_t t) const override { return seqmix::state_size(opt_, d_model_, t); }
  // q_proj, k_proj, v_proj, out_proj, each .weight (D, D) then .bias (D).
  void parameters(const std::string& prefix, Parameters& out) const override;

  int64_t d_model() const { return d_model_; }
  int64_t num_heads() const { return opt_.num_heads; }
  const LinearAttentionOptions& options() const { return opt_; }

 private:
  int64_t d_model_;
  LinearAttentionOptions opt_;
  Tensor q_weight_, q_bias_, k_weight_, k_bias_, v_weight_, v_bias_, out_weight_, out_bias_;
};

}  // namespace seqmix
