// H3, Hungry Hungry Hippos (Fu, Dao et al. 2022), as docs/mixers.md#h3 writes it:
//   q, k, v = q_proj(x), k_proj(x), v_proj(x)
//   kt      = SSM_shift(k)                        (a learnable causal filter of length N)
//   o       = sum_d1 q * SSM_diag(kt (x) v)       (per head, over head_dim x head_dim pairs)
//   out     = out_proj(o)
// The SSM core runs as two fused ops (layers/h3_kernel.h); the projections go
// through linear() (oneDNN).
#pragma once

#include <memory>
#include <string>

#include "layers/h3_kernel.h"
#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

struct H3State : MixerState {
  H3CoreState core;
};

// The rules on the options, shared by the config check and the constructor: d_model >= 1,
// d_state even and >= 2, head_dim >= 1 dividing d_model.
void check_options(const H3Options& opt, int64_t d_model, OptionCheck& check);
// D*(N-1) floats of past k plus D*head_dim*N floats of complex diagonal state, whatever t.
int64_t state_size(const H3Options& opt, int64_t d_model, int64_t t);

class H3Mixer : public Mixer {
 public:
  // Throws ShapeError naming every problem that check_options finds.
  H3Mixer(int64_t d_model, const H3Options& opt, const LayerInit& init);

  Tensor forward(const Tensor& x, bool training, Generator& gen) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;
  Tensor step(MixerState& state, const Tensor& x_t) const override;
  int64_t state_size(int64_t t) const override { return seqmix::state_size(opt_, d_model_, t); }
  void parameters(const std::string& prefix, Parameters& out) const override;

  int64_t d_model() const { return d_model_; }
  int64_t d_state() const { return d_state_; }
  int64_t head_dim() const { return ssm_.head_dim; }
  const H3SsmParams& ssm() const { return ssm_; }

 private:
  int64_t d_model_, d_state_;
  H3Options opt_;
  Tensor q_w_, q_b_, k_w_, k_b_, v_w_, v_b_, out_w_, out_b_;
  H3SsmParams ssm_;
};

}  // namespace seqmix
