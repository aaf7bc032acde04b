#include "tests/support/reference_h3.h"

#include <cmath>
#include <complex>
#include <stdexcept>
#include <vector>

namespace seqmix::testing {

namespace {

using cplx = std::complex<double>;
using vec = std::vector<double>;

Tensor f64(const Shape& s, const vec& v) { return Tensor::from_vector(s, v); }

struct Dims {
  int64_t D, N, Nh, dh, H;
};

Dims dims_of(const H3SsmParams& p) {
  Dims d;
  d.D = p.shift_B.size(0);
  d.N = p.shift_B.size(1);
  d.Nh = d.N / 2;
  d.dh = p.head_dim;
  d.H = d.D / d.dh;
  return d;
}

// Discretisation of one mode, written out as docs/mixers.md#h3 does.
struct Mode {
  double dt;
  cplx A, den, abar, s, Bd, C, W;  // W = Ct = C B dt / (1 - dtA/2)
};

Mode mode_of(const H3SsmParams& p, int64_t h, int64_t n) {
  const int64_t Nh = p.inv_A_real.size(1), i = h * Nh + n;
  Mode m;
  m.dt = std::exp(p.log_dt.item(h));
  m.A = cplx(-std::exp(p.inv_A_real.item(i)), p.A_imag.item(i));
  m.den = 1.0 - m.dt * m.A / 2.0;
  m.abar = (1.0 + m.dt * m.A / 2.0) / m.den;
  m.s = m.dt / m.den;
  m.Bd = cplx(p.diag_B.item(2 * i), p.diag_B.item(2 * i + 1));
  m.C = cplx(p.diag_C.item(2 * i), p.diag_C.item(2 * i + 1));
  m.W = m.C * m.Bd * m.s;
  return m;
}

}  // namespace

Tensor ref_h3_shift_filter(const H3SsmParams& p) {
  const Dims d = dims_of(p);
  vec f(d.D * d.N, 0.0);
  for (int64_t c = 0; c < d.D; ++c)
    for (int64_t l = 0; l < d.N; ++l)
      for (int64_t m = 0; m + l < d.N; ++m) f[c * d.N + l] += p.shift_B.item(c * d.N + m) * p.shift_C.item(c * d.N + m + l);
  return f64({d.D, d.N}, f);
}

Tensor ref_h3_diag_kernel(const H3SsmParams& p, int64_t L) {
  const Dims d = dims_of(p);
  vec K(d.H * L, 0.0);
  for (int64_t h = 0; h < d.H; ++h)
    for (int64_t n = 0; n < d.Nh; ++n) {
      const Mode m = mode_of(p, h, n);
      for (int64_t l = 0; l < L; ++l) K[h * L + l] += 2.0 * (m.W * std::pow(m.abar, static_cast<double>(l))).real();
    }
  return f64({d.H, L}, K);
}

Tensor ref_h3_shift_forward(const Tensor& k, const H3SsmParams& p) {
  const Dims d = dims_of(p);
  const int64_t Bn = k.size(0), L = k.size(1);
  const vec f = ref_h3_shift_filter(p).to_f64_vector(), kv = k.to_f64_vector();
  vec out(Bn * L * d.D, 0.0);
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < d.D; ++c) {
        double acc = p.shift_D.item(c) * kv[(b * L + t) * d.D + c];
        for (int64_t l = 0; l < d.N && l <= t; ++l) acc += f[c * d.N + l] * kv[(b * L + t - l) * d.D + c];
        out[(b * L + t) * d.D + c] = acc;
      }
  return f64(k.shape(), out);
}

