#include "tests/support/reference_mamba.h"

#include <cmath>


namespace seqmix::testing {

namespace {

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double softplus(double r) { return r > 20 ? r : std::log1p(std::exp(r)); }
double softplus_grad(double r) { return r > 20 ? 1.0 : sigm(r); }
double silu(double z) { return z * sigm(z); }
double silu_grad(double z) { return sigm(z) * (1 + z * (1 - sigm(z))); }

// y (rows, O) = x (rows, I) W^T, W (O, I)
Vec lin(const Vec& x, const Vec& W, int64_t rows, int64_t I, int64_t O) {
  Vec y(static_cast<size_t>(rows * O), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < O; ++o) {
      double acc = 0;
      for (int64_t i = 0; i < I; ++i) acc += x[r * I + i] * W[o * I + i];
      y[r * O + o] = acc;
    }
  return y;
}

// dx (rows, I) = dy W; dW (O, I) = dy^T x
void lin_back(const Vec& x, const Vec& W, const Vec& dy, int64_t rows, int64_t I, int64_t O, Vec& dx, Vec& dW) {
  dx.assign(static_cast<size_t>(rows * I), 0.0);
  dW.assign(static_cast<size_t>(O * I), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) {
        dx[r * I + i] += dy[r * O + o] * W[o * I + i];
        dW[o * I + i] += dy[r * O + o] * x[r * I + i];
      }
}

Vec cols(const Vec& src, int64_t rows, int64_t ld, int64_t col, int64_t width) {
  Vec out(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < width; ++k) out[r * width + k] = src[r * ld + col + k];
  return out;
}

void put_cols(Vec& dst, const Vec& src, int64_t rows, int64_t ld, int64_t col, int64_t width) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < width; ++k) dst[r * ld + col + k] = src[r * width + k];
}

}  // namespace

Vec ref_scan_forward(const RefScanInputs& in) {
  const int64_t B = in.B, L = in.L, E = in.E, N = in.N;
  Vec out(static_cast<size_t>(B * L * E));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < E; ++e) {
      Vec h(static_cast<size_t>(N), 0.0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = b * L + t, i = row * E + e;
        const double delta = softplus(in.dr[i]);
        double y = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double A = -std::exp(in.A_log[e * N + n]);
          h[n] = std::exp(delta * A) * h[n] + delta * in.Bt[row * N + n] * in.u[i];
          y += h[n] * in.Ct[row * N + n];
        }
        y += in.D[e] * in.u[i];
        out[i] = y * silu(in.z[i]);
      }
    }
  return out;
}

RefScanGrads ref_scan_backward(const RefScanInputs& in, const Vec& dout) {
  const int64_t B = in.B, L = in.L, E = in.E, N = in.N;
  RefScanGrads g;
  g.u.assign(in.u.size(), 0.0);
  g.dr.assign(in.dr.size(), 0.0);
  g.A_log.assign(in.A_log.size(), 0.0);
  g.Bt.assign(in.Bt.size(), 0.0);
  g.Ct.assign(in.Ct.size(), 0.0);
  g.D.assign(in.D.size(), 0.0);
  g.z.assign(in.z.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < E; ++e) {
      // Forward, keeping every h_t (H[t+1]) with H[0] = h_{-1} = 0, and y_t.
      Vec H(static_cast<size_t>((L + 1) * N), 0.0), Y(static_cast<size_t>(L)), delta(static_cast<size_t>(L));
      Vec A(static_cast<size_t>(N));
      for (int64_t n = 0; n < N; ++n) A[n] = -std::exp(in.A_log[e * N + n]);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t row = b * L + t, i = row * E + e;
        delta[t] = softplus(in.dr[i]);
        double y = 0;
        for (int64_t n = 0; n < N; ++n) {
          H[(t + 1) * N + n] = std::exp(delta[t] * A[n]) * H[t * N + n] + delta[t] * in.Bt[row * N + n] * in.u[i];
          y += H[(t + 1) * N + n] * in.Ct[row * N + n];
        }
        Y[t] = y + in.D[e] * in.u[i];
      }
      // Reverse: Gh[n] = dL/dh_t[n] through later steps.
      Vec Gh(static_cast<size_t>(N), 0.0), dA(static_cast<size_t>(N), 0.0);
      for (int64_t t = L - 1; t >= 0; --t) {
        const int64_t row = b * L + t, i = row * E + e;
        const double u = in.u[i], z = in.z[i], go = dout[i];
        const double dy = go * silu(z);
        g.z[i] += go * Y[t] * silu_grad(z);
        g.D[e] += dy * u;
        g.u[i] += dy * in.D[e];
        double ddelta = 0;
        for (int64_t n = 0; n < N; ++n) {
          const double a = std::exp(delta[t] * A[n]);
          const double Gt = Gh[n] + dy * in.Ct[row * N + n];
          g.Ct[row * N + n] += dy * H[(t + 1) * N + n];
          // h_t = a h_{t-1} + delta B u
          ddelta += Gt * (a * A[n] * H[t * N + n] + in.Bt[row * N + n] * u);
          dA[n] += Gt * a * delta[t] * H[t * N + n];
          g.Bt[row * N + n] += Gt * delta[t] * u;
          g.u[i] += Gt * delta[t] * in.Bt[row * N + n];
          Gh[n] = a * Gt;
        }
        g.dr[i] += ddelta * softplus_grad(in.dr[i]);
      }
      for (int64_t n = 0; n < N; ++n) g.A_log[e * N + n] += dA[n] * A[n];
    }
  return g;
}

