#include "tests/support/reference_gla.h"

#include <cmath>
#include <string>

namespace seqmix::testing {

namespace {

double log_sigmoid(double u) { return std::min(u, 0.0) - std::log1p(std::exp(-std::fabs(u))); }
double sigmoid(double u) { return 1.0 / (1.0 + std::exp(-u)); }

struct CoreDims {
  int64_t B, L, H, dk, dv;
};

CoreDims core_dims(const Tensor& q, const Tensor& v, int64_t heads) {
  return {q.size(0), q.size(1), heads, q.size(2) / heads, v.size(2) / heads};
}

// Runs the recurrence; fills o (B, L, H*dv) and, if all_states, every S_t
// (B, H, L, dk, dv).
void run_core(const CoreDims& d, const std::vector<double>& q, const std::vector<double>& k,
              const std::vector<double>& v, const std::vector<double>& u, double scale, double normalizer,
              std::vector<double>& o, std::vector<double>* all_states) {
  const int64_t Dk = d.H * d.dk, Dv = d.H * d.dv;
  o.assign(d.B * d.L * Dv, 0.0);
  if (all_states) all_states->assign(d.B * d.H * d.L * d.dk * d.dv, 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      std::vector<double> S(d.dk * d.dv, 0.0);
      for (int64_t t = 0; t < d.L; ++t) {
        const int64_t rk = (b * d.L + t) * Dk + h * d.dk, rv = (b * d.L + t) * Dv + h * d.dv;
        for (int64_t x = 0; x < d.dk; ++x) {
          const double a = std::exp(log_sigmoid(u[rk + x]) / normalizer);
          for (int64_t e = 0; e < d.dv; ++e) S[x * d.dv + e] = a * S[x * d.dv + e] + k[rk + x] * v[rv + e];
        }
        for (int64_t e = 0; e < d.dv; ++e) {
          double acc = 0;
          for (int64_t x = 0; x < d.dk; ++x) acc += scale * q[rk + x] * S[x * d.dv + e];
          o[rv + e] = acc;
        }
        if (all_states)
          std::copy(S.begin(), S.end(), all_states->begin() + ((b * d.H + h) * d.L + t) * d.dk * d.dv);
      }
    }
}

}  // namespace

Tensor reference_gla_core(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u, int64_t heads,
                          double scale, double normalizer) {
  const CoreDims d = core_dims(q, v, heads);
  std::vector<double> o;
  run_core(d, q.to_f64_vector(), k.to_f64_vector(), v.to_f64_vector(), u.to_f64_vector(), scale, normalizer, o,
           nullptr);
  return Tensor::from_vector({d.B, d.L, d.H * d.dv}, o);
}

std::vector<Tensor> reference_gla_core_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& u,
                                                const Tensor& dO, int64_t heads, double scale, double normalizer) {
  const CoreDims d = core_dims(q, v, heads);
  const int64_t Dk = d.H * d.dk, Dv = d.H * d.dv;
  const std::vector<double> Q = q.to_f64_vector(), K = k.to_f64_vector(), V = v.to_f64_vector(),
                            U = u.to_f64_vector(), G = dO.to_f64_vector();
  std::vector<double> o, states;
  run_core(d, Q, K, V, U, scale, normalizer, o, &states);
  std::vector<double> dq(Q.size(), 0.0), dk(K.size(), 0.0), dv(V.size(), 0.0), du(U.size(), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.H; ++h) {
      std::vector<double> dS(d.dk * d.dv, 0.0);
      for (int64_t t = d.L - 1; t >= 0; --t) {
        const int64_t rk = (b * d.L + t) * Dk + h * d.dk, rv = (b * d.L + t) * Dv + h * d.dv;
        const double* St = &states[((b * d.H + h) * d.L + t) * d.dk * d.dv];
        const double* Sprev = t > 0 ? St - d.dk * d.dv : nullptr;
        for (int64_t x = 0; x < d.dk; ++x) {
          double acc = 0;
          for (int64_t e = 0; e < d.dv; ++e) {
            dS[x * d.dv + e] += scale * Q[rk + x] * G[rv + e];
            acc += St[x * d.dv + e] * G[rv + e];
          }
          dq[rk + x] = scale * acc;
        }
        for (int64_t x = 0; x < d.dk; ++x) {
          double acc = 0;
          for (int64_t e = 0; e < d.dv; ++e) acc += dS[x * d.dv + e] * V[rv + e];
          dk[rk + x] = acc;
        }
        for (int64_t e = 0; e < d.dv; ++e) {
          double acc = 0;
          for (int64_t x = 0; x < d.dk; ++x) acc += dS[x * d.dv + e] * K[rk + x];
          dv[rv + e] = acc;
        }
        for (int64_t x = 0; x < d.dk; ++x) {
          const double a = std::exp(log_sigmoid(U[rk + x]) / normalizer);
          double da = 0;
          if (Sprev)
            for (int64_t e = 0; e < d.dv; ++e) da += dS[x * d.dv + e] * Sprev[x * d.dv + e];
          // a = exp(logsigmoid(u)/N): da/du = a * sigmoid(-u) / N.
          du[rk + x] = da * a * sigmoid(-U[rk + x]) / normalizer;
          for (int64_t e = 0; e < d.dv; ++e) dS[x * d.dv + e] *= a;
        }
      }
    }
  return {Tensor::from_vector(q.shape(), dq), Tensor::from_vector(k.shape(), dk), Tensor::from_vector(v.shape(), dv),
          Tensor::from_vector(u.shape(), du)};
}