Tensor ref_h3_diag_forward(const Tensor& q, const Tensor& kt, const Tensor& v, const H3SsmParams& p) {
  const Dims d = dims_of(p);
  const int64_t Bn = q.size(0), L = q.size(1), D = d.D, dh = d.dh;
  const vec K = ref_h3_diag_kernel(p, L).to_f64_vector();
  const vec Q = q.to_f64_vector(), Kt = kt.to_f64_vector(), V = v.to_f64_vector();
  vec o(Bn * L * D, 0.0), u(L);
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t h = 0; h < d.H; ++h)
      for (int64_t d1 = 0; d1 < dh; ++d1)
        for (int64_t d2 = 0; d2 < dh; ++d2) {
          const int64_t c1 = h * dh + d1, c2 = h * dh + d2;
          for (int64_t t = 0; t < L; ++t) u[t] = Kt[(b * L + t) * D + c1] * V[(b * L + t) * D + c2];
          for (int64_t t = 0; t < L; ++t) {
            double y = p.diag_D.item(h) * u[t];
            for (int64_t l = 0; l <= t; ++l) y += K[h * L + l] * u[t - l];
            o[(b * L + t) * D + c2] += Q[(b * L + t) * D + c1] * y;
          }
        }
  return f64(q.shape(), o);
}

void ref_h3_shift_backward(const Tensor& dkt, const Tensor& k, const H3SsmParams& p, RefH3Grads& g) {
  const Dims d = dims_of(p);
  const int64_t Bn = k.size(0), L = k.size(1), D = d.D, N = d.N;
  const vec f = ref_h3_shift_filter(p).to_f64_vector(), kv = k.to_f64_vector(), G = dkt.to_f64_vector();
  // f'[0] = f[0] + D carries the skip term.
  auto fp = [&](int64_t c, int64_t l) { return f[c * N + l] + (l == 0 ? p.shift_D.item(c) : 0.0); };
  vec dk(Bn * L * D, 0.0), df(D * N, 0.0);
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t c = 0; c < D; ++c)
        for (int64_t l = 0; l < N && l <= t; ++l) {
          const double gt = G[(b * L + t) * D + c];
          dk[(b * L + t - l) * D + c] += fp(c, l) * gt;
          df[c * N + l] += gt * kv[(b * L + t - l) * D + c];
        }
  vec dB(D * N, 0.0), dC(D * N, 0.0), dD(D, 0.0);
  for (int64_t c = 0; c < D; ++c) {
    dD[c] = df[c * N];
    for (int64_t l = 0; l < N; ++l)
      for (int64_t m = 0; m + l < N; ++m) {
        dB[c * N + m] += df[c * N + l] * p.shift_C.item(c * N + m + l);
        dC[c * N + m + l] += df[c * N + l] * p.shift_B.item(c * N + m);
      }
  }
  g.dk = f64(k.shape(), dk);
  g.d_shift_B = f64({D, N}, dB);
  g.d_shift_C = f64({D, N}, dC);
  g.d_shift_D = f64({D}, dD);
}

