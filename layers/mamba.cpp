#include "layers/mamba.h"

#include <cmath>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/mamba_kernel.h"

namespace seqmix {

void check_options(const MambaOptions& s, int64_t d_model, OptionCheck& check) {
  check.at_least("d_model", d_model, 1);
  check.at_least("d_state", s.d_state, 1);
  check.at_least("d_conv", s.d_conv, 1);
  check.at_least("expand", s.expand, 1);
  if (s.dt_rank < 0)
    check.add({"dt_rank"}, check.name("dt_rank") + " = " + std::to_string(s.dt_rank) +
                               " is out of range: must be a positive integer or 'auto'");
  const bool min_ok = check.positive("dt_min", s.dt_min);
  const bool max_ok = check.positive("dt_max", s.dt_max);
  if (min_ok && max_ok && !(s.dt_min < s.dt_max))
    check.add({"dt_min", "dt_max"}, check.name("dt_min") + " = " + format_number(s.dt_min) +
                                        " must be smaller than " + check.name("dt_max") + " = " +
                                        format_number(s.dt_max));
  check.non_negative("dt_init_floor", s.dt_init_floor);
}

int64_t mamba_dt_rank(const MambaOptions& opt, int64_t d_model) {
  return opt.dt_rank > 0 ? opt.dt_rank : (d_model + 15) / 16;
}

MambaMixer::MambaMixer(int64_t d_model, const MambaOptions& opt, const LayerInit& init)
    : opt_(opt), dtype_(init.dtype) {
  OptionCheck check;
  check_options(opt, d_model, check);
  check.throw_if_any("mamba");
  if (!init.gen) throw ShapeError("MambaMixer: LayerInit has no generator");
  d_model_ = d_model;
  d_inner_ = opt.expand * d_model;
  d_state_ = opt.d_state;
  d_conv_ = opt.d_conv;
  dt_rank_ = mamba_dt_rank(opt, d_model);
  const int64_t E = d_inner_, N = d_state_, R = dt_rank_, K = d_conv_;

  // Draw order as mamba_simple constructs its modules.
  in_proj_weight = param_normal({2 * E, d_model}, 0.02, init);
  const double conv_bound = 1.0 / std::sqrt(static_cast<double>(K));  // torch Conv1d default, fan_in = K
  conv1d_weight = param_uniform({E, 1, K}, -conv_bound, conv_bound, init);
  conv1d_bias = param_uniform({E}, -conv_bound, conv_bound, init);
  x_proj_weight = param_normal({R + 2 * N, E}, 0.02, init);
  const double dt_std = 1.0 / std::sqrt(static_cast<double>(R));  // dt_init "random", dt_scale 1
  dt_proj_weight = param_uniform({E, R}, -dt_std, dt_std, init);
  // dt ~ exp(U(log dt_min, log dt_max)) floored at dt_init_floor; the bias is
  // softplus^-1(dt) = dt + log(-expm1(-dt)), so that softplus(bias) = dt at init.
  std::vector<double> inv_dt(static_cast<size_t>(E));
  const double lmin = std::log(opt.dt_min), lmax = std::log(opt.dt_max);
  for (double& v : inv_dt) {
    double dt = std::exp(init.gen->uniform(lmin, lmax));
    dt = std::max(dt, opt.dt_init_floor);
    v = dt + std::log(-std::expm1(-dt));
  }
  dt_proj_bias = param_from({E}, inv_dt, init);
  // S4D-real: A[e,n] = -(n+1).
  std::vector<double> alog(static_cast<size_t>(E * N));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n) alog[e * N + n] = std::log(static_cast<double>(n + 1));
  A_log = param_from({E, N}, alog, init);
  D = param_constant({E}, 1.0, init);
  out_proj_weight = param_normal({d_model, E}, scaled_init_std(init), init);
}

void MambaMixer::set_scan_chunk(int64_t chunk) {
  if (chunk < 1) throw ShapeError("MambaMixer: scan chunk must be >= 1, got " + std::to_string(chunk));
  scan_chunk_ = chunk;
}

