// matmul and linear: oneDNN float32 against the plain-loop oracle for every
// transpose combination and odd sizes; float64 gradient checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

#include "core/gemm.h"
#include "core/ops.h"
#include "core/tape.h"
#include "tests/support/case_names.h"
#include "tests/support/gradcheck.h"
#include "tests/support/op_testing.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

Shape operand(Shape batch, int64_t rows, int64_t cols, bool trans) {
  batch.push_back(trans ? cols : rows);
  batch.push_back(trans ? rows : cols);
  return batch;
}

struct MatmulCase {
  Shape batch;
  int64_t M, N, K;
  bool ta, tb, shared_b;
};

void PrintTo(const MatmulCase& c, std::ostream* os) {
  std::string batch;
  for (int64_t b : c.batch) batch += std::to_string(b) + "x";
  *os << "batch" << (batch.empty() ? "none_" : batch.substr(0, batch.size() - 1) + "_")
      << seqmix::testing::case_name({{"M", double(c.M)}, {"N", double(c.N)}, {"K", double(c.K)}, {"ta", double(c.ta)},
                             {"tb", double(c.tb)}, {"sharedB", double(c.shared_b)}});
}

class MatmulTest : public ::testing::TestWithParam<MatmulCase> {};

TEST_P(MatmulTest, OneDnnMatchesNaiveForwardAndBackward) {
  const MatmulCase c = GetParam();
  Generator gen(7);
  Tensor a = rand_f32(operand(c.batch, c.M, c.K, c.ta), gen, -1, 1, true);
  Tensor b = rand_f32(operand(c.shared_b ? Shape{} : c.batch, c.K, c.N, c.tb), gen, -1, 1, true);
  Tensor y = matmul(a, b, c.ta, c.tb);
  Shape expect = c.batch;
  expect.push_back(c.M);
  expect.push_back(c.N);
  ASSERT_EQ(y.shape(), expect);

  // Oracle: naive gemm per batch entry, and backward from the explicit formulas.
  const int64_t nb = shape_numel(c.batch);
  Tensor ref = Tensor::zeros(expect);
  for (int64_t i = 0; i < nb; ++i)
    gemm_naive(GemmShape{1, c.M, c.N, c.K, c.ta, c.tb}, a.f32() + i * c.M * c.K,
               b.f32() + (c.shared_b ? 0 : i * c.K * c.N), ref.f32() + i * c.M * c.N, false);
  EXPECT_TRUE(allclose(y, ref, 1e-5, 1e-5));

  Tensor gy = rand_f32(expect, gen);
  backward_weighted(y, gy);
  Tensor da_ref = Tensor::zeros(a.shape()), db_ref = Tensor::zeros(b.shape());
  for (int64_t i = 0; i < nb; ++i) {
    const float* A = a.f32() + i * c.M * c.K;
    const float* B = b.f32() + (c.shared_b ? 0 : i * c.K * c.N);
    const float* G = gy.f32() + i * c.M * c.N;
    float* dA = da_ref.f32() + i * c.M * c.K;
    float* dB = db_ref.f32() + (c.shared_b ? 0 : i * c.K * c.N);
    for (int64_t m = 0; m < c.M; ++m)
      for (int64_t n = 0; n < c.N; ++n)
        for (int64_t k = 0; k < c.K; ++k) {
          int64_t ia = c.ta ? k * c.M + m : m * c.K + k;
          int64_t ib = c.tb ? n * c.K + k : k * c.N + n;
          dA[ia] += G[m * c.N + n] * B[ib];
          dB[ib] += G[m * c.N + n] * A[ia];
        }
  }
  EXPECT_TRUE(allclose(a.grad(), da_ref, 1e-4, 1e-4));
  EXPECT_TRUE(allclose(b.grad(), db_ref, 1e-4, 1e-4));
}

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      cases.push_back({{}, 1, 1, 1, ta, tb, true});
      cases.push_back({{}, 7, 13, 5, ta, tb, true});
      cases.push_back({{3}, 17, 9, 33, ta, tb, false});
      cases.push_back({{2, 3}, 5, 19, 67, ta, tb, true});
      cases.push_back({{2}, 65, 31, 17, ta, tb, false});
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, MatmulTest, ::testing::ValuesIn(matmul_cases()),
                         ::testing::PrintToStringParamName());

