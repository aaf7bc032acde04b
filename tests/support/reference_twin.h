// What every mixer's reference twin shares: the result of its backward, and the plain-loop
// projections its layer is built from.
//
// Each mixer X has a twin in tests/support/reference_X.{h,cpp} with the same two entry
// points on Tensors, written with plain loops in double straight from docs/mixers.md:
//
//   Tensor reference_X_forward(const NamedTensors& params, const XOptions& opt, const Tensor& x);
//   ReferenceGrads reference_X_backward(const NamedTensors& params, const XOptions& opt,
//                                       const Tensor& x, const Tensor& dy);
//
// params are the layer's parameters as its named_parameters("") lists them, x is (B, L, D)
// of any float dtype; the results are float64. The backward returns the gradients of
// sum(y * dy). The shared suite (tests/test_mixer_suite.cpp) reaches them through the mixer's
// row in tests/support/mixer_spec.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace seqmix::testing {

struct ReferenceGrads {
  Tensor dx;                   // (B, L, D)
  std::vector<Tensor> params;  // in the order of the parameters given, of their shapes
};

// The parameter called `name`; throws std::invalid_argument naming it and the twin.
const Tensor& ref_param(const NamedTensors& params, const std::string& name, const char* twin);

// The gradients given by name, as tensors of their parameters' shapes in the order of params;
// throws std::invalid_argument when a parameter has none or a name is not a parameter.
std::vector<Tensor> ref_grads_in_order(const NamedTensors& params,
                                       const std::vector<std::pair<std::string, std::vector<double>>>& grads,
                                       const char* twin);

// y (rows, out) = x (rows, in) W^T + b, W (out, in); b may be undefined (no bias).
std::vector<double> ref_linear_forward(const std::vector<double>& x, int64_t rows, const Tensor& w,
                                       const Tensor& b = Tensor());

// The gradients of sum(y * dy) for y = ref_linear_forward(x, rows, w, b):
// dx (rows, in) += dy W, dw (out, in) = dy^T x, db (out) = column sums of dy (when asked).
struct RefLinearGrads {
  std::vector<double> dw, db;
};
RefLinearGrads ref_linear_backward(const std::vector<double>& x, int64_t rows, const Tensor& w,
                                   const std::vector<double>& dy, std::vector<double>& dx);

}  // namespace seqmix::testing