Tensor reference_gla_norm_gate(const Tensor& o, const Tensor& g, const Tensor& weight, int64_t heads, double eps) {
  const std::vector<double> O = o.to_f64_vector(), Gt = g.to_f64_vector(), W = weight.to_f64_vector();
  const int64_t dv = o.size(-1) / heads, groups = o.numel() / dv;
  std::vector<double> y(O.size());
  for (int64_t r = 0; r < groups; ++r) {
    double ms = 0;
    for (int64_t e = 0; e < dv; ++e) ms += O[r * dv + e] * O[r * dv + e];
    const double rs = 1.0 / std::sqrt(ms / dv + eps);
    for (int64_t e = 0; e < dv; ++e) {
      const double gv = Gt[r * dv + e];
      y[r * dv + e] = O[r * dv + e] * rs * W[e] * gv * sigmoid(gv);
    }
  }
  return Tensor::from_vector(o.shape(), y);
}

namespace {

constexpr const char* kTwin = "reference_gla";

// The layer's intermediates, shared by forward and backward.
struct GlaFwd {
  int64_t B, L, D, H, Dk, Dv, r;
  std::vector<double> X, q, k, v, g, low, u, o, gated;
};

GlaFwd gla_layer_forward(const NamedTensors& p, const GlaOptions& opt, const Tensor& x) {
  GlaFwd f;
  f.B = x.size(0), f.L = x.size(1), f.D = x.size(2), f.H = opt.num_heads;
  const int64_t rows = f.B * f.L;
  const Tensor& w0 = ref_param(p, "gk_proj.0.weight", kTwin);
  f.Dk = ref_param(p, "q_proj.weight", kTwin).size(0), f.Dv = ref_param(p, "v_proj.weight", kTwin).size(0);
  f.r = w0.size(0);
  f.X = x.to_f64_vector();
  f.q = ref_linear_forward(f.X, rows, ref_param(p, "q_proj.weight", kTwin));
  f.k = ref_linear_forward(f.X, rows, ref_param(p, "k_proj.weight", kTwin));
  f.v = ref_linear_forward(f.X, rows, ref_param(p, "v_proj.weight", kTwin));
  f.g = ref_linear_forward(f.X, rows, ref_param(p, "g_proj.weight", kTwin));
  f.low = ref_linear_forward(f.X, rows, w0);
  f.u = ref_linear_forward(f.low, rows, ref_param(p, "gk_proj.1.weight", kTwin), ref_param(p, "gk_proj.1.bias", kTwin));
  run_core(CoreDims{f.B, f.L, f.H, f.Dk / f.H, f.Dv / f.H}, f.q, f.k, f.v, f.u, 1.0 / std::sqrt(double(f.Dk / f.H)),
           opt.gate_logit_normalizer, f.o, nullptr);
  f.gated = reference_gla_norm_gate(Tensor::from_vector({f.B, f.L, f.Dv}, f.o), Tensor::from_vector({f.B, f.L, f.Dv}, f.g),
                                    ref_param(p, "g_norm.weight", kTwin), f.H, opt.norm_eps)
                .to_f64_vector();
  return f;
}

}  // namespace