TEST(Matmul, GradCheckFloat64AllTransposes) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Generator gen(3);
      Tensor a = rand_f64(ta ? Shape{2, 5, 3} : Shape{2, 3, 5}, gen);
      Tensor b = rand_f64(tb ? Shape{2, 4, 5} : Shape{2, 5, 4}, gen);
      EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b}))
          << "ta=" << ta << " tb=" << tb;
      Tensor b2 = rand_f64(tb ? Shape{4, 5} : Shape{5, 4}, gen);
      EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }, {a, b2}))
          << "shared b, ta=" << ta << " tb=" << tb;
    }
}

TEST(Linear, GradCheckFloat64) {
  Generator gen(5);
  Tensor x = rand_f64({3, 7, 5}, gen), w = rand_f64({9, 5}, gen), b = rand_f64({9}, gen);
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b}));
  EXPECT_TRUE(gradcheck([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w}));
}

TEST(Linear, MatchesNaiveFloat32) {
  Generator gen(9);
  Tensor x = rand_f32({4, 33, 17}, gen), w = rand_f32({23, 17}, gen), b = rand_f32({23}, gen);
  Tensor y = linear(x, w, b);
  Tensor ref = Tensor::empty({4, 33, 23});
  for (int64_t r = 0; r < 4 * 33; ++r)
    for (int64_t o = 0; o < 23; ++o) {
      double acc = b.f32()[o];
      for (int64_t i = 0; i < 17; ++i) acc += double(x.f32()[r * 17 + i]) * w.f32()[o * 17 + i];
      ref.f32()[r * 23 + o] = float(acc);
    }
  EXPECT_TRUE(allclose(y, ref, 1e-5, 1e-5));
}

TEST(Linear, RejectsMismatchedWeight) {
  Tensor x = Tensor::zeros({2, 3}), w = Tensor::zeros({4, 5});
  EXPECT_THROW(linear(x, w), ShapeError);
}

TEST(Tape, SkipsInputsThatNeedNoGradientAndClears) {
  Generator gen(1);
  Tensor x = rand_f64({3, 4}, gen, -1, 1, false);
  Tensor w = rand_f64({2, 4}, gen);
  Tensor y = linear(x, w);
  EXPECT_EQ(tape().size(), 1u);
  {
    NoGradGuard ng;
    Tensor z = linear(x, w);
    EXPECT_FALSE(z.requires_grad());
    EXPECT_EQ(tape().size(), 1u);
  }
  tape().clear();
  EXPECT_EQ(tape().size(), 0u);
  EXPECT_FALSE(x.grad().defined());
}

}  // namespace

namespace {

// Fused kernels call gemm from inside their own parallel loops: concurrent calls
// on one cached primitive must each compute their own product.
TEST(Gemm, ConcurrentCallsFromThreadsAreCorrect) {
  struct Case {
    int64_t M, N, K;
    bool ta, tb;
  };
  int wrong = 0;
  for (const Case c : {Case{64, 64, 4, false, true}, Case{64, 4, 64, true, false}, Case{64, 4, 64, false, false}}) {
#pragma omp parallel num_threads(2) reduction(+ : wrong)
    {
      const int t = omp_get_thread_num();
      std::vector<float> A(c.M * c.K), B(c.K * c.N), C(c.M * c.N), R(c.M * c.N);
      for (int it = 0; it < 1000; ++it) {
        for (size_t i = 0; i < A.size(); ++i) A[i] = std::sin(0.1f * i + t + it);
        for (size_t i = 0; i < B.size(); ++i) B[i] = std::cos(0.3f * i + 2 * t + it);
        std::fill(C.begin(), C.end(), 1.0f);
        R = C;
        const GemmShape s{1, c.M, c.N, c.K, c.ta, c.tb};
        gemm(s, A.data(), B.data(), C.data(), true);
        gemm_naive(s, A.data(), B.data(), R.data(), true);
        for (size_t i = 0; i < C.size(); ++i)
          if (std::fabs(C[i] - R[i]) > 1e-3f) {
            ++wrong;
            break;
          }
      }
    }
  }
  EXPECT_EQ(wrong, 0);
}

}  // namespace
