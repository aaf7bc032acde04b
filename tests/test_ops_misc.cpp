// embedding, cross_entropy, dropout: float64 gradient checks at
// awkward shapes (table-driven), float32 forward and backward against
// plain-loop twins, thread-count independence, and error messages.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"
#include "tests/support/gradcheck.h"
#include "tests/support/op_testing.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

// ---- helpers independent of the ops under test ----

Tensor ids_tensor(const Shape& shape, const std::vector<int32_t>& v) { return Tensor::from_vector(shape, v); }

Tensor random_ids(const Shape& shape, int64_t V, Generator& gen) {
  std::vector<int32_t> v(static_cast<size_t>(shape_numel(shape)));
  for (auto& x : v) x = static_cast<int32_t>(gen.randint(0, V));
  return Tensor::from_vector(shape, v);
}



// ---- float64 gradient checks, one line per case ----

struct GradCase {
  std::string name;
  std::vector<Shape> shapes;  // float64 inputs requiring a gradient
  GradFn f;
  double lo = -1, hi = 1;     // input range
};
// ctest lists a case by its printed parameter: the name, not the struct's bytes.
void PrintTo(const GradCase& c, std::ostream* os) { *os << c.name; }

class MiscOpGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(MiscOpGrad, MatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  Generator gen(21);
  std::vector<Tensor> inputs;
  for (const Shape& s : c.shapes) inputs.push_back(rand_f64(s, gen, c.lo, c.hi));
  EXPECT_TRUE(gradcheck(c.f, inputs));
}

GradFn embed(Tensor ids) {
  return [ids](const std::vector<Tensor>& in) { return embedding(ids, in[0]); };
}
GradFn xent(Tensor labels) {
  return [labels](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels); };
}
// A fresh generator per call: every evaluation of the finite differences sees
// the same mask.
GradFn drop(double p) {
  return [p](const std::vector<Tensor>& in) {
    Generator g(77, 5);
    return dropout(in[0], p, true, g);
  };
}
std::vector<GradCase> grad_cases() {
  Generator gen(5);
  const int32_t I = kIgnoreLabel;
  std::vector<GradCase> cases = {
      {"embedding_1x1", {{1, 1}}, embed(ids_tensor({1}, {0}))},
      {"embedding_repeats", {{7, 3}}, embed(ids_tensor({3, 5}, {0, 6, 6, 2, 0, 1, 1, 1, 6, 3, 0, 0, 5, 4, 6}))},
      {"embedding_17x67", {{17, 67}}, embed(random_ids({2, 1, 7}, 17, gen))},
      {"embedding_scalar_id", {{5, 2}}, embed(ids_tensor({}, {3}))},
      {"xent_single_class", {{3, 1}}, xent(ids_tensor({3}, {0, 0, I}))},
      {"xent_some_ignored", {{5, 7}}, xent(ids_tensor({5}, {3, I, 0, 6, I}))},
      {"xent_batched", {{2, 3, 17}}, xent(random_ids({2, 3}, 17, gen))},
      {"xent_1d", {{67}}, xent(ids_tensor({}, {66}))},
      {"xent_all_ignored", {{4, 5}}, xent(ids_tensor({4}, {I, I, I, I}))},
      {"xent_large_logits", {{3, 17}}, xent(ids_tensor({3}, {16, 0, 8})), -30, 30},
      {"dropout_p0.5", {{3, 17}}, drop(0.5)},
      {"dropout_p0.1_odd", {{67}}, drop(0.1)},
      {"dropout_one", {{1}}, drop(0.3)},
  };
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Ops, MiscOpGrad, ::testing::ValuesIn(grad_cases()), [](const auto& info) {
  std::string s = info.param.name;
  for (char& ch : s)
    if (ch == '.') ch = '_';
  return s;
});

// ---- embedding ----