Vec ref_conv_forward(const Vec& x, const Vec& w, const Vec& bias, int64_t B, int64_t L, int64_t E, int64_t K) {
  Vec out(static_cast<size_t>(B * L * E));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t e = 0; e < E; ++e) {
        double acc = bias[e];
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - K + 1 + j;
          if (s >= 0) acc += w[e * K + j] * x[(b * L + s) * E + e];
        }
        out[(b * L + t) * E + e] = silu(acc);
      }
  return out;
}

RefConvGrads ref_conv_backward(const Vec& x, const Vec& w, const Vec& bias, int64_t B, int64_t L, int64_t E,
                               int64_t K, const Vec& dout) {
  RefConvGrads g;
  g.x.assign(x.size(), 0.0);
  g.w.assign(w.size(), 0.0);
  g.bias.assign(bias.size(), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t e = 0; e < E; ++e) {
        double pre = bias[e];
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - K + 1 + j;
          if (s >= 0) pre += w[e * K + j] * x[(b * L + s) * E + e];
        }
        const double dp = dout[(b * L + t) * E + e] * silu_grad(pre);
        g.bias[e] += dp;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t s = t - K + 1 + j;
          if (s < 0) continue;
          g.w[e * K + j] += dp * x[(b * L + s) * E + e];
          g.x[(b * L + s) * E + e] += dp * w[e * K + j];
        }
      }
  return g;
}

RefMambaParams ref_params_from(const NamedTensors& ps) {
  constexpr const char* kTwin = "reference_mamba";
  auto vec = [&](const char* name) { return ref_param(ps, name, kTwin).to_f64_vector(); };
  RefMambaParams p;
  p.Dm = ref_param(ps, "in_proj.weight", kTwin).size(1);
  p.E = ref_param(ps, "in_proj.weight", kTwin).size(0) / 2;
  p.N = ref_param(ps, "A_log", kTwin).size(1);
  p.R = ref_param(ps, "dt_proj.weight", kTwin).size(1);
  p.K = ref_param(ps, "conv1d.weight", kTwin).size(2);
  p.in_w = vec("in_proj.weight");
  p.conv_w = vec("conv1d.weight");
  p.conv_b = vec("conv1d.bias");
  p.x_w = vec("x_proj.weight");
  p.dt_w = vec("dt_proj.weight");
  p.dt_b = vec("dt_proj.bias");
  p.A_log = vec("A_log");
  p.D = vec("D");
  p.out_w = vec("out_proj.weight");
  return p;
}