Tensor MambaMixer::forward(const Tensor& x, bool /*training*/, Generator& /*gen*/) {
  if (!x.defined() || x.ndim() != 3 || x.size(2) != d_model_)
    throw ShapeError("MambaMixer: input has shape " + (x.defined() ? shape_str(x.shape()) : std::string("undefined")) +
                     ", expected (B, L, " + std::to_string(d_model_) + ")");
  if (x.dtype() != dtype_)
    throw ShapeError(std::string("MambaMixer: input is ") + dtype_name(x.dtype()) + ", the layer is " +
                     dtype_name(dtype_));
  const int64_t E = d_inner_, N = d_state_, R = dt_rank_;
  Tensor xz = linear(x, in_proj_weight);                                  // (B, L, 2E)
  Tensor xc = mamba_conv1d_silu({xz, 0}, conv1d_weight, conv1d_bias);     // (B, L, E)
  Tensor xdbl = linear(xc, x_proj_weight);                                // (B, L, R+2N)
  Tensor dr = mamba_linear_columns({xdbl, 0}, dt_proj_weight, dt_proj_bias);  // (B, L, E)
  Tensor yg = selective_scan(xc, dr, A_log, {xdbl, R}, {xdbl, R + N}, D, {xz, E}, scan_chunk_);
  return linear(yg, out_proj_weight);  // (B, L, D)
}

std::unique_ptr<MixerState> MambaMixer::init_state(int64_t batch) const {
  if (batch < 1) throw ShapeError("MambaMixer::init_state: batch must be >= 1, got " + std::to_string(batch));
  auto s = std::make_unique<MambaState>();
  s->conv = Tensor::zeros({batch, d_conv_ - 1, d_inner_}, dtype_);
  s->ssm = Tensor::zeros({batch, d_inner_, d_state_}, dtype_);
  return s;
}

Tensor MambaMixer::step(MixerState& state, const Tensor& x_t) const {
  auto* s = dynamic_cast<MambaState*>(&state);
  if (!s) throw ShapeError("MambaMixer::step: the state was not made by MambaMixer::init_state");
  const int64_t B = s->ssm.size(0);
  if (!x_t.defined() || x_t.ndim() != 2 || x_t.size(0) != B || x_t.size(1) != d_model_)
    throw ShapeError("MambaMixer::step: x_t has shape " +
                     (x_t.defined() ? shape_str(x_t.shape()) : std::string("undefined")) + ", expected (" +
                     std::to_string(B) + ", " + std::to_string(d_model_) + ")");
  NoGradGuard no_grad;
  const int64_t E = d_inner_, N = d_state_, R = dt_rank_;
  Tensor xz = linear(x_t, in_proj_weight);                                         // (B, 2E)
  Tensor xc = mamba_conv1d_silu_step(s->conv, {xz, 0}, conv1d_weight, conv1d_bias);  // (B, E)
  Tensor xdbl = linear(xc, x_proj_weight);                                         // (B, R+2N)
  Tensor dr = mamba_linear_columns({xdbl, 0}, dt_proj_weight, dt_proj_bias);       // (B, E)
  Tensor yg = selective_scan_step(s->ssm, xc, dr, A_log, {xdbl, R}, {xdbl, R + N}, D, {xz, E}, s->decay);
  ++s->t;
  return linear(yg, out_proj_weight);  // (B, D)
}

int64_t state_size(const MambaOptions& opt, int64_t d_model, int64_t /*t*/) {
  const int64_t E = opt.expand * d_model;
  return E * (opt.d_conv - 1) + E * opt.d_state;
}

void MambaMixer::parameters(const std::string& prefix, Parameters& out) const {
  out.push_back({prefix + "in_proj.weight", in_proj_weight, kDecay});
  out.push_back({prefix + "conv1d.weight", conv1d_weight, kDecay});
  out.push_back({prefix + "conv1d.bias", conv1d_bias, kNoDecay});
  out.push_back({prefix + "x_proj.weight", x_proj_weight, kDecay});
  out.push_back({prefix + "dt_proj.weight", dt_proj_weight, kDecay});
  out.push_back({prefix + "dt_proj.bias", dt_proj_bias, kNoDecay});
  out.push_back({prefix + "A_log", A_log, kNoDecay});
  out.push_back({prefix + "D", D, kNoDecay});
  out.push_back({prefix + "out_proj.weight", out_proj_weight, kDecay});
}

}  // namespace seqmix