TEST(Embedding, MatchesNaiveFloat32) {
  for (auto [V, D, ids_shape] : {std::tuple<int64_t, int64_t, Shape>{1, 1, {3}}, {17, 67, {3, 17}},
                                 {50, 130, {4, 300}}}) {
    Generator gen(2);
    Tensor w = rand_f32({V, D}, gen, -1, 1, true);
    Tensor ids = random_ids(ids_shape, V, gen);
    Tensor y = embedding(ids, w);
    Shape expect = ids_shape;
    expect.push_back(D);
    ASSERT_EQ(y.shape(), expect);
    const int64_t N = ids.numel();
    Tensor ref = Tensor::empty(expect);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t d = 0; d < D; ++d) ref.f32()[n * D + d] = w.f32()[ids.i32()[n] * D + d];
    EXPECT_TRUE(same_values(y, ref));
    Tensor gy = rand_f32(expect, gen);
    backward_weighted(y, gy);
    // The kernel adds the positions of one id in ascending order, as here: exact.
    Tensor dw = Tensor::zeros({V, D});
    for (int64_t n = 0; n < N; ++n)
      for (int64_t d = 0; d < D; ++d) dw.f32()[ids.i32()[n] * D + d] += gy.f32()[n * D + d];
    EXPECT_TRUE(same_values(w.grad(), dw)) << "V=" << V << " D=" << D;
  }
}

TEST(Embedding, BackwardIsBitIdenticalForOneAndTwoThreads) {
  Generator gen(6);
  Tensor w = rand_f32({9, 257}, gen, -1, 1, true);
  Tensor ids = random_ids({8, 250}, 9, gen);
  Tensor gy = rand_f32({8, 250, 257}, gen);
  std::vector<Tensor> grads;
  for (int t : {1, 2})
    {
      ThreadCount threads(t);
      w.zero_grad();
      backward_weighted(embedding(ids, w), gy);
      grads.push_back(w.grad());
    }
  EXPECT_TRUE(same_values(grads[0], grads[1]));
}

TEST(Embedding, RejectsOutOfRangeIds) {
  Tensor w = Tensor::zeros({7, 3});
  expect_shape_error([&] { embedding(ids_tensor({2, 3}, {0, 1, 2, 3, 9, 5}), w); },
                     {"embedding", "id 9", "position 4", "(1, 1)", "V = 7"});
  expect_shape_error([&] { embedding(ids_tensor({2}, {-1, 0}), w); }, {"embedding", "id -1", "position 0"});
  expect_shape_error([&] { embedding(Tensor::zeros({2}), w); }, {"embedding", "int32", "float32"});
  expect_shape_error([&] { embedding(ids_tensor({1}, {0}), Tensor::zeros({7})); }, {"embedding", "(7)", "(V, D)"});
}

// ---- cross_entropy ----

// Naive oracle in double: log-softmax per row, mean NLL over non-ignored rows,
// and the gradient (softmax - onehot) / count.
std::pair<double, Tensor> cross_entropy_naive(const Tensor& logits, const Tensor& labels) {
  const int64_t V = logits.size(-1), R = labels.numel();
  Tensor grad = Tensor::zeros(logits.shape());
  double total = 0;
  int64_t count = 0;
  for (int64_t r = 0; r < R; ++r) count += labels.i32()[r] != kIgnoreLabel;
  for (int64_t r = 0; r < R; ++r) {
    const int32_t y = labels.i32()[r];
    if (y == kIgnoreLabel) continue;
    double m = -INFINITY;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, logits.item(r * V + j));
    double s = 0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(logits.item(r * V + j) - m);
    const double lse = m + std::log(s);
    total += lse - logits.item(r * V + y);
    for (int64_t j = 0; j < V; ++j)
      grad.f32()[r * V + j] = static_cast<float>((std::exp(logits.item(r * V + j) - lse) - (j == y)) / count);
  }
  return {count ? total / count : 0.0, grad};
}