namespace {

// The layer's intermediates, shared by forward and backward.
struct Fwd {
  Vec xz, xin, xc, xdbl, dl, dr;
  RefScanInputs scan;
  Vec yg, out;
};

Fwd layer_forward(const RefMambaParams& p, const Vec& x, int64_t B, int64_t L) {
  const int64_t rows = B * L, E = p.E, N = p.N, R = p.R, W = R + 2 * N;
  Fwd f;
  f.xz = lin(x, p.in_w, rows, p.Dm, 2 * E);
  f.xin = cols(f.xz, rows, 2 * E, 0, E);
  f.xc = ref_conv_forward(f.xin, p.conv_w, p.conv_b, B, L, E, p.K);
  f.xdbl = lin(f.xc, p.x_w, rows, E, W);
  f.dl = cols(f.xdbl, rows, W, 0, R);
  f.dr = lin(f.dl, p.dt_w, rows, R, E);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < E; ++e) f.dr[r * E + e] += p.dt_b[e];
  RefScanInputs& s = f.scan;
  s.B = B, s.L = L, s.E = E, s.N = N;
  s.u = f.xc;
  s.dr = f.dr;
  s.A_log = p.A_log;
  s.Bt = cols(f.xdbl, rows, W, R, N);
  s.Ct = cols(f.xdbl, rows, W, R + N, N);
  s.D = p.D;
  s.z = cols(f.xz, rows, 2 * E, E, E);
  f.yg = ref_scan_forward(s);
  f.out = lin(f.yg, p.out_w, rows, E, p.Dm);
  return f;
}

}  // namespace

Vec ref_mamba_forward(const RefMambaParams& p, const Vec& x, int64_t B, int64_t L) {
  return layer_forward(p, x, B, L).out;
}

RefMambaGrads ref_mamba_backward(const RefMambaParams& p, const Vec& x, int64_t B, int64_t L, const Vec& dout) {
  const int64_t rows = B * L, E = p.E, N = p.N, R = p.R, W = R + 2 * N;
  const Fwd f = layer_forward(p, x, B, L);
  Vec dyg, dout_w;
  lin_back(f.yg, p.out_w, dout, rows, E, p.Dm, dyg, dout_w);
  const RefScanGrads sg = ref_scan_backward(f.scan, dyg);
  Vec ddt_b(static_cast<size_t>(E), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t e = 0; e < E; ++e) ddt_b[e] += sg.dr[r * E + e];
  Vec ddl, ddt_w;
  lin_back(f.dl, p.dt_w, sg.dr, rows, R, E, ddl, ddt_w);
  Vec dxdbl(static_cast<size_t>(rows * W), 0.0);
  put_cols(dxdbl, ddl, rows, W, 0, R);
  put_cols(dxdbl, sg.Bt, rows, W, R, N);
  put_cols(dxdbl, sg.Ct, rows, W, R + N, N);
  Vec dxc, dx_w;
  lin_back(f.xc, p.x_w, dxdbl, rows, E, W, dxc, dx_w);
  for (size_t i = 0; i < dxc.size(); ++i) dxc[i] += sg.u[i];
  const RefConvGrads cg = ref_conv_backward(f.xin, p.conv_w, p.conv_b, B, L, E, p.K, dxc);
  Vec dxz(static_cast<size_t>(rows * 2 * E), 0.0);
  put_cols(dxz, cg.x, rows, 2 * E, 0, E);
  put_cols(dxz, sg.z, rows, 2 * E, E, E);
  RefMambaGrads g;
  Vec din_w;
  lin_back(x, p.in_w, dxz, rows, p.Dm, 2 * E, g.x, din_w);
  g.params = {din_w, cg.w, cg.bias, dx_w, ddt_w, ddt_b, sg.A_log, sg.D, dout_w};
  return g;
}

Tensor reference_mamba_forward(const NamedTensors& params, const MambaOptions& /*opt*/, const Tensor& x) {
  return Tensor::from_vector(x.shape(), ref_mamba_forward(ref_params_from(params), x.to_f64_vector(), x.size(0), x.size(1)));
}

ReferenceGrads reference_mamba_backward(const NamedTensors& params, const MambaOptions& /*opt*/, const Tensor& x,
                                        const Tensor& dy) {
  RefMambaGrads g = ref_mamba_backward(ref_params_from(params), x.to_f64_vector(), x.size(0), x.size(1), dy.to_f64_vector());
  ReferenceGrads out{Tensor::from_vector(x.shape(), g.x), {}};
  for (size_t k = 0; k < params.size(); ++k) out.params.push_back(Tensor::from_vector(params[k].second.shape(), g.params[k]));
  return out;
}

}  // namespace seqmix::testing
