#include "layers/module.h"

#include <cmath>

namespace seqmix {

namespace {
Tensor from_doubles(const Shape& shape, const std::vector<double>& v, DType dt) {
  Tensor t = Tensor::from_vector(shape, v);
  if (dt != DType::f64) t = t.to(dt);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

Tensor param_normal(const Shape& shape, double std, const LayerInit& init) {
  std::vector<double> v(shape_numel(shape));
  for (double& x : v) x = std * init.gen->normal();
  return from_doubles(shape, v, init.dtype);
}

Tensor param_uniform(const Shape& shape, double lo, double hi, const LayerInit& init) {
  std::vector<double> v(shape_numel(shape));
  for (double& x : v) x = init.gen->uniform(lo, hi);
  return from_doubles(shape, v, init.dtype);
}

Tensor param_constant(const Shape& shape, double value, const LayerInit& init) {
  return from_doubles(shape, std::vector<double>(shape_numel(shape), value), init.dtype);
}

Tensor param_from(const Shape& shape, const std::vector<double>& values, const LayerInit& init) {
  if (static_cast<int64_t>(values.size()) != shape_numel(shape))
    throw ShapeError("param_from: " + std::to_string(values.size()) + " values for shape " + shape_str(shape));
  return from_doubles(shape, values, init.dtype);
}

NamedTensors named(const Parameters& params) {
  NamedTensors out;
  out.reserve(params.size());
  for (const Parameter& p : params) out.emplace_back(p.name, p.tensor);
  return out;
}

void Mixer::named_parameters(const std::string& prefix, NamedTensors& out) const {
  Parameters ps;
  parameters(prefix, ps);
  for (Parameter& p : ps) out.emplace_back(std::move(p.name), std::move(p.tensor));
}

double scaled_init_std(const LayerInit& init) { return 0.02 / std::sqrt(2.0 * static_cast<double>(init.n_layers)); }

}  // namespace seqmix
