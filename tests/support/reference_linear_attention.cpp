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

// y (rows, out) = x (rows, in) W^T + b.
std::vector<double> affine(const std::vector<double>& x, const Tensor& w_t, const Tensor& b_t, int64_t rows) {
  const std::vector<double> w = w_t.to_f64_vector(), b = b_t.to_f64_vector();
  const int64_t out = w_t.size(0), in = w_t.size(1);
  std::vector<double> y(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b[o];
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
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

Tensor reference_linear_attention_layer(const Tensor& x_t, const Tensor& q_w, const Tensor& q_b, const Tensor& k_w,
                                        const Tensor& k_b, const Tensor& v_w, const Tensor& v_b, const Tensor& out_w,
                                        const Tensor& out_b, int64_t H, double eps) {
  const int64_t B = x_t.size(0), L = x_t.size(1), D = x_t.size(2);
  const std::vector<double> x = x_t.to_f64_vector();
  const Shape shape{B, L, D};
  Tensor q = Tensor::from_vector(shape, affine(x, q_w, q_b, B * L));
  Tensor k = Tensor::from_vector(shape, affine(x, k_w, k_b, B * L));
  Tensor v = Tensor::from_vector(shape, affine(x, v_w, v_b, B * L));
  const std::vector<double> o = reference_linear_attention_core(q, k, v, H, eps).to_f64_vector();
  return Tensor::from_vector(shape, affine(o, out_w, out_b, B * L));
}

}  // namespace seqmix::testing
