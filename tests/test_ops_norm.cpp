// softmax, layernorm, rmsnorm:
// - float64 finite-difference gradient checks (x, weight, bias), one table row per op,
//   at awkward shapes;
// - float32 kernels against naive twins: forward from the formulas, backward through
//   the explicit per-row Jacobian (an O(D^2) loop written independently of the
//   kernels' simplified forms);
// - softmax rows sum to 1 and stay finite for inputs of 1e4; layernorm with a large
//   mean; error messages; weight gradients identical from run to run.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"
#include "tests/support/case_names.h"
#include "tests/support/gradcheck.h"
#include "tests/support/op_testing.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

const std::vector<Shape>& kShapes = kAwkwardShapes;


// ---------------------------------------------------------------------------
// The table. Each case builds its parameters (D) and applies the op to (x, params...).

enum class Kind { softmax, layernorm, layernorm_no_bias, rmsnorm };

struct NormCase {
  const char* name;
  Kind kind;
};
// ctest lists a case by its printed parameter: the name, not the struct's bytes.
void PrintTo(const NormCase& c, std::ostream* os) { *os << c.name; }

const std::vector<NormCase> kCases = {{"softmax", Kind::softmax},
                                      {"layernorm", Kind::layernorm},
                                      {"layernorm_no_bias", Kind::layernorm_no_bias},
                                      {"rmsnorm", Kind::rmsnorm}};

int n_params(Kind k) { return k == Kind::softmax ? 0 : k == Kind::layernorm ? 2 : 1; }

Tensor run_case(Kind k, const std::vector<Tensor>& in) {
  switch (k) {
    case Kind::softmax: return softmax(in[0]);
    case Kind::layernorm: return layernorm(in[0], in[1], in[2]);
    case Kind::layernorm_no_bias: return layernorm(in[0], in[1], Tensor());
    case Kind::rmsnorm: return rmsnorm(in[0], in[1]);
  }
  return Tensor();
}

// Inputs: x ~ U(-2, 2); weight ~ U(0.5, 1.5) (away from 0 so every term matters);
// bias ~ U(-1, 1).
std::vector<Tensor> make_inputs(Kind k, const Shape& shape, bool f64, Generator& gen) {
  auto rnd = [&](const Shape& s, double lo, double hi) {
    return f64 ? rand_f64(s, gen, lo, hi) : rand_f32(s, gen, lo, hi, true);
  };
  std::vector<Tensor> in{rnd(shape, -2, 2)};
  const int64_t D = shape.back();
  if (n_params(k) >= 1) in.push_back(rnd({D}, 0.5, 1.5));
  if (n_params(k) >= 2) in.push_back(rnd({D}, -1, 1));
  return in;
}

class NormGrad : public ::testing::TestWithParam<std::tuple<NormCase, Shape>> {};

TEST_P(NormGrad, Float64FiniteDifferences) {
  const auto& [c, shape] = GetParam();
  Generator gen(41);
  std::vector<Tensor> in = make_inputs(c.kind, shape, true, gen);
  EXPECT_TRUE(gradcheck([k = c.kind](const std::vector<Tensor>& v) { return run_case(k, v); }, in));
}

INSTANTIATE_TEST_SUITE_P(Ops, NormGrad, ::testing::Combine(::testing::ValuesIn(kCases), ::testing::ValuesIn(kShapes)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  shape_name(std::get<1>(info.param));
                         });

// ---------------------------------------------------------------------------
// Naive twins, in double, one row at a time: y (D) and the Jacobian J[j][i] = dy_j/dx_i.

struct RowRef {
  std::vector<double> y, norm;            // norm: the normalised row before the weight
  std::vector<std::vector<double>> jac;   // jac[j][i] = d y_j / d x_i
};

