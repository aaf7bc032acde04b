#include "tests/support/gradcheck.h"

#include <cmath>
#include <sstream>

#include "core/tape.h"
#include "tests/support/op_testing.h"

namespace seqmix::testing {

namespace {

double eval_loss(const GradFn& f, const std::vector<Tensor>& inputs, const Tensor& r) {
  NoGradGuard ng;
  Tensor y = f(inputs);
  const double* yv = y.f64();
  double acc = 0;
  for (int64_t i = 0; i < y.numel(); ++i) acc += yv[i] * r.f64()[i];
  return acc;
}

}  // namespace

Tensor rand_f64(const Shape& shape, Generator& gen, double lo, double hi, bool requires_grad) {
  Tensor t = Tensor::empty(shape, DType::f64);
  for (int64_t i = 0; i < t.numel(); ++i) t.f64()[i] = gen.uniform(lo, hi);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor rand_f32(const Shape& shape, Generator& gen, double lo, double hi, bool requires_grad) {
  Tensor t = Tensor::empty(shape, DType::f32);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = static_cast<float>(gen.uniform(lo, hi));
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

::testing::AssertionResult gradcheck(const GradFn& f, const std::vector<Tensor>& inputs,
                                     const GradCheckOptions& opt) {
  for (size_t k = 0; k < inputs.size(); ++k) {
    if (inputs[k].requires_grad() && inputs[k].dtype() != DType::f64)
      return ::testing::AssertionFailure() << "gradcheck: input " << k << " is not float64";
    inputs[k].zero_grad();
  }
  tape().clear();
  Tensor y = f(inputs);
  if (y.dtype() != DType::f64) return ::testing::AssertionFailure() << "gradcheck: output is not float64";
  Generator gen(opt.seed);
  Tensor r = rand_f64(y.shape(), gen, -1.0, 1.0, false);
  Tensor loss = weighted_sum(y, r);
  if (!loss.requires_grad()) return ::testing::AssertionFailure() << "gradcheck: output does not require grad";
  backward(loss);

  std::ostringstream failures;
  int n_fail = 0;
  int64_t n_checked = 0;
  for (size_t k = 0; k < inputs.size(); ++k) {
    const Tensor& x = inputs[k];
    if (!x.requires_grad()) continue;
    Tensor analytic = x.grad();
    double* xv = x.f64();
    std::vector<int64_t> elements(x.numel());
    for (int64_t i = 0; i < x.numel(); ++i) elements[i] = i;
    if (opt.max_elements_per_input > 0 && x.numel() > opt.max_elements_per_input) {
      Generator pick(opt.seed + k);
      for (int64_t i = 0; i < opt.max_elements_per_input; ++i)
        std::swap(elements[i], elements[pick.randint(i, x.numel())]);
      elements.resize(opt.max_elements_per_input);
    }
    for (int64_t i : elements) {
      const double orig = xv[i];
      xv[i] = orig + opt.eps;
      const double lp = eval_loss(f, inputs, r);
      xv[i] = orig - opt.eps;
      const double lm = eval_loss(f, inputs, r);
      xv[i] = orig;
      const double numeric = (lp - lm) / (2 * opt.eps);
      const double got = analytic.defined() ? analytic.f64()[i] : 0.0;
      ++n_checked;
      if (!(std::fabs(got - numeric) <= opt.atol + opt.rtol * std::fabs(numeric))) {
        if (n_fail < 8)
          failures << "\n  input " << k << " " << shape_str(x.shape()) << " element " << i << ": analytic " << got
                   << ", numeric " << numeric;
        ++n_fail;
      }
    }
  }
  if (n_checked == 0) return ::testing::AssertionFailure() << "gradcheck: no input requires a gradient";
  if (n_fail) return ::testing::AssertionFailure() << n_fail << " of " << n_checked << " gradients differ" << failures.str();
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  if (a.shape() != b.shape())
    return ::testing::AssertionFailure() << "shapes differ: " << shape_str(a.shape()) << " vs " << shape_str(b.shape());
  double worst = 0;
  int64_t worst_i = -1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double x = a.item(i), y = b.item(i);
    double ratio = x == y ? 0.0 : std::fabs(x - y) / (atol + rtol * std::fabs(y));
    if (!(ratio <= worst) || std::isnan(ratio)) {
      if (std::isnan(ratio) || ratio > worst) { worst = std::isnan(ratio) ? INFINITY : ratio; worst_i = i; }
    }
  }
  if (worst > 1.0)
    return ::testing::AssertionFailure() << "mismatch at element " << worst_i << ": " << a.item(worst_i) << " vs "
                                         << b.item(worst_i) << " (error " << worst << " x tolerance)";
  return ::testing::AssertionSuccess();
}

}  // namespace seqmix::testing
