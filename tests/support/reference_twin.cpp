#include "tests/support/reference_twin.h"

#include <stdexcept>

namespace seqmix::testing {

const Tensor& ref_param(const NamedTensors& params, const std::string& name, const char* twin) {
  for (const auto& [n, t] : params)
    if (n == name) return t;
  throw std::invalid_argument(std::string(twin) + ": no parameter named '" + name + "'");
}

std::vector<Tensor> ref_grads_in_order(const NamedTensors& params,
                                       const std::vector<std::pair<std::string, std::vector<double>>>& grads,
                                       const char* twin) {
  std::vector<Tensor> out;
  for (const auto& [name, t] : params) {
    const std::vector<double>* g = nullptr;
    for (const auto& [n, v] : grads)
      if (n == name) g = &v;
    if (!g) throw std::invalid_argument(std::string(twin) + ": no gradient for parameter '" + name + "'");
    if (static_cast<int64_t>(g->size()) != t.numel())
      throw std::invalid_argument(std::string(twin) + ": the gradient of '" + name + "' has " +
                                  std::to_string(g->size()) + " elements, the parameter " + std::to_string(t.numel()));
    out.push_back(Tensor::from_vector(t.shape(), *g));
  }
  if (grads.size() != params.size())
    throw std::invalid_argument(std::string(twin) + ": " + std::to_string(grads.size()) + " gradients for " +
                                std::to_string(params.size()) + " parameters");
  return out;
}

std::vector<double> ref_linear_forward(const std::vector<double>& x, int64_t rows, const Tensor& w, const Tensor& b) {
  const int64_t out = w.size(0), in = w.size(1);
  const std::vector<double> W = w.to_f64_vector();
  const std::vector<double> bias = b.defined() ? b.to_f64_vector() : std::vector<double>(out, 0.0);
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double acc = bias[o];
      for (int64_t i = 0; i < in; ++i) acc += x[r * in + i] * W[o * in + i];
      y[r * out + o] = acc;
    }
  return y;
}

RefLinearGrads ref_linear_backward(const std::vector<double>& x, int64_t rows, const Tensor& w,
                                   const std::vector<double>& dy, std::vector<double>& dx) {
  const int64_t out = w.size(0), in = w.size(1);
  const std::vector<double> W = w.to_f64_vector();
  if (dx.empty()) dx.assign(static_cast<size_t>(rows * in), 0.0);
  RefLinearGrads g;
  g.dw.assign(static_cast<size_t>(out * in), 0.0);
  g.db.assign(static_cast<size_t>(out), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      const double d = dy[r * out + o];
      g.db[o] += d;
      for (int64_t i = 0; i < in; ++i) {
        dx[r * in + i] += d * W[o * in + i];
        g.dw[o * in + i] += d * x[r * in + i];
      }
    }
  return g;
}

}  // namespace seqmix::testing