TEST(CrossEntropy, MatchesNaiveFloat32) {
  for (auto [rows_shape, V, lim] : {std::tuple<Shape, int64_t, double>{{1}, 1, 1.0}, {{3, 17}, 67, 5.0},
                                    {{4, 33}, 1000, 20.0}, {{2, 5}, 7, 1.0}, {{3, 2}, 50, 100.0}}) {
    Generator gen(4);
    Shape ls = rows_shape;
    ls.push_back(V);
    Tensor logits = rand_f32(ls, gen, -lim, lim, true);
    Tensor labels = random_ids(rows_shape, V, gen);
    for (int64_t r = 0; r < labels.numel(); r += 3) labels.i32()[r] = kIgnoreLabel;  // every third ignored
    Tensor loss = cross_entropy(logits, labels);
    ASSERT_EQ(loss.shape(), Shape{});
    auto [ref_loss, ref_grad] = cross_entropy_naive(logits, labels);
    EXPECT_NEAR(loss.item(), ref_loss, 1e-5 * (1 + std::fabs(ref_loss)));
    backward(loss);
    EXPECT_TRUE(allclose(logits.grad(), ref_grad, 1e-4, 1e-6)) << "V=" << V;
  }
}

// The logits' gradient is stored by the first contribution and added by later
// ones: two losses on the same logits give the sum of both naive gradients.
TEST(CrossEntropy, TwoLossesOnTheSameLogitsAddTheirGradients) {
  Generator gen(9);
  Tensor logits = rand_f32({6, 37}, gen, -3, 3, true);
  Tensor first = random_ids({6}, 37, gen), second = random_ids({6}, 37, gen);
  second.i32()[2] = kIgnoreLabel;
  backward(add(cross_entropy(logits, first), cross_entropy(logits, second)));
  const Tensor g1 = cross_entropy_naive(logits, first).second, g2 = cross_entropy_naive(logits, second).second;
  Tensor expected = Tensor::empty({6, 37});
  for (int64_t i = 0; i < expected.numel(); ++i) expected.f32()[i] = g1.f32()[i] + g2.f32()[i];
  EXPECT_TRUE(allclose(logits.grad(), expected, 1e-4, 1e-6));
}

TEST(CrossEntropy, NanLogitGivesNanLoss) {
  // The float32 path uses its own exp (core/ops_loss.cpp): it must not turn a
  // NaN into a finite loss.
  for (int64_t bad : {0, 5, 8}) {
    Tensor logits = Tensor::zeros({2, 9});
    logits.f32()[bad] = NAN;
    EXPECT_TRUE(std::isnan(cross_entropy(logits, ids_tensor({2}, {3, 4})).item())) << "NaN at " << bad;
  }
  Tensor logits = Tensor::zeros({1, 9});
  logits.f32()[2] = -INFINITY;  // a masked class: finite loss
  EXPECT_NEAR(cross_entropy(logits, ids_tensor({1}, {3})).item(), std::log(8.0), 1e-6);
}

// ---- count_correct ----

// The naive twin: the scalar scan the model used before count_correct.
template <class T>
int64_t count_correct_naive(const T* x, const int32_t* y, int64_t R, int64_t V) {
  int64_t correct = 0;
  for (int64_t r = 0; r < R; ++r) {
    if (y[r] == kIgnoreLabel) continue;
    const T* row = x + r * V;
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v)
      if (row[v] > row[best]) best = v;
    correct += best == y[r];
  }
  return correct;
}

