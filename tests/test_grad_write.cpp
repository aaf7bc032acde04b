// Gradient buffers written by their first contribution (GradCell::buffer_for_write):
// the first backward kernel to reach a gradient stores into an uninitialised
// buffer, later ones add. These tests make every op that does so meet both cases:
// an input used by two ops (the second contribution must add to the first), and a
// second backward without zero_grad (gradient accumulation across micro-batches
// must double the gradient).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"
#include "tests/support/gradcheck.h"
#include "tests/support/op_testing.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

struct Case {
  const char* name;
  // Uses in[0] twice (through the op under test and a second path).
  std::function<Tensor(const std::vector<Tensor>&)> f;
  std::vector<Shape> shapes;
};
// ctest lists a case by its printed parameter: the name, not the struct's bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> cases() {
  return {
      {"linear", [](const std::vector<Tensor>& in) { return add(linear(in[0], in[1], in[2]), gelu(in[0])); },
       {{5, 4}, {4, 4}, {4}}},
      {"linear_shared_weight",
       [](const std::vector<Tensor>& in) { return add(linear(in[0], in[1], in[2]), linear(in[0], in[1], in[2])); },
       {{5, 4}, {4, 4}, {4}}},
      {"matmul_shared_b",
       [](const std::vector<Tensor>& in) { return add(matmul(in[0], in[1]), matmul(in[0], in[1], false, false)); },
       {{2, 3, 4}, {4, 5}}},
      {"matmul_trans_batched",
       [](const std::vector<Tensor>& in) { return add(matmul(in[0], in[1], true, true), scale(in[0], 2)); },
       {{2, 3, 3}, {2, 3, 3}}},
      {"gelu_twice", [](const std::vector<Tensor>& in) { return add(gelu(in[0]), gelu(in[0])); }, {{3, 7}}},
      {"add_self", [](const std::vector<Tensor>& in) { return add(in[0], in[0]); }, {{3, 7}}},
      {"add_broadcast", [](const std::vector<Tensor>& in) { return add(add(in[0], in[1]), sub(in[0], in[1])); },
       {{3, 5}, {5}}},
      {"sub_broadcast_first", [](const std::vector<Tensor>& in) { return sub(in[1], in[0]); }, {{3, 5}, {5}}},
  };
}

class GradWrite : public ::testing::TestWithParam<Case> {};

TEST_P(GradWrite, Float64FiniteDifferences) {
  const Case& c = GetParam();
  Generator gen(5);
  std::vector<Tensor> in;
  for (const Shape& s : c.shapes) in.push_back(rand_f64(s, gen));
  EXPECT_TRUE(gradcheck(c.f, in));
}

TEST_P(GradWrite, SecondBackwardWithoutZeroGradDoubles) {
  const Case& c = GetParam();
  Generator gen(6);
  std::vector<Tensor> in;
  for (const Shape& s : c.shapes) in.push_back(rand_f32(s, gen, -1, 1, true));
  Tensor y = c.f(in);
  Tensor gy = rand_f32(y.shape(), gen);
  backward_weighted(y, gy);
  std::vector<Tensor> first;
  for (const Tensor& t : in) first.push_back(t.grad().clone());
  backward_weighted(c.f(in), gy);
  for (size_t k = 0; k < in.size(); ++k)
    for (int64_t i = 0; i < first[k].numel(); ++i)
      // Not bit-exact: (a + b) + a + b is summed in another order than 2 (a + b).
      ASSERT_NEAR(in[k].grad().f32()[i], 2 * first[k].f32()[i], 1e-6 * (1 + std::fabs(first[k].f32()[i])))
          << c.name << " input " << k << " element " << i;
}

INSTANTIATE_TEST_SUITE_P(Ops, GradWrite, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
