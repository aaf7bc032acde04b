// GlaMixer: parameters, the parallel form (oneDNN projections around the fused ops of
// layers/gla_kernel.cpp) and the recurrent step (docs/mixers.md#gla).
#include "layers/gla.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/gla_kernel.h"
#include "layers/gla_math.h"

namespace seqmix {

int64_t gla_width(int64_t d_model, double expand) {
  return static_cast<int64_t>(std::llround(static_cast<double>(d_model) * expand));
}

void check_options(const GlaOptions& g, int64_t d_model, OptionCheck& check) {
  const bool d_ok = check.at_least("d_model", d_model, 1);
  const bool heads_ok = check.at_least("num_heads", g.num_heads, 1);
  const bool k_ok = check.positive("expand_k", g.expand_k);
  const bool v_ok = check.positive("expand_v", g.expand_v);
  check.at_least("gate_low_rank_dim", g.gate_low_rank_dim, 1);
  check.positive("gate_logit_normalizer", g.gate_logit_normalizer);
  check.positive("norm_eps", g.norm_eps);
  for (const auto& [key, expand, ok] : {std::tuple<std::string, double, bool>{"expand_k", g.expand_k, k_ok},
                                        std::tuple<std::string, double, bool>{"expand_v", g.expand_v, v_ok}}) {
    if (!ok || !d_ok) continue;
    const double width = static_cast<double>(d_model) * expand;
    const double rounded = std::round(width);
    const std::string text = check.name("d_model") + " * " + check.name(key);
    if (std::fabs(width - rounded) > 1e-9 * std::max(1.0, width) || rounded < 1) {
      check.add({key, "d_model"}, text + " = " + std::to_string(d_model) + " * " + format_number(expand) + " = " +
                                      format_number(width) + " is not a positive whole number of channels");
    } else if (heads_ok) {
      check.divides({"num_heads", key, "d_model"}, text, gla_width(d_model, expand), "num_heads", g.num_heads,
                    "gla splits it into equal heads");
    }
  }
}

GlaMixer::GlaMixer(int64_t d_model, const GlaOptions& opt, const LayerInit& init) : d_model_(d_model), opt_(opt) {
  OptionCheck check;
  check_options(opt, d_model, check);
  check.throw_if_any("gla");
  heads_ = opt.num_heads;
  key_dim_ = gla_width(d_model, opt.expand_k);
  value_dim_ = gla_width(d_model, opt.expand_v);
  const int64_t r = opt.gate_low_rank_dim;
  // Draw order follows the parameter table of docs/mixers.md#gla, so a seed fixes every value.
  q_weight_ = param_normal({key_dim_, d_model}, 0.02, init);
  k_weight_ = param_normal({key_dim_, d_model}, 0.02, init);
  v_weight_ = param_normal({value_dim_, d_model}, 0.02, init);
  g_weight_ = param_normal({value_dim_, d_model}, 0.02, init);
  gk0_weight_ = param_normal({r, d_model}, 0.02, init);
  gk1_weight_ = param_normal({key_dim_, r}, 0.02, init);
  gk1_bias_ = param_constant({key_dim_}, 0.0, init);
  norm_weight_ = param_constant({value_dim_ / heads_}, 1.0, init);
  o_weight_ = param_normal({d_model, value_dim_}, scaled_init_std(init), init);
}

void GlaMixer::parameters(const std::string& prefix, Parameters& out) const {
  out.push_back({prefix + "q_proj.weight", q_weight_, kDecay});
  out.push_back({prefix + "k_proj.weight", k_weight_, kDecay});
  out.push_back({prefix + "v_proj.weight", v_weight_, kDecay});
  out.push_back({prefix + "g_proj.weight", g_weight_, kDecay});
  out.push_back({prefix + "gk_proj.0.weight", gk0_weight_, kDecay});
  out.push_back({prefix + "gk_proj.1.weight", gk1_weight_, kDecay});
  out.push_back({prefix + "gk_proj.1.bias", gk1_bias_, kNoDecay});
  out.push_back({prefix + "g_norm.weight", norm_weight_, kNoDecay});
  out.push_back({prefix + "o_proj.weight", o_weight_, kDecay});
}

Tensor GlaMixer::forward(const Tensor& x, bool /*training*/, Generator& /*gen*/) {
  if (x.ndim() != 3 || x.size(2) != d_model_)
    throw ShapeError("GlaMixer: input must be (B, L, " + std::to_string(d_model_) + "), got " + shape_str(x.shape()));
  const double scale = 1.0 / std::sqrt(static_cast<double>(key_dim_ / heads_));
  Tensor q = linear(x, q_weight_);
  Tensor k = linear(x, k_weight_);
  Tensor v = linear(x, v_weight_);
  Tensor g = linear(x, g_weight_);
  Tensor gate_logits = linear(linear(x, gk0_weight_), gk1_weight_, gk1_bias_);
  Tensor o = gla_chunk_attention(q, k, v, gate_logits, heads_, scale, opt_.gate_logit_normalizer);
  Tensor gated = gla_norm_gate(o, g, norm_weight_, heads_, opt_.norm_eps);
  return linear(gated, o_weight_);
}

std::unique_ptr<MixerState> GlaMixer::init_state(int64_t batch) const {
  auto st = std::make_unique<GlaState>();
  st->S = Tensor::zeros({batch, heads_, key_dim_ / heads_, value_dim_ / heads_}, q_weight_.dtype());
  return st;
}

int64_t state_size(const GlaOptions& opt, int64_t d_model, int64_t /*t*/) {
  const int64_t H = opt.num_heads;
  return H * (gla_width(d_model, opt.expand_k) / H) * (gla_width(d_model, opt.expand_v) / H);
}

Tensor GlaMixer::step(MixerState& state, const Tensor& x_t) const {
  auto* st = dynamic_cast<GlaState*>(&state);
  if (!st) throw ShapeError("GlaMixer::step: the state was not made by GlaMixer::init_state");
  const int64_t B = st->S.size(0);
  check_shape("GlaMixer::step", "x_t", x_t, {B, d_model_});
  NoGradGuard no_grad;
  const int64_t H = heads_, dk = key_dim_ / H, dv = value_dim_ / H;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dk));
  Tensor q = linear(x_t, q_weight_);
  Tensor k = linear(x_t, k_weight_);
  Tensor v = linear(x_t, v_weight_);
  Tensor g = linear(x_t, g_weight_);
  Tensor u = linear(linear(x_t, gk0_weight_), gk1_weight_, gk1_bias_);
  Tensor o = Tensor::empty({B, value_dim_}, x_t.dtype());
  dispatch_float(x_t.dtype(), "GlaMixer::step", [&](auto tag) {
    using T = decltype(tag);
    const T* Q = q.data<T>();
    const T* K = k.data<T>();
    const T* V = v.data<T>();
    const T* U = u.data<T>();
    T* S = st->S.data<T>();
    T* O = o.data<T>();
    const T norm = T(opt_.gate_logit_normalizer);
    // Decay, then add, then read out: S = diag(a) S + k v^T, o = (q * scale)^T S.
#pragma omp parallel for schedule(static) if (B * H * dk * dv >= (int64_t(1) << 16))
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      T* Sh = S + bh * dk * dv;
      T* Oh = O + b * value_dim_ + h * dv;
      const T* vh = V + b * value_dim_ + h * dv;
      for (int64_t e = 0; e < dv; ++e) Oh[e] = 0;
      for (int64_t x = 0; x < dk; ++x) {
        const int64_t ix = b * key_dim_ + h * dk + x;
        // The same logsigmoid and exp as the chunked kernel, so the two forms round alike.
        const T a = gla_math::exp_nonpos(gla_math::log_sigmoid(U[ix]) / norm);
        const T kx = K[ix], qx = T(scale) * Q[ix];
        T* Sx = Sh + x * dv;
        for (int64_t e = 0; e < dv; ++e) {
          Sx[e] = a * Sx[e] + kx * vh[e];
          Oh[e] += qx * Sx[e];
        }
      }
    }
  });
  st->t += 1;
  Tensor gated = gla_norm_gate(o, g, norm_weight_, H, opt_.norm_eps);
  return linear(gated, o_weight_);
}

}  // namespace seqmix