void ref_h3_diag_backward(const Tensor& dout, const Tensor& q, const Tensor& kt, const Tensor& v,
                          const H3SsmParams& p, RefH3Grads& g) {
  const Dims d = dims_of(p);
  const int64_t Bn = q.size(0), L = q.size(1), D = d.D, dh = d.dh, H = d.H, Nh = d.Nh;
  const vec K = ref_h3_diag_kernel(p, L).to_f64_vector();
  const vec Q = q.to_f64_vector(), Kt = kt.to_f64_vector(), V = v.to_f64_vector(), G = dout.to_f64_vector();
  vec dq(Bn * L * D, 0.0), dkt(Bn * L * D, 0.0), dv(Bn * L * D, 0.0), dK(H * L, 0.0), dDd(H, 0.0);
  vec u(L), dy(L);
  for (int64_t b = 0; b < Bn; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t d1 = 0; d1 < dh; ++d1)
        for (int64_t d2 = 0; d2 < dh; ++d2) {
          const int64_t c1 = h * dh + d1, c2 = h * dh + d2;
          const double Dh = p.diag_D.item(h);
          for (int64_t t = 0; t < L; ++t) u[t] = Kt[(b * L + t) * D + c1] * V[(b * L + t) * D + c2];
          for (int64_t t = 0; t < L; ++t) {
            const int64_t r = (b * L + t) * D;
            double y = Dh * u[t];
            for (int64_t l = 0; l <= t; ++l) y += K[h * L + l] * u[t - l];
            dq[r + c1] += G[r + c2] * y;
            dy[t] = G[r + c2] * Q[r + c1];
          }
          for (int64_t s = 0; s < L; ++s) {
            double du = Dh * dy[s];
            for (int64_t l = 0; s + l < L; ++l) {
              du += K[h * L + l] * dy[s + l];
              dK[h * L + l] += dy[s + l] * u[s];
            }
            dDd[h] += dy[s] * u[s];
            const int64_t r = (b * L + s) * D;
            dkt[r + c1] += du * V[r + c2];
            dv[r + c2] += du * Kt[r + c1];
          }
        }
  // K[l] = 2 Re(W a^l):  dW = sum_l dK[l] 2 conj(a^l),  da = sum_l dK[l] 2 conj(W l a^(l-1)).
  vec dlogdt(H, 0.0), diar(H * Nh, 0.0), daim(H * Nh, 0.0), dB(H * Nh * 2, 0.0), dC(H * Nh * 2, 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < Nh; ++n) {
      const Mode m = mode_of(p, h, n);
      cplx gW = 0, ga = 0;
      for (int64_t l = 0; l < L; ++l) {
        gW += dK[h * L + l] * 2.0 * std::conj(std::pow(m.abar, static_cast<double>(l)));
        if (l > 0)
          ga += dK[h * L + l] * 2.0 * std::conj(m.W * static_cast<double>(l) * std::pow(m.abar, static_cast<double>(l - 1)));
      }
      // W = C Bd s;  abar = (1 + z/2)/den, s = dt/den, z = dt A, den = 1 - z/2.
      const cplx gC = std::conj(m.Bd * m.s) * gW, gBd = std::conj(m.C * m.s) * gW, gs = std::conj(m.C * m.Bd) * gW;
      const cplx gz = std::conj(1.0 / (m.den * m.den)) * ga + std::conj(m.dt / (2.0 * m.den * m.den)) * gs;
      const double gdt = (std::conj(1.0 / m.den) * gs).real() + (std::conj(m.A) * gz).real();
      const cplx gA = m.dt * gz;
      const int64_t i = h * Nh + n;
      diar[i] = gA.real() * m.A.real();
      daim[i] = gA.imag();
      dB[2 * i] = gBd.real(), dB[2 * i + 1] = gBd.imag();
      dC[2 * i] = gC.real(), dC[2 * i + 1] = gC.imag();
      dlogdt[h] += gdt * m.dt;
    }
  g.dq = f64(q.shape(), dq);
  g.dkt = f64(q.shape(), dkt);
  g.dv = f64(q.shape(), dv);
  g.d_log_dt = f64({H}, dlogdt);
  g.d_inv_A_real = f64({H, Nh}, diar);
  g.d_A_imag = f64({H, Nh}, daim);
  g.d_diag_B = f64({H, Nh, 2}, dB);
  g.d_diag_C = f64({H, Nh, 2}, dC);
  g.d_diag_D = f64({H}, dDd);
}

namespace {

constexpr const char* kTwin = "reference_h3";

H3SsmParams ssm_of(const NamedTensors& ps, const H3Options& opt) {
  H3SsmParams p;
  p.shift_B = ref_param(ps, "ssm_shift.B", kTwin);
  p.shift_C = ref_param(ps, "ssm_shift.C", kTwin);
  p.shift_D = ref_param(ps, "ssm_shift.D", kTwin);
  p.log_dt = ref_param(ps, "ssm_diag.log_dt", kTwin);
  p.inv_A_real = ref_param(ps, "ssm_diag.inv_A_real", kTwin);
  p.A_imag = ref_param(ps, "ssm_diag.A_imag", kTwin);
  p.diag_B = ref_param(ps, "ssm_diag.B", kTwin);
  p.diag_C = ref_param(ps, "ssm_diag.C", kTwin);
  p.diag_D = ref_param(ps, "ssm_diag.D", kTwin);
  p.head_dim = opt.head_dim;
  return p;
}

Tensor proj(const NamedTensors& ps, const std::vector<double>& x, const Shape& shape, const std::string& name) {
  return f64(shape, ref_linear_forward(x, shape[0] * shape[1], ref_param(ps, name + ".weight", kTwin),
                                       ref_param(ps, name + ".bias", kTwin)));
}

}  // namespace

