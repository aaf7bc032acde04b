#include "tests/support/reference_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/random.h"

namespace seqmix::testing {

namespace {

struct Geometry {
  int64_t B, L, D, H, dh;
};

Geometry geometry(const Tensor& qkv, int64_t H) {
  if (qkv.ndim() != 3 || qkv.size(2) % 3 != 0 || (qkv.size(2) / 3) % H != 0)
    throw ShapeError("reference_attention: bad qkv shape " + shape_str(qkv.shape()));
  const int64_t D = qkv.size(2) / 3;
  return {qkv.size(0), qkv.size(1), D, H, D / H};
}

double mask_scale(const RefAttentionDropout& dr, int64_t bh, int64_t L, int64_t i, int64_t j) {
  if (dr.p <= 0.0) return 1.0;
  const uint64_t counter = dr.start + static_cast<uint64_t>((bh * L + i) * L + j);
  return u64_to_unit(hash_counter(dr.seed, counter)) >= dr.p ? 1.0 / (1.0 - dr.p) : 0.0;
}

// Element e of q (part 0), k (1) or v (2) of head h at (b, t).
double at(const std::vector<double>& qkv, const Geometry& g, int64_t part, int64_t b, int64_t t, int64_t h, int64_t e) {
  return qkv[(b * g.L + t) * 3 * g.D + part * g.D + h * g.dh + e];
}

// The softmax probabilities P (L x L, zero above the diagonal) of head (b, h).
std::vector<double> probabilities(const std::vector<double>& qkv, const Geometry& g, int64_t b, int64_t h) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(g.dh));
  std::vector<double> P(g.L * g.L, 0.0);
  for (int64_t i = 0; i < g.L; ++i) {
    double mx = -INFINITY;
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t e = 0; e < g.dh; ++e) s += at(qkv, g, 0, b, i, h, e) * at(qkv, g, 1, b, j, h, e);
      P[i * g.L + j] = s * scale;
      mx = std::max(mx, s * scale);
    }
    double sum = 0;
    for (int64_t j = 0; j <= i; ++j) sum += (P[i * g.L + j] = std::exp(P[i * g.L + j] - mx));
    for (int64_t j = 0; j <= i; ++j) P[i * g.L + j] /= sum;
  }
  return P;
}

}  // namespace

Tensor reference_attention_core(const Tensor& qkv_t, int64_t H, const RefAttentionDropout& dr) {
  const Geometry g = geometry(qkv_t, H);
  const std::vector<double> qkv = qkv_t.to_f64_vector();
  std::vector<double> o(g.B * g.L * g.D, 0.0);
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const std::vector<double> P = probabilities(qkv, g, b, h);
      for (int64_t i = 0; i < g.L; ++i)
        for (int64_t j = 0; j <= i; ++j) {
          const double w = P[i * g.L + j] * mask_scale(dr, b * H + h, g.L, i, j);
          for (int64_t e = 0; e < g.dh; ++e) o[(b * g.L + i) * g.D + h * g.dh + e] += w * at(qkv, g, 2, b, j, h, e);
        }
    }
  return Tensor::from_vector({g.B, g.L, g.D}, o);
}

Tensor reference_attention_core_backward(const Tensor& qkv_t, const Tensor& dout_t, int64_t H,
                                         const RefAttentionDropout& dr) {
  const Geometry g = geometry(qkv_t, H);
  const std::vector<double> qkv = qkv_t.to_f64_vector();
  const std::vector<double> dout = dout_t.to_f64_vector();
  const double scale = 1.0 / std::sqrt(static_cast<double>(g.dh));
  std::vector<double> grad(qkv.size(), 0.0);
  auto gq = [&](int64_t part, int64_t b, int64_t t, int64_t h, int64_t e) -> double& {
    return grad[(b * g.L + t) * 3 * g.D + part * g.D + h * g.dh + e];
  };
  for (int64_t b = 0; b < g.B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const std::vector<double> P = probabilities(qkv, g, b, h);
      for (int64_t i = 0; i < g.L; ++i) {
        const double* dO = dout.data() + (b * g.L + i) * g.D + h * g.dh;
        // dP_ij = M_ij (dO_i . v_j): the gradient of the undropped probabilities.
        std::vector<double> dP(i + 1);
        for (int64_t j = 0; j <= i; ++j) {
          const double m = mask_scale(dr, b * H + h, g.L, i, j);
          double s = 0;
          for (int64_t e = 0; e < g.dh; ++e) {
            s += dO[e] * at(qkv, g, 2, b, j, h, e);
            gq(2, b, j, h, e) += P[i * g.L + j] * m * dO[e];  // dV_j += P_ij M_ij dO_i
          }
          dP[j] = s * m;
        }
        // Softmax Jacobian: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik).
        double dot = 0;
        for (int64_t j = 0; j <= i; ++j) dot += P[i * g.L + j] * dP[j];
        for (int64_t j = 0; j <= i; ++j) {
          const double dS = P[i * g.L + j] * (dP[j] - dot);
          for (int64_t e = 0; e < g.dh; ++e) {
            gq(0, b, i, h, e) += scale * dS * at(qkv, g, 1, b, j, h, e);
            gq(1, b, j, h, e) += scale * dS * at(qkv, g, 0, b, i, h, e);
          }
        }
      }
    }
  return Tensor::from_vector(qkv_t.shape(), grad);
}

namespace {
constexpr const char* kTwin = "reference_attention";
}

Tensor reference_attention_forward(const NamedTensors& p, const AttentionOptions& opt, const Tensor& x,
                                   const RefAttentionDropout& dr) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), rows = B * L;
  const std::vector<double> qkv =
      ref_linear_forward(x.to_f64_vector(), rows, ref_param(p, "Wqkv.weight", kTwin), ref_param(p, "Wqkv.bias", kTwin));
  const std::vector<double> core =
      reference_attention_core(Tensor::from_vector({B, L, 3 * D}, qkv), opt.num_heads, dr).to_f64_vector();
  return Tensor::from_vector(
      {B, L, D}, ref_linear_forward(core, rows, ref_param(p, "out_proj.weight", kTwin), ref_param(p, "out_proj.bias", kTwin)));
}

ReferenceGrads reference_attention_backward(const NamedTensors& p, const AttentionOptions& opt, const Tensor& x,
                                            const Tensor& dy) {
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), rows = B * L;
  const std::vector<double> X = x.to_f64_vector();
  const Tensor& w_qkv = ref_param(p, "Wqkv.weight", kTwin);
  const Tensor& w_out = ref_param(p, "out_proj.weight", kTwin);
  const Tensor qkv = Tensor::from_vector({B, L, 3 * D}, ref_linear_forward(X, rows, w_qkv, ref_param(p, "Wqkv.bias", kTwin)));
  const std::vector<double> core = reference_attention_core(qkv, opt.num_heads).to_f64_vector();
  std::vector<double> dcore, dx;
  const RefLinearGrads g_out = ref_linear_backward(core, rows, w_out, dy.to_f64_vector(), dcore);
  const std::vector<double> dqkv =
      reference_attention_core_backward(qkv, Tensor::from_vector({B, L, D}, dcore), opt.num_heads).to_f64_vector();
  const RefLinearGrads g_in = ref_linear_backward(X, rows, w_qkv, dqkv, dx);
  return {Tensor::from_vector(x.shape(), dx),
          ref_grads_in_order(p,
                             {{"Wqkv.weight", g_in.dw}, {"Wqkv.bias", g_in.db},
                              {"out_proj.weight", g_out.dw}, {"out_proj.bias", g_out.db}},
                             kTwin)};
}

}  // namespace seqmix::testing
