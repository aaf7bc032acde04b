// Gated linear attention (docs/mixers.md#gla; Yang et al. 2023, as in flash-linear-attention's
// fla/layers/gla.py with mode "chunk", no short convolution, no feature map, and the
// fused rmsnorm * swish output gate).
//
//   log a_t = logsigmoid(gk_proj.1(gk_proj.0(x_t))) / gate_logit_normalizer   (Dk)
//   S_t     = diag(a_t) S_{t-1} + k_t v_t^T           per head, dk x dv
//   o_t     = (q_t / sqrt(dk))^T S_t
//   out     = o_proj(rmsnorm_per_head(o) * g_norm.weight * swish(g_proj(x)))
//
// The parallel form runs the projections through linear() (oneDNN) and two fused ops:
//   gla_chunk_attention (layers/gla_kernel.cpp): the recurrence over (q, k, v, gate
//     logits) in chunks of 64, with logsigmoid and the normaliser inside; keeps only
//     the states at chunk boundaries for the backward;
//   gla_norm_gate (layers/gla_gate.cpp): the per-head rmsnorm times g_norm.weight
//     times swish(g).
// The recurrent form keeps S (H, dk, dv) per sequence: decay, then add, then read out.
// The fused ops are declared in layers/gla_kernel.h. Reference twin (plain loops, the
// tests' oracle): tests/support/reference_gla.h, the whole layer as reference_gla_forward /
// reference_gla_backward.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/random.h"
#include "core/tensor.h"
#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

struct GlaState : MixerState {
  Tensor S;  // (B, H, dk, dv), the dtype of the layer: the S_t of the recurrence
};

// Dk = D * expand_k (or Dv = D * expand_v), rounded to the nearest integer: check_options
// accepts only products within 1e-9 of a whole number, and rounding (not truncation, as
// fla's int() does) keeps 100 * 0.29 = 28.999999999999996 at the 29 channels it means.
int64_t gla_width(int64_t d_model, double expand);

// The rules on the options, shared by the config check and the constructor: d_model,
// num_heads and gate_low_rank_dim >= 1; expand_k, expand_v, gate_logit_normalizer and
// norm_eps > 0; Dk and Dv whole numbers of channels that num_heads divides.
void check_options(const GlaOptions& opt, int64_t d_model, OptionCheck& check);
// H * dk * dv, whatever t.
int64_t state_size(const GlaOptions& opt, int64_t d_model, int64_t t);

class GlaMixer : public Mixer {
 public:
  // Throws ShapeError naming every problem that check_options finds.
  GlaMixer(int64_t d_model, const GlaOptions& opt, const LayerInit& init);

  Tensor forward(const Tensor& x, bool training, Generator& gen) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;
  Tensor step(MixerState& state, const Tensor& x_t) const override;
  int64_t state_size(int64_t t) const override { return seqmix::state_size(opt_, d_model_, t); }
  // q_proj.weight (Dk, D), k_proj.weight (Dk, D), v_proj.weight (Dv, D), g_proj.weight
  // (Dv, D), gk_proj.0.weight (r, D), gk_proj.1.weight (Dk, r), gk_proj.1.bias (Dk),
  // g_norm.weight (dv), o_proj.weight (D, Dv), in this order.
  void parameters(const std::string& prefix, Parameters& out) const override;

  int64_t d_model() const { return d_model_; }
  int64_t num_heads() const { return heads_; }
  int64_t key_dim() const { return key_dim_; }      // Dk
  int64_t value_dim() const { return value_dim_; }  // Dv
  const GlaOptions& options() const { return opt_; }

 private:
  int64_t d_model_, heads_, key_dim_, value_dim_;
  GlaOptions opt_;
  Tensor q_weight_, k_weight_, v_weight_, g_weight_, gk0_weight_, gk1_weight_, gk1_bias_, norm_weight_, o_weight_;
};

}  // namespace seqmix