// Ties are the hard case (the first largest logit wins), so the logits are small
// integers; some rows hold NaNs (in first place too), signed zeros or -inf.
TEST(CountCorrect, MatchesTheScalarScanWithTiesAndNaNs) {
  for (int64_t V : {1, 2, 7, 8, 9, 67, 1000}) {
    Generator gen(static_cast<uint64_t>(V));
    const int64_t R = 301;
    Tensor x32 = Tensor::empty({R, V});
    Tensor x64 = Tensor::empty({R, V}, DType::f64);
    std::vector<int32_t> y(static_cast<size_t>(R));
    for (int64_t r = 0; r < R; ++r) {
      const int64_t levels = 1 + r % 4;  // 1 level: every logit ties
      for (int64_t j = 0; j < V; ++j) {
        double v = static_cast<double>(gen.randint(0, levels));
        if (r % 5 == 1 && gen.randint(0, 4) == 0) v = NAN;
        if (r % 5 == 2 && j == 0) v = NAN;
        if (r % 5 == 3 && v == 0) v = gen.randint(0, 2) ? -0.0 : -INFINITY;
        x32.f32()[r * V + j] = static_cast<float>(v);
        x64.data<double>()[r * V + j] = v;
      }
      // Labels at the first maximum, at the last index that ties with it (correct only
      // when the maximum is unique), or anywhere, so that both answers occur often.
      const float* row = x32.f32() + r * V;
      int64_t first = 0, last = 0;
      for (int64_t j = 1; j < V; ++j) {
        if (row[j] > row[first]) first = last = j;
        else if (row[j] == row[first]) last = j;
      }
      const int64_t kind = r % 3;
      y[static_cast<size_t>(r)] = r % 7 == 6 ? kIgnoreLabel
                                  : kind == 0 ? static_cast<int32_t>(first)
                                  : kind == 1 ? static_cast<int32_t>(last)
                                              : static_cast<int32_t>(gen.randint(0, V));
    }
    Tensor labels = Tensor::from_vector({R}, y);
    const int64_t expected32 = count_correct_naive(x32.f32(), y.data(), R, V);
    EXPECT_EQ(count_correct(x32, labels), expected32) << "V=" << V;
    EXPECT_EQ(count_correct(x64, labels), count_correct_naive(x64.data<double>(), y.data(), R, V)) << "V=" << V;
    if (V > 1) {  // the test exercises both outcomes
      EXPECT_GT(expected32, 0) << "V=" << V;
      EXPECT_LT(expected32, R) << "V=" << V;
    }
  }
}

TEST(CountCorrect, RefusesLabelsOutsideTheVocabulary) {
  expect_shape_error([&] { count_correct(Tensor::zeros({2, 5}), ids_tensor({2}, {1, 5})); },
                     {"count_correct", "label 5", "position 1"});
  expect_shape_error([&] { count_correct(Tensor::zeros({2, 5}), ids_tensor({3}, {1, 2, 3})); },
                     {"count_correct", "(3)", "(2)"});
}

TEST(CrossEntropy, AllIgnoredGivesZeroLossAndGradient) {
  Generator gen(1);
  Tensor logits = rand_f32({3, 5}, gen, -1, 1, true);
  Tensor labels = ids_tensor({3}, {kIgnoreLabel, kIgnoreLabel, kIgnoreLabel});
  Tensor loss = cross_entropy(logits, labels);
  EXPECT_EQ(loss.item(), 0.0);
  backward(loss);
  ASSERT_TRUE(logits.grad().defined());
  for (float g : logits.grad().to_f32_vector()) EXPECT_EQ(g, 0.0f);
}

TEST(CrossEntropy, LossAndGradientBitIdenticalForOneAndTwoThreads) {
  Generator gen(3);
  Tensor logits = rand_f32({37, 41, 53}, gen, -4, 4, true);
  Tensor labels = random_ids({37, 41}, 53, gen);
  std::vector<Tensor> losses, grads;
  for (int t : {1, 2})
    {
      ThreadCount threads(t);
      logits.zero_grad();
      Tensor loss = cross_entropy(logits, labels);
      losses.push_back(loss.clone());
      backward(loss);
      grads.push_back(logits.grad());
    }
  EXPECT_TRUE(same_values(losses[0], losses[1]));
  EXPECT_TRUE(same_values(grads[0], grads[1]));
}

TEST(CrossEntropy, RejectsBadLabelsAndShapes) {
  Tensor logits = Tensor::zeros({2, 3, 7});
  expect_shape_error([&] { cross_entropy(logits, ids_tensor({2, 3}, {0, 1, kIgnoreLabel, 7, 2, 2})); },
                     {"cross_entropy", "label 7", "position 3", "[0, 7)"});
  expect_shape_error([&] { cross_entropy(logits, ids_tensor({2, 3}, {0, 1, 2, 3, -1, 2})); },
                     {"cross_entropy", "label -1", "position 4"});
  expect_shape_error([&] { cross_entropy(logits, ids_tensor({6}, {0, 1, 2, 3, 4, 5})); },
                     {"cross_entropy", "(6)", "(2, 3)", "(2, 3, 7)"});
  expect_shape_error([&] { cross_entropy(logits, Tensor::zeros({2, 3})); }, {"cross_entropy", "int32"});
}

