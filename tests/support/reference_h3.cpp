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

const Tensor& find(const NamedTensors& ps, const std::string& name) {
  for (const auto& [n, t] : ps)
    if (n == name) return t;
  throw std::invalid_argument("ref_h3_layer_forward: no parameter named " + name);
}

Tensor ref_linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  const vec X = x.to_f64_vector(), W = w.to_f64_vector(), Bv = b.to_f64_vector();
  vec y(rows * out);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = Bv[o];
      for (int64_t i = 0; i < in; ++i) acc += X[r * in + i] * W[o * in + i];
      y[r * out + o] = acc;
    }
  Shape s = x.shape();
  s.back() = out;
  return f64(s, y);
}

}  // namespace

Tensor ref_h3_layer_forward(const Tensor& x, const NamedTensors& ps, int64_t head_dim) {
  H3SsmParams p;
  p.shift_B = find(ps, "ssm_shift.B");
  p.shift_C = find(ps, "ssm_shift.C");
  p.shift_D = find(ps, "ssm_shift.D");
  p.log_dt = find(ps, "ssm_diag.log_dt");
  p.inv_A_real = find(ps, "ssm_diag.inv_A_real");
  p.A_imag = find(ps, "ssm_diag.A_imag");
  p.diag_B = find(ps, "ssm_diag.B");
  p.diag_C = find(ps, "ssm_diag.C");
  p.diag_D = find(ps, "ssm_diag.D");
  p.head_dim = head_dim;
  const Tensor q = ref_linear(x, find(ps, "q_proj.weight"), find(ps, "q_proj.bias"));
  const Tensor k = ref_linear(x, find(ps, "k_proj.weight"), find(ps, "k_proj.bias"));
  const Tensor v = ref_linear(x, find(ps, "v_proj.weight"), find(ps, "v_proj.bias"));
  const Tensor kt = ref_h3_shift_forward(k, p);
  const Tensor o = ref_h3_diag_forward(q, kt, v, p);
  return ref_linear(o, find(ps, "out_proj.weight"), find(ps, "out_proj.bias"));
}

}  // namespace seqmix::testing
