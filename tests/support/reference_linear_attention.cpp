#include "tests/support/reference_linear_attention.h"

#include <cmath>
#include <vector>

namespace seqmix::testing {

namespace {

double phi(double x) { return x > 0 ? x + 1.0 : std::exp(x); }
double phi_grad(double x) { return x > 0 ? 1.0 : std::exp(x); }

void check(const Tensor& q, const Tensor& k, const Tensor& v, int64_t H) {
  if (q.ndim() != 3 || k.shape() != q.shape() || v.shape() != q.shape() || q.size(2) % H != 0)
    throw ShapeError("reference_linear_attention: bad shapes " + shape_str(q.shape()) + " " + shape_str(k.shape()) +
                     " " + shape_str(v.shape()));
}

}  // namespace

Tensor reference_linear_attention_core(const Tensor& q_t, const Tensor& k_t, const Tensor& v_t, int64_t H,
                                       double eps) {
  check(q_t, k_t, v_t, H);
  const int64_t B = q_t.size(0), L = q_t.size(1), D = q_t.size(2), d = D / H;
  const std::vector<double> q = q_t.to_f64_vector(), k = k_t.to_f64_vector(), v = v_t.to_f64_vector();
  std::vector<double> o(B * L * D);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::vector<double> S(d * d, 0.0), z(d, 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t base = (b * L + t) * D + h * d;
        for (int64_t i = 0; i < d; ++i) {
          const double fk = phi(k[base + i]);
          for (int64_t j = 0; j < d; ++j) S[i * d + j] += fk * v[base + j];
          z[i] += fk;
        }
        double den = eps;
        for (int64_t i = 0; i < d; ++i) den += phi(q[base + i]) * z[i];
        for (int64_t j = 0; j < d; ++j) {
          double num = 0;
          for (int64_t i = 0; i < d; ++i) num += phi(q[base + i]) * S[i * d + j];
          o[base + j] = num / den;
        }
      }
    }
  return Tensor::from_vector(q_t.shape(), o);
}

LinearAttentionGrads reference_linear_attention_core_backward(const Tensor& q_t, const Tensor& k_t, const Tensor& v_t,
                                                              const Tensor& dout_t, int64_t H, double eps) {
  check(q_t, k_t, v_t, H);
  const int64_t B = q_t.size(0), L = q_t.size(1), D = q_t.size(2), d = D / H;
  const std::vector<double> q = q_t.to_f64_vector(), k = k_t.to_f64_vector(), v = v_t.to_f64_vector();
  const std::vector<double> g = dout_t.to_f64_vector();
  std::vector<double> dq(q.size(), 0.0), dk(q.size(), 0.0), dv(q.size(), 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t h) { return (b * L + t) * D + h * d; };
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < L; ++t) {
        const int64_t bt = at(b, t, h);
        // a_ts, num_t, den_t, o_t.
        std::vector<double> a(t + 1);
        std::vector<double> num(d, 0.0);
        double den = eps;
        for (int64_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += phi(q[bt + i]) * phi(k[at(b, s, h) + i]);
          a[s] = dot;
          den += dot;
          for (int64_t j = 0; j < d; ++j) num[j] += dot * v[at(b, s, h) + j];
        }
        // o = num / den: dnum = g / den, dden = -(g . num) / den^2.
        double g_num = 0;
        for (int64_t j = 0; j < d; ++j) g_num += g[bt + j] * num[j];
        const double dden = -g_num / (den * den);
        for (int64_t s = 0; s <= t; ++s) {
          const int64_t bs = at(b, s, h);
          // d a_ts = dnum . v_s + dden (a_ts enters the numerator and the denominator).
          double da = dden;
          for (int64_t j = 0; j < d; ++j) {
            da += g[bt + j] / den * v[bs + j];
            dv[bs + j] += a[s] * g[bt + j] / den;
          }
          for (int64_t i = 0; i < d; ++i) {
            dq[bt + i] += da * phi(k[bs + i]) * phi_grad(q[bt + i]);
            dk[bs + i] += da * phi(q[bt + i]) * phi_grad(k[bs + i]);
          }
        }
      }
  return {Tensor::from_vector(q_t.shape(), dq), Tensor::from_vector(q_t.shape(), dk),
          Tensor::from_vector(q_t.shape(), dv)};
}

namespace {
constexpr const char* kTwin = "reference_linear_attention";
}

Tensor reference_linear_attention_forward(const NamedTensors& p, const LinearAttentionOptions& opt, const Tensor& x) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), rows = B * L;
  const std::vector<double> X = x.to_f64_vector();
  auto proj = [&](const char* name) {
    const std::string n = name;
    return Tensor::from_vector(
        {B, L, D}, ref_linear_forward(X, rows, ref_param(p, n + ".weight", kTwin), ref_param(p, n + ".bias", kTwin)));
  };
  const std::vector<double> o =
      reference_linear_attention_core(proj("q_proj"), proj("k_proj"), proj("v_proj"), opt.num_heads, opt.eps)
          .to_f64_vector();
  return Tensor::from_vector(
      {B, L, D}, ref_linear_forward(o, rows, ref_param(p, "out_proj.weight", kTwin), ref_param(p, "out_proj.bias", kTwin)));
}

ReferenceGrads reference_linear_attention_backward(const NamedTensors& p, const LinearAttentionOptions& opt,
                                                   const Tensor& x, const Tensor& dy) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), rows = B * L;
  const std::vector<double> X = x.to_f64_vector();
  auto proj = [&](const std::string& n) {
    return Tensor::from_vector(
        {B, L, D}, ref_linear_forward(X, rows, ref_param(p, n + ".weight", kTwin), ref_param(p, n + ".bias", kTwin)));
  };
  const Tensor q = proj("q_proj"), k = proj("k_proj"), v = proj("v_proj");
  const std::vector<double> o = reference_linear_attention_core(q, k, v, opt.num_heads, opt.eps).to_f64_vector();
  std::vector<double> d_o, dx;
  const RefLinearGrads g_out = ref_linear_backward(o, rows, ref_param(p, "out_proj.weight", kTwin), dy.to_f64_vector(), d_o);
  const LinearAttentionGrads gc =
      reference_linear_attention_core_backward(q, k, v, Tensor::from_vector({B, L, D}, d_o), opt.num_heads, opt.eps);
  const RefLinearGrads g_q = ref_linear_backward(X, rows, ref_param(p, "q_proj.weight", kTwin), gc.dq.to_f64_vector(), dx);
  const RefLinearGrads g_k = ref_linear_backward(X, rows, ref_param(p, "k_proj.weight", kTwin), gc.dk.to_f64_vector(), dx);
  const RefLinearGrads g_v = ref_linear_backward(X, rows, ref_param(p, "v_proj.weight", kTwin), gc.dv.to_f64_vector(), dx);
  return {Tensor::from_vector(x.shape(), dx),
          ref_grads_in_order(p,
                             {{"q_proj.weight", g_q.dw}, {"q_proj.bias", g_q.db}, {"k_proj.weight", g_k.dw},
                              {"k_proj.bias", g_k.db}, {"v_proj.weight", g_v.dw}, {"v_proj.bias", g_v.db},
                              {"out_proj.weight", g_out.dw}, {"out_proj.bias", g_out.db}},
                             kTwin)};
}

}  // namespace seqmix::testing