RowRef naive_row(Kind k, const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
                 double eps) {
  const int64_t D = static_cast<int64_t>(x.size());
  RowRef r;
  r.y.assign(D, 0);
  r.norm.assign(D, 0);
  r.jac.assign(D, std::vector<double>(D, 0));
  if (k == Kind::softmax) {
    double m = x[0], s = 0;
    for (double v : x) m = std::max(m, v);
    for (double v : x) s += std::exp(v - m);
    for (int64_t j = 0; j < D; ++j) r.y[j] = std::exp(x[j] - m) / s;
    for (int64_t j = 0; j < D; ++j)
      for (int64_t i = 0; i < D; ++i) r.jac[j][i] = r.y[j] * ((i == j) - r.y[i]);
  } else if (k == Kind::rmsnorm) {
    double ms = 0;
    for (double v : x) ms += v * v;
    ms /= D;
    const double rs = 1 / std::sqrt(ms + eps);
    for (int64_t j = 0; j < D; ++j) {
      r.norm[j] = x[j] * rs;
      r.y[j] = r.norm[j] * w[j];
      // y_j = w_j x_j rs, d rs / d x_i = -rs^3 x_i / D
      for (int64_t i = 0; i < D; ++i) r.jac[j][i] = w[j] * ((i == j) * rs - x[j] * rs * rs * rs * x[i] / D);
    }
  } else {
    double mu = 0, var = 0;
    for (double v : x) mu += v;
    mu /= D;
    for (double v : x) var += (v - mu) * (v - mu);
    var /= D;
    const double rs = 1 / std::sqrt(var + eps);
    for (int64_t j = 0; j < D; ++j) {
      r.norm[j] = (x[j] - mu) * rs;
      r.y[j] = r.norm[j] * w[j] + (b.empty() ? 0.0 : b[j]);
      // norm_j = (x_j - mu) rs; d mu/d x_i = 1/D; d rs/d x_i = -rs^3 (x_i - mu) / D
      for (int64_t i = 0; i < D; ++i)
        r.jac[j][i] = w[j] * (((i == j) - 1.0 / D) * rs - (x[j] - mu) * rs * rs * rs * (x[i] - mu) / D);
    }
  }
  return r;
}

class NormNaive : public ::testing::TestWithParam<NormCase> {};

TEST_P(NormNaive, Float32MatchesNaiveTwin) {
  const NormCase c = GetParam();
  const Shape shape{5, 41, 97};  // 19885 elements: the parallel paths
  const int64_t D = shape.back(), N = shape_numel(shape) / D;
  Generator gen(42);
  std::vector<Tensor> in = make_inputs(c.kind, shape, false, gen);
  Tensor y = run_case(c.kind, in);
  Tensor gy = rand_f32(shape, gen);
  backward_weighted(y, gy);

  std::vector<double> w(D, 1.0), b;
  if (n_params(c.kind) >= 1) w = in[1].to_f64_vector();
  if (n_params(c.kind) >= 2) b = in[2].to_f64_vector();
  Tensor y_ref = Tensor::empty(shape), dx_ref = Tensor::empty(shape);
  std::vector<double> dw(D, 0), db(D, 0);
  for (int64_t r = 0; r < N; ++r) {
    std::vector<double> xr(D), gr(D);
    for (int64_t j = 0; j < D; ++j) {
      xr[j] = in[0].f32()[r * D + j];
      gr[j] = gy.f32()[r * D + j];
    }
    const RowRef ref = naive_row(c.kind, xr, w, b, 1e-5);
    for (int64_t i = 0; i < D; ++i) {
      double acc = 0;
      for (int64_t j = 0; j < D; ++j) acc += gr[j] * ref.jac[j][i];
      y_ref.f32()[r * D + i] = static_cast<float>(ref.y[i]);
      dx_ref.f32()[r * D + i] = static_cast<float>(acc);
      dw[i] += gr[i] * ref.norm[i];
      db[i] += gr[i];
    }
  }
  EXPECT_TRUE(allclose(y, y_ref, 1e-5, 1e-6));
  EXPECT_TRUE(allclose(in[0].grad(), dx_ref, 1e-4, 1e-5));
  if (n_params(c.kind) >= 1) {
    EXPECT_TRUE(allclose(in[1].grad(), Tensor::from_vector({D}, dw), 1e-4, 1e-4));
  }
  if (n_params(c.kind) >= 2) {
    EXPECT_TRUE(allclose(in[2].grad(), Tensor::from_vector({D}, db), 1e-5, 1e-5));
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, NormNaive, ::testing::ValuesIn(kCases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---------------------------------------------------------------------------
// Numerical behaviour.

TEST(Softmax, RowsSumToOneAndLargeInputsAreStable) {
  Generator gen(43);
  // Rows around 1e4, and one row with +-1e4 extremes: exp(1e4) would overflow.
  Tensor x = rand_f32({6, 33}, gen, -3, 3);
  for (int64_t i = 0; i < 4 * 33; ++i) x.f32()[i] += 1e4f;
  x.f32()[5 * 33 + 0] = 1e4f;
  x.f32()[5 * 33 + 1] = -1e4f;
  Tensor y = softmax(x);
  for (int64_t r = 0; r < 6; ++r) {
    double s = 0, m = -INFINITY;
    for (int64_t j = 0; j < 33; ++j) m = std::max(m, double(x.f32()[r * 33 + j]));
    for (int64_t j = 0; j < 33; ++j) s += std::exp(double(x.f32()[r * 33 + j]) - m);
    double total = 0;
    for (int64_t j = 0; j < 33; ++j) {
      const double v = y.f32()[r * 33 + j];
      ASSERT_TRUE(std::isfinite(v)) << r << "," << j;
      EXPECT_NEAR(v, std::exp(double(x.f32()[r * 33 + j]) - m) / s, 1e-6);
      total += v;
    }
    EXPECT_NEAR(total, 1.0, 1e-6) << "row " << r;
  }
  EXPECT_NEAR(y.f32()[5 * 33 + 0], 1.0, 1e-6);
  EXPECT_EQ(y.f32()[5 * 33 + 1], 0.0f);
}

TEST(Softmax, ShiftInvariantInFloat64) {
  Generator gen(44);
  Tensor x = rand_f64({3, 9}, gen, -1, 1, false);
  Tensor xs = x.clone();
  for (int64_t i = 0; i < xs.numel(); ++i) xs.f64()[i] += 1e4;
  EXPECT_TRUE(allclose(softmax(xs), softmax(x), 1e-9, 1e-12));
}

TEST(Layernorm, LargeMeanKeepsPrecision) {
  // Rows with mean 1000 and unit spread: a one-pass E[x^2] - mean^2 variance would
  // lose about 6 of float32's digits here.
  Generator gen(45);
  const int64_t D = 64;
  Tensor x = rand_f32({8, D}, gen, -1, 1);
  for (int64_t i = 0; i < x.numel(); ++i) x.f32()[i] += 1000.0f;
  Tensor w = Tensor::full({D}, 1.0), b = Tensor::zeros({D});
  Tensor y = layernorm(x, w, b);
  for (int64_t r = 0; r < 8; ++r) {
    std::vector<double> xr(D);
    for (int64_t j = 0; j < D; ++j) xr[j] = x.f32()[r * D + j];
    const RowRef ref = naive_row(Kind::layernorm, xr, std::vector<double>(D, 1.0), {}, 1e-5);
    for (int64_t j = 0; j < D; ++j) EXPECT_NEAR(y.f32()[r * D + j], ref.y[j], 1e-4);
  }
}

TEST(Norm, WeightGradientsIdenticalFromRunToRun) {
  Generator gen(46);
  Tensor x = rand_f32({64, 37, 19}, gen, -2, 2, true);
  Tensor w = rand_f32({19}, gen, 0.5, 1.5, true), b = rand_f32({19}, gen, -1, 1, true);
  Tensor gy = rand_f32({64, 37, 19}, gen);
  std::vector<std::vector<float>> grads;
  for (int run = 0; run < 3; ++run) {
    w.zero_grad();
    b.zero_grad();
    backward_weighted(layernorm(x, w, b), gy);
    backward_weighted(rmsnorm(x, w), gy);
    std::vector<float> g = w.grad().to_f32_vector(), gb = b.grad().to_f32_vector();
    g.insert(g.end(), gb.begin(), gb.end());
    grads.push_back(g);
  }
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_EQ(grads[0], grads[2]);
}

TEST(Norm, SkipsInputsThatNeedNoGradient) {
  Generator gen(47);
  Tensor x = rand_f64({4, 6}, gen, -1, 1, false);
  Tensor w = rand_f64({6}, gen, 0.5, 1.5), b = rand_f64({6}, gen, -1, 1, false);
  backward_weighted(layernorm(x, w, b), Tensor::full({4, 6}, 1.0, DType::f64));
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  // Gradient checks with only the weight requiring a gradient (dx skipped).
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1]); }, {x, w}));
}

