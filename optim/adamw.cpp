#include "optim/adamw.h"

#include <cmath>

namespace seqmix {

namespace {

template <class T>
void adam_update(T* p, float* m, float* v, const T* g, int64_t n, double lr, const AdamOptions& o, bool decay,
                 int64_t t) {
  const double bc1 = 1.0 - std::pow(o.beta1, static_cast<double>(t));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(o.beta2, static_cast<double>(t)));
  const double step_size = lr / bc1;
  const double wd = decay ? o.weight_decay : 0.0;
  const float b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    double gi = g[i];
    double pi = p[i];
    if (o.decoupled)
      pi *= 1.0 - lr * wd;
    else
      gi += wd * pi;
    const float gf = static_cast<float>(gi);
    m[i] = b1 * m[i] + (1.0f - b1) * gf;
    v[i] = b2 * v[i] + (1.0f - b2) * gf * gf;
    const double denom = std::sqrt(static_cast<double>(v[i])) / bc2_sqrt + o.eps;
    p[i] = static_cast<T>(pi - step_size * static_cast<double>(m[i]) / denom);
  }
}

}  // namespace

Adam::Adam(const Parameters& params, const AdamOptions& opt) : opt_(opt) {
  for (const Parameter& p : params) {
    if (!p.tensor.requires_grad()) throw ShapeError("Adam: parameter " + p.name + " does not require a gradient");
    slots_.push_back(Slot{p.name, p.tensor, Tensor::zeros(p.tensor.shape()), Tensor::zeros(p.tensor.shape()), p.decay});
  }
}

namespace {
Parameters by_dimensions(const NamedTensors& params) {
  Parameters out;
  for (const auto& [name, t] : params) out.push_back({name, t, t.ndim() >= 2});
  return out;
}
}  // namespace

Adam::Adam(const NamedTensors& params, const AdamOptions& opt) : Adam(by_dimensions(params), opt) {}

void Adam::step(double lr) {
  ++step_;
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined()) continue;
    dispatch_float(s.param.dtype(), "Adam::step", [&](auto tag) {
      using T = decltype(tag);
      adam_update<T>(s.param.data<T>(), s.m.f32(), s.v.f32(), g.data<T>(), s.param.numel(), lr, opt_, s.decay, step_);
    });
  }
}

void Adam::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

double grad_norm(const NamedTensors& params) {
  double total = 0;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    double acc = 0;
    const int64_t n = g.numel();
    // Sequential on purpose: a few million squares take about a millisecond and
    // a single ordered sum is bit-identical for any thread count.
    dispatch_float(g.dtype(), "grad_norm", [&](auto tag) {
      using T = decltype(tag);
      const T* d = g.data<T>();
      for (int64_t i = 0; i < n; ++i) acc += static_cast<double>(d[i]) * d[i];
    });
    total += acc;
  }
  return std::sqrt(total);
}

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  const double norm = grad_norm(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    dispatch_float(g.dtype(), "clip_grad_norm", [&](auto tag) {
      using T = decltype(tag);
      T* d = g.data<T>();
      const int64_t n = g.numel();
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<T>(d[i] * coef);
    });
  }
  return norm;
}

}  // namespace seqmix
