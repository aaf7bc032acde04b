// Pointwise ops and reductions: binary ops with trailing broadcasting, scale, the
// unary ops, sum/mean.
// - float64 finite-difference gradient checks, one table row per op, at awkward shapes;
// - float32 kernels against naive plain loops in double, forward and backward, at
//   sizes large enough to take the OpenMP paths;
// - broadcasting in both directions, numerically extreme inputs, error messages,
//   and bit-identical results across thread counts.
#include <gtest/gtest.h>
#include <omp.h>

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
// Unary ops: the table. Naive forms are written from the textbook definitions in
// double; inputs stay off kinks (log: positive; softplus below its switch at 20).

double sigmoid_ref(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double phi_ref(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }
double Phi_ref(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

struct UnaryCase {
  const char* name;
  Tensor (*op)(const Tensor&);
  double (*f)(double);
  double (*df)(double);
  double lo, hi;
};
// ctest lists a case by its printed parameter: the name, not the struct's bytes.
void PrintTo(const UnaryCase& c, std::ostream* os) { *os << c.name; }

std::vector<UnaryCase> unary_cases() {
  return {
      {"exp", seqmix::exp, [](double x) { return std::exp(x); }, [](double x) { return std::exp(x); }, -2, 2},
      {"log", seqmix::log, [](double x) { return std::log(x); }, [](double x) { return 1 / x; }, 0.2, 3},
      {"sigmoid", seqmix::sigmoid, sigmoid_ref, [](double x) { return sigmoid_ref(x) * (1 - sigmoid_ref(x)); }, -6, 6},
      {"silu", seqmix::silu, [](double x) { return x * sigmoid_ref(x); },
       [](double x) { return sigmoid_ref(x) + x * sigmoid_ref(x) * (1 - sigmoid_ref(x)); }, -5, 5},
      {"gelu", seqmix::gelu, [](double x) { return x * Phi_ref(x); },
       [](double x) { return Phi_ref(x) + x * phi_ref(x); }, -4, 4},
      {"softplus", seqmix::softplus, [](double x) { return std::log(1 + std::exp(x)); }, sigmoid_ref, -5, 5},
      {"elu", seqmix::elu, [](double x) { return x > 0 ? x : std::exp(x) - 1; },
       [](double x) { return x > 0 ? 1 : std::exp(x); }, -2, 2},
      {"logsigmoid", seqmix::logsigmoid, [](double x) { return std::log(sigmoid_ref(x)); },
       [](double x) { return 1 - sigmoid_ref(x); }, -6, 6},
  };
}

class UnaryGrad : public ::testing::TestWithParam<std::tuple<UnaryCase, Shape>> {};

TEST_P(UnaryGrad, Float64FiniteDifferences) {
  const auto& [c, shape] = GetParam();
  Generator gen(11);
  Tensor x = rand_f64(shape, gen, c.lo, c.hi);
  EXPECT_TRUE(gradcheck([op = c.op](const std::vector<Tensor>& in) { return op(in[0]); }, {x}));
}

INSTANTIATE_TEST_SUITE_P(Ops, UnaryGrad, ::testing::Combine(::testing::ValuesIn(unary_cases()), ::testing::ValuesIn(kShapes)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  shape_name(std::get<1>(info.param));
                         });

class UnaryNaive : public ::testing::TestWithParam<UnaryCase> {};

TEST_P(UnaryNaive, Float32MatchesPlainLoops) {
  const UnaryCase& c = GetParam();
  Generator gen(12);
  const Shape shape{4, 33, 129};  // 17028 elements: the parallel path
  Tensor x = rand_f32(shape, gen, c.lo, c.hi, true);
  Tensor y = c.op(x);
  Tensor gy = rand_f32(shape, gen);
  backward_weighted(y, gy);
  Tensor y_ref = Tensor::empty(shape), dx_ref = Tensor::empty(shape);
  for (int64_t i = 0; i < x.numel(); ++i) {
    y_ref.f32()[i] = static_cast<float>(c.f(x.f32()[i]));
    dx_ref.f32()[i] = static_cast<float>(gy.f32()[i] * c.df(x.f32()[i]));
  }
  EXPECT_TRUE(allclose(y, y_ref, 2e-6, 1e-6)) << c.name;
  // An output-saving derivative (sigmoid's y (1 - y)) loses digits as y -> 1 in float32;
  // hence the absolute term.
  EXPECT_TRUE(allclose(x.grad(), dx_ref, 1e-5, 2e-6)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Ops, UnaryNaive, ::testing::ValuesIn(unary_cases()),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(Unary, ExtremeInputsStayFinite) {
  Tensor x = Tensor::from_vector({6}, std::vector<double>{-1000, -50, -20.5, 20.5, 50, 1000});
  x.set_requires_grad();
  struct Expect {
    Tensor (*op)(const Tensor&);
    std::vector<double> y, dy;
  };
  const std::vector<Expect> cases = {
      {seqmix::sigmoid, {0, std::exp(-50.0), sigmoid_ref(-20.5), sigmoid_ref(20.5), 1, 1}, {}},
      {seqmix::logsigmoid, {-1000, -50, std::log(sigmoid_ref(-20.5)), -std::log1p(std::exp(-20.5)), -std::exp(-50.0), 0},
       {1, 1, 1 - sigmoid_ref(-20.5), 1 - sigmoid_ref(20.5), std::exp(-50.0), 0}},
      {seqmix::softplus, {0, std::exp(-50.0), std::log1p(std::exp(-20.5)), 20.5, 50, 1000},
       {0, std::exp(-50.0), sigmoid_ref(-20.5), sigmoid_ref(20.5), 1, 1}},
      {seqmix::silu, {-0.0, -50 * std::exp(-50.0), -20.5 * sigmoid_ref(-20.5), 20.5 * sigmoid_ref(20.5), 50, 1000}, {}},
      {seqmix::gelu, {0, 0, -20.5 * Phi_ref(-20.5), 20.5, 50, 1000}, {0, 0, 0, 1, 1, 1}},
      {seqmix::elu, {-1, std::expm1(-50.0), std::expm1(-20.5), 20.5, 50, 1000}, {}},
  };
  for (const Expect& e : cases) {
    x.zero_grad();
    Tensor y = e.op(x);
    Tensor ones = Tensor::full({6}, 1.0, DType::f64);
    backward_weighted(y, ones);
    for (int64_t i = 0; i < 6; ++i) {
      EXPECT_TRUE(std::isfinite(y.item(i)) && std::isfinite(x.grad().item(i))) << i;
      EXPECT_NEAR(y.item(i), e.y[i], 1e-12 * (1 + std::fabs(e.y[i]))) << i;
      if (!e.dy.empty()) {
        EXPECT_NEAR(x.grad().item(i), e.dy[i], 1e-12) << i;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Binary ops with broadcasting.

struct BinaryCase {
  const char* name;
  Tensor (*op)(const Tensor&, const Tensor&);
  double (*f)(double, double);
  double (*da)(double, double);  // d out / d a
  double (*db)(double, double);  // d out / d b
  double b_lo, b_hi;             // the range of b
};
void PrintTo(const BinaryCase& c, std::ostream* os) { *os << c.name; }

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", seqmix::add, [](double a, double b) { return a + b; }, [](double, double) { return 1.0; },
       [](double, double) { return 1.0; }, -1, 1},
      {"sub", seqmix::sub, [](double a, double b) { return a - b; }, [](double, double) { return 1.0; },
       [](double, double) { return -1.0; }, -1, 1},
  };
}

struct ShapePair {
  Shape a, b;
};

std::string pair_name(const ShapePair& p) { return "a" + shape_name(p.a) + "_b" + shape_name(p.b); }
void PrintTo(const ShapePair& p, std::ostream* os) { *os << pair_name(p); }

// Equal awkward shapes, b a trailing suffix of a, a a trailing suffix of b, a scalar.
const std::vector<ShapePair> kGradPairs = {
    {{1}, {1}}, {{7}, {7}}, {{3, 5}, {3, 5}}, {{2, 3, 17}, {2, 3, 17}},
    {{2, 3, 5}, {5}}, {{2, 3, 5}, {3, 5}}, {{5}, {2, 3, 5}}, {{3, 5}, {}},
};

class BinaryGrad : public ::testing::TestWithParam<std::tuple<BinaryCase, ShapePair>> {};

TEST_P(BinaryGrad, Float64FiniteDifferences) {
  const auto& [c, p] = GetParam();
  Generator gen(21);
  Tensor a = rand_f64(p.a, gen), b = rand_f64(p.b, gen, c.b_lo, c.b_hi);
  EXPECT_TRUE(gradcheck([op = c.op](const std::vector<Tensor>& in) { return op(in[0], in[1]); }, {a, b}));
}

INSTANTIATE_TEST_SUITE_P(Ops, BinaryGrad,
                         ::testing::Combine(::testing::ValuesIn(binary_cases()), ::testing::ValuesIn(kGradPairs)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" + pair_name(std::get<1>(info.param));
                         });

class BinaryNaive : public ::testing::TestWithParam<std::tuple<BinaryCase, ShapePair>> {};

TEST_P(BinaryNaive, Float32MatchesPlainLoops) {
  const auto& [c, p] = GetParam();
  Generator gen(22);
  Tensor a = rand_f32(p.a, gen, -1, 1, true), b = rand_f32(p.b, gen, c.b_lo, c.b_hi, true);
  Tensor y = c.op(a, b);
  const Shape out_shape = a.numel() >= b.numel() ? p.a : p.b;
  ASSERT_EQ(y.shape(), out_shape);
  Tensor gy = rand_f32(out_shape, gen);
  backward_weighted(y, gy);

  // The smaller operand repeats with period n over the output.
  const int64_t total = shape_numel(out_shape);
  const int64_t na = a.numel(), nb = b.numel();
  Tensor y_ref = Tensor::empty(out_shape);
  std::vector<double> da(static_cast<size_t>(na), 0.0), db(static_cast<size_t>(nb), 0.0);
  for (int64_t i = 0; i < total; ++i) {
    const double av = a.f32()[i % na], bv = b.f32()[i % nb], g = gy.f32()[i];
    y_ref.f32()[i] = static_cast<float>(c.f(av, bv));
    da[i % na] += g * c.da(av, bv);
    db[i % nb] += g * c.db(av, bv);
  }
  EXPECT_TRUE(allclose(y, y_ref, 1e-6, 1e-7));
  EXPECT_TRUE(allclose(a.grad(), Tensor::from_vector(p.a, da), 1e-5, 1e-5));
  EXPECT_TRUE(allclose(b.grad(), Tensor::from_vector(p.b, db), 1e-5, 1e-5));
}

// Sizes past the parallel threshold (16384 elements), so the column-owned reduction
// of the broadcast operand's gradient runs on every thread.
const std::vector<ShapePair> kNaivePairs = {
    {{64, 301}, {64, 301}}, {{64, 301}, {301}}, {{301}, {64, 301}}, {{8, 64, 41}, {64, 41}}, {{7, 2500}, {}},
};

INSTANTIATE_TEST_SUITE_P(Ops, BinaryNaive,
                         ::testing::Combine(::testing::ValuesIn(binary_cases()), ::testing::ValuesIn(kNaivePairs)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" + pair_name(std::get<1>(info.param));
                         });

TEST(Binary, SameTensorAsBothOperands) {
  Generator gen(23);
  Tensor x = rand_f64({3, 7}, gen, 0.5, 2);
  for (auto op : {seqmix::add, seqmix::sub})
    EXPECT_TRUE(gradcheck([op](const std::vector<Tensor>& in) { return op(in[0], in[0]); }, {x}));
}

TEST(Binary, SkipsOperandThatNeedsNoGradient) {
  Generator gen(24);
  Tensor a = rand_f64({4, 5}, gen), b = rand_f64({5}, gen, -1, 1, false);
  Tensor y = sub(a, b);
  backward_weighted(y, Tensor::full({4, 5}, 1.0, DType::f64));
  ASSERT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(a.grad().item(i), 1.0);
  {
    NoGradGuard ng;
    Tensor z = add(a, b);
    EXPECT_FALSE(z.requires_grad());
  }
  EXPECT_EQ(tape().size(), 0u);
}

TEST(Binary, MismatchedBroadcastThrowsNamingTheOp) {
  const std::vector<ShapePair> bad = {{{2, 3, 5}, {4}}, {{2, 3, 5}, {1, 5}}, {{2, 3, 5}, {2, 3}}, {{3, 5}, {2, 5}}};
  for (const BinaryCase& c : binary_cases())
    for (const ShapePair& p : bad) {
      Tensor a = Tensor::zeros(p.a), b = Tensor::full(p.b, 1.0);
      try {
        c.op(a, b);
        ADD_FAILURE() << c.name << " accepted " << pair_name(p);
      } catch (const ShapeError& e) {
        const std::string msg = e.what();
        EXPECT_EQ(msg.rfind(std::string(c.name) + ":", 0), 0u) << msg;
        EXPECT_NE(msg.find(shape_str(p.a)), std::string::npos) << msg;
        EXPECT_NE(msg.find(shape_str(p.b)), std::string::npos) << msg;
      }
    }
  EXPECT_THROW(add(Tensor::zeros({3}), Tensor::zeros({3}, DType::f64)), ShapeError);
  EXPECT_THROW(sub(Tensor::zeros({3}, DType::i32), Tensor::zeros({3}, DType::i32)), ShapeError);
}

TEST(Binary, BroadcastGradientIsIdenticalForAnyThreadCount) {
  ThreadCount guard(omp_get_max_threads());
  Generator gen(25);
  Tensor a = rand_f32({97, 403}, gen, -1, 1, true), b = rand_f32({403}, gen, -1, 1, true);
  Tensor gy = rand_f32({97, 403}, gen);
  std::vector<Tensor> db;
  for (int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    b.zero_grad();
    backward_weighted(sub(a, b), gy);
    db.push_back(b.grad().clone());
  }
  EXPECT_TRUE(same_values(db[0], db[1]));
  EXPECT_TRUE(same_values(db[0], db[2]));
}

TEST(Scale, GradCheckAndNaive) {
  Generator gen(26);
  for (const Shape& s : kShapes) {
    Tensor x = rand_f64(s, gen);
    EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return scale(in[0], -2.5); }, {x}));
  }
  Tensor x = rand_f32({40, 500}, gen, -1, 1, true);
  Tensor y = scale(x, 0.3);
  Tensor gy = rand_f32({40, 500}, gen);
  backward_weighted(y, gy);
  for (int64_t i = 0; i < x.numel(); ++i) {
    ASSERT_EQ(y.f32()[i], 0.3f * x.f32()[i]);
    ASSERT_EQ(x.grad().f32()[i], 0.3f * gy.f32()[i]);
  }
}

// ---------------------------------------------------------------------------
// Reductions.

struct ReduceCase {
  const char* name;
  Tensor (*op)(const Tensor&);
  bool average;
};
void PrintTo(const ReduceCase& c, std::ostream* os) { *os << c.name; }

std::vector<ReduceCase> reduce_cases() {
  return {{"sum", seqmix::sum, false}, {"mean", seqmix::mean, true}};
}

class ReduceGrad : public ::testing::TestWithParam<std::tuple<ReduceCase, Shape>> {};

TEST_P(ReduceGrad, Float64FiniteDifferences) {
  const auto& [c, shape] = GetParam();
  Generator gen(31);
  Tensor x = rand_f64(shape, gen);
  EXPECT_TRUE(gradcheck([op = c.op](const std::vector<Tensor>& in) { return op(in[0]); }, {x}));
}

INSTANTIATE_TEST_SUITE_P(Ops, ReduceGrad, ::testing::Combine(::testing::ValuesIn(reduce_cases()), ::testing::ValuesIn(kShapes)),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  shape_name(std::get<1>(info.param));
                         });

class ReduceNaive : public ::testing::TestWithParam<std::tuple<ReduceCase, Shape>> {};

TEST_P(ReduceNaive, Float32MatchesPlainLoops) {
  const auto& [c, shape] = GetParam();
  Generator gen(32);
  Tensor x = rand_f32(shape, gen, -1, 1, true);
  Tensor y = c.op(x);
  const int64_t D = x.numel(), rows = 1;
  const Shape out_shape{};
  ASSERT_EQ(y.shape(), out_shape);
  Tensor gy = rand_f32(out_shape, gen);
  backward_weighted(y, gy);
  Tensor y_ref = Tensor::empty(out_shape), dx_ref = Tensor::empty(shape);
  const double factor = c.average ? 1.0 / D : 1.0;
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0;
    for (int64_t j = 0; j < D; ++j) acc += x.f32()[r * D + j];
    y_ref.f32()[r] = static_cast<float>(acc * factor);
    for (int64_t j = 0; j < D; ++j) dx_ref.f32()[r * D + j] = static_cast<float>(gy.f32()[r] * factor);
  }
  EXPECT_TRUE(allclose(y, y_ref, 1e-6, 1e-6));
  EXPECT_TRUE(allclose(x.grad(), dx_ref, 1e-6, 1e-9));
}

