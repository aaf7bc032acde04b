// H3Mixer: parameters and initialisation as docs/mixers.md#h3, the parallel form through
// linear() and the two fused SSM ops, the recurrent form through h3_core_step.
#include "layers/h3.h"

#include <cmath>

#include "core/ops.h"
#include "core/tape.h"

namespace seqmix {

void check_options(const H3Options& opt, int64_t d_model, OptionCheck& check) {
  const bool d_ok = check.at_least("d_model", d_model, 1);
  if (check.at_least("d_state", opt.d_state, 2) && opt.d_state % 2 != 0)
    check.add({"d_state"}, check.name("d_state") + " = " + std::to_string(opt.d_state) +
                               " must be even (h3's diagonal SSM uses d_state/2 complex modes)");
  if (check.at_least("head_dim", opt.head_dim, 1) && d_ok)
    check.divides({"head_dim", "d_model"}, check.name("d_model"), d_model, "head_dim", opt.head_dim,
                  "h3 has d_model / head_dim heads");
}

H3Mixer::H3Mixer(int64_t d_model, const H3Options& opt, const LayerInit& init)
    : d_model_(d_model), d_state_(opt.d_state), opt_(opt) {
  OptionCheck check;
  check_options(opt, d_model, check);
  check.throw_if_any("h3");
  if (!init.gen) throw ShapeError("H3Mixer: LayerInit has no generator");
  const int64_t D = d_model, N = opt.d_state, Nh = N / 2, H = D / opt.head_dim;
  // Draws in named_parameters order, so the values depend only on the seed.
  q_w_ = param_normal({D, D}, 0.02, init);
  q_b_ = param_constant({D}, 0.0, init);
  k_w_ = param_normal({D, D}, 0.02, init);
  k_b_ = param_constant({D}, 0.0, init);
  v_w_ = param_normal({D, D}, 0.02, init);
  v_b_ = param_constant({D}, 0.0, init);

  ssm_.head_dim = opt.head_dim;
  // Shift SSM: B = e_0, so f_d[l] = C[d, l] at initialisation; C as torch's
  // Conv1d init (kaiming_uniform with a = sqrt(5), fan_in N): U(-1/sqrt(N), 1/sqrt(N)).
  std::vector<double> e0(D * N, 0.0);
  for (int64_t d = 0; d < D; ++d) e0[d * N] = 1.0;
  ssm_.shift_B = param_from({D, N}, e0, init);
  const double bound = 1.0 / std::sqrt(static_cast<double>(N));
  ssm_.shift_C = param_uniform({D, N}, -bound, bound, init);
  ssm_.shift_D = param_normal({D}, 1.0, init);

  // Diagonal SSM, S4D-Lin: A_n = -1/2 + i pi n, B = 1, dt log-uniform in [1e-3, 1e-1].
  ssm_.log_dt = param_uniform({H}, std::log(0.001), std::log(0.1), init);
  ssm_.inv_A_real = param_constant({H, Nh}, std::log(0.5), init);
  std::vector<double> aim(H * Nh), bd(H * Nh * 2);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < Nh; ++n) {
      aim[h * Nh + n] = M_PI * static_cast<double>(n);
      bd[(h * Nh + n) * 2] = 1.0;
      bd[(h * Nh + n) * 2 + 1] = 0.0;
    }
  ssm_.A_imag = param_from({H, Nh}, aim, init);
  ssm_.diag_B = param_from({H, Nh, 2}, bd, init);
  // C's real and imaginary parts each have variance 1/2 (std sqrt(1/2)), as the
  // reference's torch.randn(..., dtype=cfloat): E|C|^2 = 1.
  ssm_.diag_C = param_normal({H, Nh, 2}, std::sqrt(0.5), init);
  ssm_.diag_D = param_normal({H}, 1.0, init);

  out_w_ = param_normal({D, D}, scaled_init_std(init), init);
  out_b_ = param_constant({D}, 0.0, init);
}

