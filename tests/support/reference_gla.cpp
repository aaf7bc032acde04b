#include "tests/support/reference_gla.h"

#include <cmath>
#include <string>

namespace seqmix::testing {

namespace {

double log_sigmoid(double u) { return std::min(u, 0.0) - std::log1p(std::exp(-std::fabs(u))); }
double sigmoid(double u) { return 1.0 / (1.0 + std::exp(-u)); }

// y (rows, out) = x (rows, in) W^T (+ b), in double.
std::vector<double> plain_linear(const std::vector<double>& x, int64_t rows, int64_t in, const Tensor& w,
                                 const Tensor& b = Tensor()) {
  const int64_t out = w.size(0);
  const std::vector<double> W = w.to_f64_vector();
  const std::vector<double> bias = b.defined() ? b.to_f64_vector() : std::vector<double>(out, 0.0);
  std::vector<double> y(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias[o];
      for (int64_t i = 0; i < in; ++i) acc += x[r * in + i] * W[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

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

Tensor reference_gla_layer(const GlaMixer& m, const Tensor& x) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), rows = B * L;
  const int64_t H = m.num_heads(), Dk = m.key_dim(), Dv = m.value_dim();
  NamedTensors ps;
  m.named_parameters("", ps);
  auto P = [&](const std::string& name) {
    for (auto& [n, t] : ps)
      if (n == name) return t;
    throw ShapeError("reference_gla_layer: no parameter " + name);
  };
  const std::vector<double> X = x.to_f64_vector();
  const std::vector<double> q = plain_linear(X, rows, D, P("q_proj.weight")),
                            k = plain_linear(X, rows, D, P("k_proj.weight")),
                            v = plain_linear(X, rows, D, P("v_proj.weight")),
                            g = plain_linear(X, rows, D, P("g_proj.weight"));
  const Tensor w0 = P("gk_proj.0.weight");
  const std::vector<double> low = plain_linear(X, rows, D, w0);
  const std::vector<double> u = plain_linear(low, rows, w0.size(0), P("gk_proj.1.weight"), P("gk_proj.1.bias"));
  std::vector<double> o;
  run_core(CoreDims{B, L, H, Dk / H, Dv / H}, q, k, v, u, 1.0 / std::sqrt(double(Dk / H)),
           m.options().gate_logit_normalizer, o, nullptr);
  Tensor gated = reference_gla_norm_gate(Tensor::from_vector({B, L, Dv}, o), Tensor::from_vector({B, L, Dv}, g),
                                         P("g_norm.weight"), H, m.options().norm_eps);
  const std::vector<double> y = plain_linear(gated.to_f64_vector(), rows, Dv, P("o_proj.weight"));
  return Tensor::from_vector({B, L, D}, y);
}

}  // namespace seqmix::testing