Tensor reference_h3_forward(const NamedTensors& ps, const H3Options& opt, const Tensor& x) {
  const H3SsmParams p = ssm_of(ps, opt);
  const std::vector<double> X = x.to_f64_vector();
  const Shape s = x.shape();
  const Tensor kt = ref_h3_shift_forward(proj(ps, X, s, "k_proj"), p);
  const Tensor o = ref_h3_diag_forward(proj(ps, X, s, "q_proj"), kt, proj(ps, X, s, "v_proj"), p);
  return proj(ps, o.to_f64_vector(), s, "out_proj");
}

ReferenceGrads reference_h3_backward(const NamedTensors& ps, const H3Options& opt, const Tensor& x, const Tensor& dy) {
  const H3SsmParams p = ssm_of(ps, opt);
  const std::vector<double> X = x.to_f64_vector();
  const Shape s = x.shape();
  const int64_t rows = s[0] * s[1];
  const Tensor q = proj(ps, X, s, "q_proj"), k = proj(ps, X, s, "k_proj"), v = proj(ps, X, s, "v_proj");
  const Tensor kt = ref_h3_shift_forward(k, p);
  const std::vector<double> o = ref_h3_diag_forward(q, kt, v, p).to_f64_vector();
  std::vector<double> d_o, dx;
  const RefLinearGrads g_out = ref_linear_backward(o, rows, ref_param(ps, "out_proj.weight", kTwin), dy.to_f64_vector(), d_o);
  RefH3Grads g;
  ref_h3_diag_backward(f64(s, d_o), q, kt, v, p, g);
  ref_h3_shift_backward(g.dkt, k, p, g);
  const RefLinearGrads g_q = ref_linear_backward(X, rows, ref_param(ps, "q_proj.weight", kTwin), g.dq.to_f64_vector(), dx);
  const RefLinearGrads g_k = ref_linear_backward(X, rows, ref_param(ps, "k_proj.weight", kTwin), g.dk.to_f64_vector(), dx);
  const RefLinearGrads g_v = ref_linear_backward(X, rows, ref_param(ps, "v_proj.weight", kTwin), g.dv.to_f64_vector(), dx);
  return {f64(s, dx),
          ref_grads_in_order(ps,
                             {{"q_proj.weight", g_q.dw}, {"q_proj.bias", g_q.db}, {"k_proj.weight", g_k.dw},
                              {"k_proj.bias", g_k.db}, {"v_proj.weight", g_v.dw}, {"v_proj.bias", g_v.db},
                              {"ssm_shift.B", g.d_shift_B.to_f64_vector()}, {"ssm_shift.C", g.d_shift_C.to_f64_vector()},
                              {"ssm_shift.D", g.d_shift_D.to_f64_vector()}, {"ssm_diag.log_dt", g.d_log_dt.to_f64_vector()},
                              {"ssm_diag.inv_A_real", g.d_inv_A_real.to_f64_vector()},
                              {"ssm_diag.A_imag", g.d_A_imag.to_f64_vector()}, {"ssm_diag.B", g.d_diag_B.to_f64_vector()},
                              {"ssm_diag.C", g.d_diag_C.to_f64_vector()}, {"ssm_diag.D", g.d_diag_D.to_f64_vector()},
                              {"out_proj.weight", g_out.dw}, {"out_proj.bias", g_out.db}},
                             kTwin)};
}

}  // namespace seqmix::testing