// ---------------------------------------------------------------------------
// Errors name the op and the shapes.

void expect_shape_error(const std::function<void()>& f, const std::string& op, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << op << " accepted bad arguments";
  } catch (const ShapeError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(op + ":", 0), 0u) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << msg;
  }
}

TEST(Norm, BadArgumentsThrowNamingTheOp) {
  Tensor x = Tensor::zeros({2, 3, 5});
  expect_shape_error([&] { layernorm(x, Tensor::zeros({4}), Tensor()); }, "layernorm", "(4)");
  expect_shape_error([&] { layernorm(x, Tensor::zeros({5}), Tensor::zeros({3, 5})); }, "layernorm", "(3, 5)");
  expect_shape_error([&] { layernorm(x, Tensor(), Tensor()); }, "layernorm", "weight");
  expect_shape_error([&] { layernorm(x, Tensor::zeros({5}, DType::f64), Tensor()); }, "layernorm", "float64");
  expect_shape_error([&] { rmsnorm(x, Tensor::zeros({2, 5})); }, "rmsnorm", "(2, 5)");
  expect_shape_error([&] { rmsnorm(Tensor::zeros({3, 0}), Tensor::zeros({0})); }, "rmsnorm", "(3, 0)");
  expect_shape_error([&] { softmax(Tensor::zeros({})); }, "softmax", "()");
  EXPECT_THROW(softmax(Tensor::zeros({3}, DType::i32)), ShapeError);
}

}  // namespace