Tensor H3Mixer::forward(const Tensor& x, bool /*training*/, Generator& /*gen*/) {
  if (!x.defined() || x.ndim() != 3 || x.size(2) != d_model_)
    throw ShapeError("H3Mixer: input " + (x.defined() ? shape_str(x.shape()) : std::string("undefined")) +
                     ", expected (B, L, " + std::to_string(d_model_) + ")");
  const Tensor q = linear(x, q_w_, q_b_);
  const Tensor k = linear(x, k_w_, k_b_);
  const Tensor v = linear(x, v_w_, v_b_);
  const Tensor kt = h3_shift_conv(k, ssm_);
  const Tensor o = h3_diag_mix(q, kt, v, ssm_);
  return linear(o, out_w_, out_b_);
}

std::unique_ptr<MixerState> H3Mixer::init_state(int64_t batch) const {
  if (batch < 1) throw ShapeError("H3Mixer::init_state: batch must be positive, got " + std::to_string(batch));
  auto s = std::make_unique<H3State>();
  s->core = h3_core_state(batch, d_model_, d_state_, ssm_.head_dim, q_w_.dtype());
  return s;
}

Tensor H3Mixer::step(MixerState& state, const Tensor& x_t) const {
  auto* s = dynamic_cast<H3State*>(&state);
  if (!s) throw ShapeError("H3Mixer::step: the state was not made by H3Mixer::init_state");
  if (!x_t.defined() || x_t.ndim() != 2 || x_t.size(1) != d_model_ || x_t.size(0) != s->core.kbuf.size(0))
    throw ShapeError("H3Mixer::step: input " + (x_t.defined() ? shape_str(x_t.shape()) : std::string("undefined")) +
                     ", expected (" + std::to_string(s->core.kbuf.size(0)) + ", " + std::to_string(d_model_) + ")");
  NoGradGuard no_grad;
  const Tensor q = linear(x_t, q_w_, q_b_);
  const Tensor k = linear(x_t, k_w_, k_b_);
  const Tensor v = linear(x_t, v_w_, v_b_);
  const Tensor o = h3_core_step(s->core, q, k, v, ssm_);
  s->t = s->core.t;
  return linear(o, out_w_, out_b_);
}

int64_t state_size(const H3Options& opt, int64_t d_model, int64_t /*t*/) {
  return d_model * (opt.d_state - 1) + d_model * opt.head_dim * opt.d_state;
}

void H3Mixer::parameters(const std::string& prefix, Parameters& out) const {
  out.push_back({prefix + "q_proj.weight", q_w_, kDecay});
  out.push_back({prefix + "q_proj.bias", q_b_, kNoDecay});
  out.push_back({prefix + "k_proj.weight", k_w_, kDecay});
  out.push_back({prefix + "k_proj.bias", k_b_, kNoDecay});
  out.push_back({prefix + "v_proj.weight", v_w_, kDecay});
  out.push_back({prefix + "v_proj.bias", v_b_, kNoDecay});
  out.push_back({prefix + "ssm_shift.B", ssm_.shift_B, kNoDecay});
  out.push_back({prefix + "ssm_shift.C", ssm_.shift_C, kNoDecay});
  out.push_back({prefix + "ssm_shift.D", ssm_.shift_D, kNoDecay});
  out.push_back({prefix + "ssm_diag.log_dt", ssm_.log_dt, kNoDecay});
  out.push_back({prefix + "ssm_diag.inv_A_real", ssm_.inv_A_real, kNoDecay});
  out.push_back({prefix + "ssm_diag.A_imag", ssm_.A_imag, kNoDecay});
  out.push_back({prefix + "ssm_diag.B", ssm_.diag_B, kNoDecay});
  out.push_back({prefix + "ssm_diag.C", ssm_.diag_C, kNoDecay});
  out.push_back({prefix + "ssm_diag.D", ssm_.diag_D, kNoDecay});
  out.push_back({prefix + "out_proj.weight", out_w_, kDecay});
  out.push_back({prefix + "out_proj.bias", out_b_, kNoDecay});
}

}  // namespace seqmix
