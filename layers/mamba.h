// The mamba mixer: selective SSM as in mamba_ssm's mamba_simple (docs/mixers.md#mamba).
//
// Parallel form (training), with E = expand * D:
//   xz   = in_proj(u)                               (B, L, 2E), rows [0,E) x, [E,2E) z
//   xc   = silu(causal depthwise conv1d(x) + bias)  fused op, reads x in place from xz
//   xdbl = x_proj(xc)                               (B, L, R+2N) = [dl | Bt | Ct]
//   dr   = dt_proj(dl)                              fused op, reads dl in place from xdbl
//   yg   = selective_scan(xc, dr, A_log, Bt, Ct, D, z)   fused op: softplus, scan, gate;
//                                                   reads Bt, Ct from xdbl and z from xz
//   out  = out_proj(yg)
// The column parts of xz and xdbl are never copied out: the fused ops read them
// with strides and add their gradients into the same columns (layers/mamba_kernel.h).
// Kept for the backward: xz, xc, xdbl, dr, yg, the dl columns (B*L*R) and h at
// chunk starts (B * ceil(L/64) * E * N).
//
// Recurrent form: the last d_conv-1 inputs of the conv (E*(d_conv-1)) and the SSM
// state h (E*N) per sequence.
#pragma once

#include <memory>
#include <string>

#include "layers/module.h"
#include "layers/option_check.h"
#include "layers/options.h"

namespace seqmix {

struct MambaState : MixerState {
  Tensor conv;  // (B, d_conv-1, E): the last d_conv-1 conv inputs, oldest first
  Tensor ssm;   // (B, E, N)
  // The decay coefficients from A_log, computed at the first step: a state keeps
  // decoding with the parameters it started with.
  Tensor decay;  // (E, N)
};

// The rules on the options, shared by the config check and the constructor: d_model,
// d_state, d_conv and expand >= 1; dt_rank >= 1 or 0 for auto; 0 < dt_min < dt_max;
// dt_init_floor >= 0.
void check_options(const MambaOptions& opt, int64_t d_model, OptionCheck& check);

// E*(d_conv-1) conv inputs plus E*N SSM state, whatever t.
int64_t state_size(const MambaOptions& opt, int64_t d_model, int64_t t);

// R: dt_rank, or ceil(d_model / 16) when it is 0 ("auto").
int64_t mamba_dt_rank(const MambaOptions& opt, int64_t d_model);

class MambaMixer : public Mixer {
 public:
  // Throws ShapeError naming every problem that check_options finds.
  MambaMixer(int64_t d_model, const MambaOptions& opt, const LayerInit& init);

  Tensor forward(const Tensor& x, bool training, Generator& gen) override;
  std::unique_ptr<MixerState> init_state(int64_t batch) const override;
  Tensor step(MixerState& state, const Tensor& x_t) const override;
  int64_t state_size(int64_t t) const override { return seqmix::state_size(opt_, d_model_, t); }
  void parameters(const std::string& prefix, Parameters& out) const override;

  int64_t d_model() const { return d_model_; }
  int64_t d_inner() const { return d_inner_; }  // E
  int64_t d_state() const { return d_state_; }  // N
  int64_t d_conv() const { return d_conv_; }
  int64_t dt_rank() const { return dt_rank_; }  // R (resolved from "auto")
  // Steps per chunk of the scan's checkpointing (memory B*ceil(L/chunk)*E*N); tests
  // lower it to exercise many chunk boundaries.
  void set_scan_chunk(int64_t chunk);

  // Parameters (docs/mixers.md#mamba names).
  Tensor in_proj_weight;   // (2E, D)
  Tensor conv1d_weight;    // (E, 1, d_conv)
  Tensor conv1d_bias;      // (E)
  Tensor x_proj_weight;    // (R+2N, E)
  Tensor dt_proj_weight;   // (E, R)
  Tensor dt_proj_bias;     // (E)
  Tensor A_log;            // (E, N)
  Tensor D;                // (E)
  Tensor out_proj_weight;  // (D, E)

 private:
  int64_t d_model_, d_inner_, d_state_, d_conv_, dt_rank_;
  int64_t scan_chunk_ = 64;
  MambaOptions opt_;
  DType dtype_;
};

}  // namespace seqmix
