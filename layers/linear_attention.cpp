// Linear attention (docs/mixers.md#linear_attention): parameters, the parallel form and the recurrent
// form with a constant-size state.
#include "layers/linear_attention.h"

#include <cmath>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/linear_attention_kernel.h"

namespace seqmix {

void check_options(const LinearAttentionOptions& opt, int64_t d_model, OptionCheck& check) {
  const bool d_ok = check.at_least("d_model", d_model, 1);
  if (check.at_least("num_heads", opt.num_heads, 1) && d_ok)
    check.divides({"num_heads", "d_model"}, check.name("d_model"), d_model, "num_heads", opt.num_heads,
                  "each head takes d_model / num_heads channels");
  // phi > 0 keeps the denominator positive even at eps = 0; eps > 0 keeps it away from
  // the float underflow of phi(q) . z for very negative q and k.
  check.positive("eps", opt.eps);
}

LinearAttentionMixer::LinearAttentionMixer(int64_t d_model, const LinearAttentionOptions& opt, const LayerInit& init)
    : d_model_(d_model), opt_(opt) {
  OptionCheck check;
  check_options(opt, d_model, check);
  check.throw_if_any("linear_attention");
  const int64_t D = d_model;
  // Draw order: q, k, v, out weights (biases are constants).
  q_weight_ = param_normal({D, D}, 0.02, init);
  q_bias_ = param_constant({D}, 0.0, init);
  k_weight_ = param_normal({D, D}, 0.02, init);
  k_bias_ = param_constant({D}, 0.0, init);
  v_weight_ = param_normal({D, D}, 0.02, init);
  v_bias_ = param_constant({D}, 0.0, init);
  out_weight_ = param_normal({D, D}, scaled_init_std(init), init);
  out_bias_ = param_constant({D}, 0.0, init);
}

void LinearAttentionMixer::parameters(const std::string& prefix, Parameters& out) const {
  out.push_back({prefix + "q_proj.weight", q_weight_, kDecay});
  out.push_back({prefix + "q_proj.bias", q_bias_, kNoDecay});
  out.push_back({prefix + "k_proj.weight", k_weight_, kDecay});
  out.push_back({prefix + "k_proj.bias", k_bias_, kNoDecay});
  out.push_back({prefix + "v_proj.weight", v_weight_, kDecay});
  out.push_back({prefix + "v_proj.bias", v_bias_, kNoDecay});
  out.push_back({prefix + "out_proj.weight", out_weight_, kDecay});
  out.push_back({prefix + "out_proj.bias", out_bias_, kNoDecay});
}

int64_t state_size(const LinearAttentionOptions& opt, int64_t d_model, int64_t) {
  const int64_t d = d_model / opt.num_heads;
  return opt.num_heads * (d * d + d);
}

Tensor LinearAttentionMixer::forward(const Tensor& x, bool, Generator&) {
  if (x.ndim() != 3 || x.size(2) != d_model_)
    throw ShapeError("linear_attention: input " + shape_str(x.shape()) + ", expected (B, L, " +
                     std::to_string(d_model_) + ")");
  check_same_dtype("linear_attention", {&x, &q_weight_});
  Tensor q = linear(x, q_weight_, q_bias_);
  Tensor k = linear(x, k_weight_, k_bias_);
  Tensor v = linear(x, v_weight_, v_bias_);
  Tensor o = causal_linear_attention(q, k, v, opt_.num_heads, opt_.eps);
  return linear(o, out_weight_, out_bias_);
}

std::unique_ptr<MixerState> LinearAttentionMixer::init_state(int64_t batch) const {
  if (batch < 1) throw ShapeError("linear_attention: init_state needs batch >= 1, got " + std::to_string(batch));
  const int64_t H = opt_.num_heads, d = d_model_ / H;
  auto s = std::make_unique<LinearAttentionState>();
  s->batch = batch;
  s->S = Tensor::zeros({batch, H, d, d}, q_weight_.dtype());
  s->z = Tensor::zeros({batch, H, d}, q_weight_.dtype());
  return s;
}

Tensor LinearAttentionMixer::step(MixerState& state, const Tensor& x_t) const {
  auto* s = dynamic_cast<LinearAttentionState*>(&state);
  if (!s) throw ShapeError("linear_attention: step was given a state that is not a LinearAttentionState");
  if (x_t.ndim() != 2 || x_t.size(0) != s->batch || x_t.size(1) != d_model_)
    throw ShapeError("linear_attention: step input " + shape_str(x_t.shape()) + ", expected (" +
                     std::to_string(s->batch) + ", " + std::to_string(d_model_) + ")");
  check_same_dtype("linear_attention step", {&x_t, &q_weight_});
  NoGradGuard no_grad;
  const int64_t B = s->batch, D = d_model_, H = opt_.num_heads, d = D / H;
  Tensor q = linear(x_t, q_weight_, q_bias_);
  Tensor k = linear(x_t, k_weight_, k_bias_);
  Tensor v = linear(x_t, v_weight_, v_bias_);
  Tensor o = Tensor::empty({B, D}, x_t.dtype());
  const double eps = opt_.eps;
  dispatch_float(x_t.dtype(), "linear_attention step", [&](auto tag) {
    using T = decltype(tag);
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>();
    T* Sp = s->S.data<T>();
    T* zp = s->z.data<T>();
    T* op = o.data<T>();
    auto phi = [](double x) { return x > 0 ? x + 1.0 : std::exp(x); };  // elu(x) + 1
#pragma omp parallel for schedule(static) if (B * D * d >= (1 << 15))
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* qh = qp + b * D + h * d;
      const T* kh = kp + b * D + h * d;
      const T* vh = vp + b * D + h * d;
      T* S = Sp + bh * d * d;
      T* z = zp + bh * d;
      // S += phi(k) v^T, z += phi(k): the state includes the current token.
      for (int64_t i = 0; i < d; ++i) {
        const T fk = static_cast<T>(phi(kh[i]));
        for (int64_t j = 0; j < d; ++j) S[i * d + j] += fk * vh[j];
        z[i] += fk;
      }
      std::vector<double> num(d, 0.0);
      double den = eps;
      for (int64_t i = 0; i < d; ++i) {
        const double fq = phi(qh[i]);
        for (int64_t j = 0; j < d; ++j) num[j] += fq * S[i * d + j];
        den += fq * z[i];
      }
      for (int64_t j = 0; j < d; ++j) op[b * D + h * d + j] = static_cast<T>(num[j] / den);
    }
  });
  s->t += 1;
  return linear(o, out_weight_, out_bias_);
}

}  // namespace seqmix