// ---- dropout ----

TEST(Dropout, PreservesTheMeanAndDropsAFractionP) {
  const int64_t n = 1 << 20;
  const double p = 0.3;
  Tensor x = Tensor::full({n}, 1.0);
  Generator gen(2024);
  Tensor y = dropout(x, p, true, gen);
  double sum = 0;
  int64_t dropped = 0;
  for (float v : y.to_f32_vector()) {
    sum += v;
    dropped += v == 0.0f;
  }
  // std of the mean: sqrt(p / (1 - p) / n) = 6.4e-4; of the dropped fraction 4.5e-4.
  EXPECT_NEAR(sum / n, 1.0, 4e-3);
  EXPECT_NEAR(static_cast<double>(dropped) / n, p, 3e-3);
  EXPECT_EQ(gen.counter(), static_cast<uint64_t>(n));  // one counter per element
}

TEST(Dropout, MaskIsTheSameForOneAndTwoThreads) {
  Generator gen(0);
  Tensor x = rand_f32({3, 1000, 67}, gen, 0.5, 1.5);  // no zeros, so a zero output means dropped
  std::vector<Tensor> outs;
  for (int t : {1, 2})
    {
      ThreadCount threads(t);
      Generator g(99, 123);
      outs.push_back(dropout(x, 0.4, true, g));
    }
  EXPECT_TRUE(same_values(outs[0], outs[1]));
}

TEST(Dropout, MatchesNaiveMaskForwardAndBackwardFloat32) {
  Generator gen(8);
  const double p = 0.25;
  Tensor x = rand_f32({5, 67, 101}, gen, -1, 1, true);
  Generator dg(31337, 1000);
  Tensor y = dropout(x, p, true, dg);
  EXPECT_EQ(dg.counter(), 1000u + static_cast<uint64_t>(x.numel()));
  Tensor gy = rand_f32(x.shape(), gen);
  backward_weighted(y, gy);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  Tensor y_ref = Tensor::empty(x.shape()), dx_ref = Tensor::empty(x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const bool keep = u64_to_unit(hash_counter(31337, 1000 + static_cast<uint64_t>(i))) >= p;
    y_ref.f32()[i] = keep ? x.f32()[i] * scale : 0.0f;
    dx_ref.f32()[i] = keep ? gy.f32()[i] * scale : 0.0f;
  }
  EXPECT_TRUE(same_values(y, y_ref));
  EXPECT_TRUE(same_values(x.grad(), dx_ref));
  // The next call draws fresh counters: a different mask.
  Tensor y2 = dropout(x, p, true, dg);
  EXPECT_FALSE(same_values(y, y2));
}

TEST(Dropout, IdentityWhenOffOrPZero) {
  tape().clear();
  Generator init(1);
  Tensor x = rand_f32({4, 5}, init, -1, 1, true);
  Generator gen(1);
  Tensor a = dropout(x, 0.0, true, gen);
  Tensor b = dropout(x, 0.5, false, gen);
  EXPECT_TRUE(a.same_storage(x));
  EXPECT_EQ(a.impl(), x.impl());  // x itself, not a copy or a view
  EXPECT_EQ(b.impl(), x.impl());
  EXPECT_EQ(tape().size(), 0u);
  EXPECT_EQ(gen.counter(), 0u);  // no draws
}

TEST(Dropout, RejectsPOutsideZeroOne) {
  Generator gen(1);
  Tensor x = Tensor::zeros({3});
  expect_shape_error([&] { dropout(x, 1.0, true, gen); }, {"dropout", "p = 1", "0 <= p < 1"});
  expect_shape_error([&] { dropout(x, -0.1, true, gen); }, {"dropout", "p = -0.1"});
  expect_shape_error([&] { dropout(x, NAN, false, gen); }, {"dropout"});
}

}  // namespace