Tensor reference_gla_forward(const NamedTensors& p, const GlaOptions& opt, const Tensor& x) {
  const GlaFwd f = gla_layer_forward(p, opt, x);
  return Tensor::from_vector({f.B, f.L, f.D}, ref_linear_forward(f.gated, f.B * f.L, ref_param(p, "o_proj.weight", kTwin)));
}

ReferenceGrads reference_gla_backward(const NamedTensors& p, const GlaOptions& opt, const Tensor& x, const Tensor& dy) {
  const GlaFwd f = gla_layer_forward(p, opt, x);
  const int64_t rows = f.B * f.L, dv = f.Dv / f.H;
  std::vector<double> dgated, dx, dlow;
  const RefLinearGrads g_o = ref_linear_backward(f.gated, rows, ref_param(p, "o_proj.weight", kTwin), dy.to_f64_vector(), dgated);
  // Output gate, per (row, head) group of dv channels: n = o rs with rs = (mean(o^2) + eps)^-1/2,
  // y = n w swish(g). Then dn = dy w swish(g), dw = sum dy n swish(g),
  // dg = dy n w swish'(g), and, as d rs / d o_j = -rs^3 o_j / dv, do = rs (dn - n mean(dn n)).
  const std::vector<double> W = ref_param(p, "g_norm.weight", kTwin).to_f64_vector();
  std::vector<double> d_o(f.o.size()), dg(f.g.size()), dw(static_cast<size_t>(dv), 0.0);
  for (int64_t grp = 0; grp < rows * f.H; ++grp) {
    const int64_t at = grp * dv;
    double ms = 0;
    for (int64_t e = 0; e < dv; ++e) ms += f.o[at + e] * f.o[at + e];
    const double rs = 1.0 / std::sqrt(ms / dv + opt.norm_eps);
    double dot = 0;
    std::vector<double> dn(static_cast<size_t>(dv));
    for (int64_t e = 0; e < dv; ++e) {
      const double gv = f.g[at + e], s = sigmoid(gv), swish = gv * s, n = f.o[at + e] * rs;
      dn[e] = dgated[at + e] * W[e] * swish;
      dw[e] += dgated[at + e] * n * swish;
      dg[at + e] = dgated[at + e] * n * W[e] * s * (1 + gv * (1 - s));
      dot += dn[e] * n;
    }
    for (int64_t e = 0; e < dv; ++e) d_o[at + e] = rs * (dn[e] - f.o[at + e] * rs * dot / dv);
  }
  const Shape sk{f.B, f.L, f.Dk}, sv{f.B, f.L, f.Dv};
  const std::vector<Tensor> gc = reference_gla_core_backward(
      Tensor::from_vector(sk, f.q), Tensor::from_vector(sk, f.k), Tensor::from_vector(sv, f.v), Tensor::from_vector(sk, f.u),
      Tensor::from_vector(sv, d_o), f.H, 1.0 / std::sqrt(double(f.Dk / f.H)), opt.gate_logit_normalizer);
  const RefLinearGrads g_1 = ref_linear_backward(f.low, rows, ref_param(p, "gk_proj.1.weight", kTwin), gc[3].to_f64_vector(), dlow);
  const RefLinearGrads g_0 = ref_linear_backward(f.X, rows, ref_param(p, "gk_proj.0.weight", kTwin), dlow, dx);
  const RefLinearGrads g_q = ref_linear_backward(f.X, rows, ref_param(p, "q_proj.weight", kTwin), gc[0].to_f64_vector(), dx);
  const RefLinearGrads g_k = ref_linear_backward(f.X, rows, ref_param(p, "k_proj.weight", kTwin), gc[1].to_f64_vector(), dx);
  const RefLinearGrads g_v = ref_linear_backward(f.X, rows, ref_param(p, "v_proj.weight", kTwin), gc[2].to_f64_vector(), dx);
  const RefLinearGrads g_g = ref_linear_backward(f.X, rows, ref_param(p, "g_proj.weight", kTwin), dg, dx);
  return {Tensor::from_vector(x.shape(), dx),
          ref_grads_in_order(p,
                             {{"q_proj.weight", g_q.dw}, {"k_proj.weight", g_k.dw}, {"v_proj.weight", g_v.dw},
                              {"g_proj.weight", g_g.dw}, {"gk_proj.0.weight", g_0.dw}, {"gk_proj.1.weight", g_1.dw},
                              {"gk_proj.1.bias", g_1.db}, {"g_norm.weight", dw}, {"o_proj.weight", g_o.dw}},
                             kTwin)};
}

}  // namespace seqmix::testing