// (100003): several blocks of the full sum with a ragged last one; (61, 333): rows
// past the parallel threshold.
INSTANTIATE_TEST_SUITE_P(Ops, ReduceNaive,
                         ::testing::Combine(::testing::ValuesIn(reduce_cases()),
                                            ::testing::Values(Shape{100003}, Shape{61, 333}, Shape{3, 5, 1})),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) + "_" +
                                  shape_name(std::get<1>(info.param));
                         });

TEST(Reduce, FullSumIsIdenticalForAnyThreadCount) {
  ThreadCount guard(omp_get_max_threads());
  Generator gen(33);
  Tensor x = rand_f32({300001}, gen, -1, 1);
  omp_set_num_threads(1);
  const Tensor s1 = sum(x);
  omp_set_num_threads(2);
  const Tensor s2 = sum(x);
  omp_set_num_threads(3);
  const Tensor s3 = sum(x);
  EXPECT_TRUE(same_values(s1, s2));
  EXPECT_TRUE(same_values(s1, s3));
}

TEST(Reduce, EdgeCasesAndErrors) {
  EXPECT_EQ(sum(Tensor::full({}, 2.5)).item(), 2.5);
  EXPECT_EQ(sum(Tensor::zeros({0, 3})).item(), 0.0);
  EXPECT_THROW(mean(Tensor::zeros({0})), ShapeError);
  EXPECT_THROW(sum(Tensor::zeros({3}, DType::i32)), ShapeError);
}

}  // namespace
