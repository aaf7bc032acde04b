// Shape ops (reshape, split, gather_rows):
// float64 gradient checks at awkward shapes, table-driven; float32 forward and
// backward against plain-loop twins (exact: these ops only move data, except
// gather_rows' repeated-index sums); buffer sharing; error messages.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <functional>
#include <string>

#include "core/ops.h"
#include "core/tape.h"
#include "tests/support/gradcheck.h"
#include "tests/support/op_testing.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

// ---- helpers independent of the ops under test ----

// The outputs of a multi-output op flattened into one float64 vector, with a
// node of its own, so that gradcheck sees every output of split.
Tensor pack(const std::vector<Tensor>& ys) {
  int64_t n = 0;
  for (const Tensor& y : ys) n += y.numel();
  Tensor out = Tensor::empty({n}, DType::f64);
  for (int64_t k = 0, off = 0; k < static_cast<int64_t>(ys.size()); off += ys[k].numel(), ++k)
    std::memcpy(out.f64() + off, ys[k].f64(), sizeof(double) * static_cast<size_t>(ys[k].numel()));
  bool any = false;
  for (const Tensor& y : ys) any = any || y.requires_grad();
  if (grad_enabled() && any)
    record({&out}, [ys](const std::vector<Tensor>& g) {
      int64_t off = 0;
      for (const Tensor& y : ys) {
        if (y.requires_grad()) {
          double* d = y.grad_buffer().f64();
          for (int64_t i = 0; i < y.numel(); ++i) d[i] += g[0].f64()[off + i];
        }
        off += y.numel();
      }
    });
  return out;
}

Tensor index_tensor(const std::vector<int32_t>& v) {
  return Tensor::from_vector({static_cast<int64_t>(v.size())}, v);
}

std::vector<int32_t> random_ids(int64_t n, int64_t V, Generator& gen) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<int32_t>(gen.randint(0, V));
  return v;
}



// ---- float64 gradient checks, one line per case ----

struct GradCase {
  std::string name;
  std::vector<Shape> shapes;  // float64 inputs, all requiring a gradient
  GradFn f;
};

std::ostream& operator<<(std::ostream& os, const GradCase& c) { return os << c.name; }

class ShapeOpGrad : public ::testing::TestWithParam<GradCase> {};

TEST_P(ShapeOpGrad, MatchesFiniteDifferences) {
  const GradCase& c = GetParam();
  Generator gen(11);
  std::vector<Tensor> inputs;
  for (const Shape& s : c.shapes) inputs.push_back(rand_f64(s, gen));
  EXPECT_TRUE(gradcheck(c.f, inputs));
}

GradFn split_all(int64_t axis, std::vector<int64_t> sizes) {
  return [=](const std::vector<Tensor>& in) { return pack(split(in[0], axis, sizes)); };
}
// Only output k is used: the others receive no gradient (undefined in the node).
GradFn split_one(int64_t axis, std::vector<int64_t> sizes, size_t k) {
  return [=](const std::vector<Tensor>& in) { return split(in[0], axis, sizes)[k]; };
}
GradFn gather(std::vector<int32_t> idx) {
  return [=](const std::vector<Tensor>& in) { return gather_rows(in[0], index_tensor(idx)); };
}

std::vector<GradCase> grad_cases() {
  Generator gen(99);
  return {
      {"reshape_1", {{1}}, [](const auto& in) { return reshape(in[0], {1, 1, -1}); }},
      {"reshape_infer_first", {{3, 5, 7}}, [](const auto& in) { return reshape(in[0], {-1, 7}); }},
      {"reshape_infer_middle", {{17, 4}}, [](const auto& in) { return reshape(in[0], {2, -1, 2}); }},
      {"reshape_twice", {{67}}, [](const auto& in) { return reshape(reshape(in[0], {67, 1}), {1, 67}); }},
      {"split_axis0_empty_piece", {{7, 5}}, split_all(0, {2, 0, 5})},
      {"split_axis1", {{3, 17, 4}}, split_all(1, {1, 16})},
      {"split_last", {{2, 3, 67}}, split_all(-1, {33, 34})},
      {"split_single", {{1}}, split_all(0, {1})},
      {"split_first_output_only", {{3, 17, 4}}, split_one(1, {5, 7, 5}, 0)},
      {"split_middle_output_only", {{3, 17, 4}}, split_one(-2, {5, 7, 5}, 1)},
      {"gather_repeats", {{5, 3}}, gather({0, 4, 4, 2, 0, 0, 1})},
      {"gather_1x1", {{1, 1}}, gather({0, 0})},
      {"gather_17x67", {{17, 67}}, gather(random_ids(30, 17, gen))},
      {"gather_none", {{3, 5}}, gather({})},
  };
}

INSTANTIATE_TEST_SUITE_P(Ops, ShapeOpGrad, ::testing::ValuesIn(grad_cases()),
                         [](const auto& info) { return info.param.name; });

// ---- float32 against plain-loop twins, forward and backward ----

// Naive band copy along an axis: out = x[..., start:start+len, ...].
Tensor slice_naive(const Tensor& x, int64_t ax, int64_t start, int64_t len) {
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < ax; ++i) outer *= x.shape()[i];
  for (int64_t i = ax + 1; i < x.ndim(); ++i) inner *= x.shape()[i];
  const int64_t A = x.shape()[ax];
  Shape s = x.shape();
  s[ax] = len;
  Tensor out = Tensor::empty(s);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t a = 0; a < len; ++a)
      for (int64_t i = 0; i < inner; ++i)
        out.f32()[(o * len + a) * inner + i] = x.f32()[(o * A + start + a) * inner + i];
  return out;
}

// Naive adjoint of slice_naive: zeros of `shape` with the band set to g.
Tensor unslice_naive(const Tensor& g, const Shape& shape, int64_t ax, int64_t start) {
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < ax; ++i) outer *= shape[i];
  for (int64_t i = ax + 1; i < static_cast<int64_t>(shape.size()); ++i) inner *= shape[i];
  const int64_t A = shape[ax], len = g.shape()[ax];
  Tensor out = Tensor::zeros(shape);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t a = 0; a < len; ++a)
      for (int64_t i = 0; i < inner; ++i)
        out.f32()[(o * A + start + a) * inner + i] = g.f32()[(o * len + a) * inner + i];
  return out;
}

struct BandCase {
  Shape shape;
  int64_t axis;
  std::vector<int64_t> sizes;
};

// Large enough cases to take the parallel path (> 32768 elements) and a
// split along axis 0 (outer = 1), where a band is cut into pieces.
std::vector<BandCase> band_cases() {
  return {{{7, 5}, 0, {2, 0, 5}},
          {{3, 17, 4}, 1, {1, 16}},
          {{2, 3, 67}, -1, {33, 34}},
          {{70001}, 0, {17, 40000, 29984}},
          {{4, 129, 67}, 1, {64, 1, 64}},
          {{33, 40, 31}, -1, {1, 29, 1}}};
}

TEST(Split, MatchesNaiveFloat32) {
  for (const BandCase& c : band_cases()) {
    const int64_t ax = c.axis < 0 ? c.axis + static_cast<int64_t>(c.shape.size()) : c.axis;
    Generator gen(5);
    Tensor x = rand_f32(c.shape, gen, -1, 1, true);

    // split: output k is the band at its offset; every output gets a gradient
    // except output 0 (undefined), whose band of dx must stay 0.
    std::vector<Tensor> parts = split(x, c.axis, c.sizes);
    ASSERT_EQ(parts.size(), c.sizes.size());
    std::vector<Tensor> gys(parts.size());
    Tensor dx_ref = Tensor::zeros(c.shape);
    int64_t off = 0;
    for (size_t k = 0; k < parts.size(); ++k) {
      EXPECT_TRUE(same_values(parts[k], slice_naive(x, ax, off, c.sizes[k]))) << shape_str(c.shape) << " k=" << k;
      if (k > 0) {
        gys[k] = rand_f32(parts[k].shape(), gen);
        Tensor band = unslice_naive(gys[k], c.shape, ax, off);
        for (int64_t i = 0; i < band.numel(); ++i) dx_ref.f32()[i] += band.f32()[i];
      }
      off += c.sizes[k];
    }
    backward_weighted(parts, gys);
    EXPECT_TRUE(same_values(x.grad(), dx_ref)) << "split " << shape_str(c.shape);

  }
}

TEST(GatherRows, MatchesNaiveFloat32) {
  for (auto [N, D, M] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 3}, {17, 67, 200}, {50, 130, 900}}) {
    Generator gen(8);
    Tensor x = rand_f32({N, D}, gen, -1, 1, true);
    std::vector<int32_t> idx = random_ids(M, N, gen);
    Tensor y = gather_rows(x, index_tensor(idx));
    Tensor ref = Tensor::empty({M, D});
    for (int64_t m = 0; m < M; ++m)
      for (int64_t d = 0; d < D; ++d) ref.f32()[m * D + d] = x.f32()[idx[m] * D + d];
    EXPECT_TRUE(same_values(y, ref));
    Tensor gy = rand_f32({M, D}, gen);
    backward_weighted(y, gy);
    // Scatter-add in ascending m: the kernel's documented order, so exact.
    Tensor dx_ref = Tensor::zeros({N, D});
    for (int64_t m = 0; m < M; ++m)
      for (int64_t d = 0; d < D; ++d) dx_ref.f32()[idx[m] * D + d] += gy.f32()[m * D + d];
    EXPECT_TRUE(same_values(x.grad(), dx_ref)) << "N=" << N << " D=" << D << " M=" << M;
  }
}

TEST(GatherRows, BackwardIsBitIdenticalForOneAndTwoThreads) {
  const int saved = omp_get_max_threads();
  Generator gen(4);
  Tensor x = rand_f32({40, 300}, gen, -1, 1, true);
  // Heavily repeated indices: many rows of dy land in few rows of dx.
  std::vector<int32_t> idx = random_ids(2000, 5, gen);
  Tensor gy = rand_f32({2000, 300}, gen);
  std::vector<std::vector<float>> grads;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    x.zero_grad();
    Tensor y = gather_rows(x, index_tensor(idx));
    backward_weighted(y, gy);
    grads.push_back(x.grad().to_f32_vector());
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(0, std::memcmp(grads[0].data(), grads[1].data(), grads[0].size() * sizeof(float)));
}

// ---- reshape semantics ----

TEST(Reshape, SharesTheBufferAndInfersOneDimension) {
  Generator gen(1);
  Tensor x = rand_f32({3, 4, 5}, gen);
  Tensor y = reshape(x, {4, -1});
  EXPECT_EQ(y.shape(), (Shape{4, 15}));
  EXPECT_TRUE(y.same_storage(x));
  y.f32()[7] = 42.0f;  // a view: writes show through
  EXPECT_EQ(x.f32()[7], 42.0f);
  EXPECT_EQ(reshape(x, {60}).shape(), (Shape{60}));
  EXPECT_EQ(reshape(Tensor::zeros({0, 3}), {3, 0}).shape(), (Shape{3, 0}));
}

TEST(Reshape, GradientFlowsBackInTheInputShape) {
  Tensor x = Tensor::from_vector({2, 3}, std::vector<float>{1, 2, 3, 4, 5, 6});
  x.set_requires_grad(true);
  Tensor y = reshape(x, {3, 2});
  Tensor gy = Tensor::from_vector({3, 2}, std::vector<float>{10, 20, 30, 40, 50, 60});
  backward_weighted(y, gy);
  EXPECT_EQ(x.grad().shape(), (Shape{2, 3}));
  EXPECT_EQ(x.grad().to_f32_vector(), (std::vector<float>{10, 20, 30, 40, 50, 60}));
}

TEST(ShapeOps, RecordNothingWithoutGrad) {
  tape().clear();
  Tensor x = Tensor::zeros({4, 6});
  reshape(x, {-1});
  split(x, 1, {2, 4});
  gather_rows(x, index_tensor({1, 1}));
  EXPECT_EQ(tape().size(), 0u);
  Tensor w = Tensor::zeros({4, 6}).set_requires_grad(true);
  {
    NoGradGuard ng;
    split(w, 0, {1, 3});
    EXPECT_EQ(tape().size(), 0u);
  }
  // split records one node for all its outputs.
  auto parts = split(w, 0, {1, 1, 2});
  EXPECT_EQ(tape().size(), 1u);
  for (const Tensor& p : parts) EXPECT_TRUE(p.requires_grad());
  tape().clear();
}

// ---- errors ----

TEST(ShapeOps, ErrorsNameTheOpAndShapes) {
  Tensor x = Tensor::zeros({3, 4});
  expect_shape_error([&] { reshape(x, {5, -1}); }, {"reshape", "(3, 4)", "(5, -1)"});
  expect_shape_error([&] { reshape(x, {-1, -1}); }, {"reshape", "more than one -1"});
  expect_shape_error([&] { reshape(x, {5, 2}); }, {"reshape", "(3, 4)", "(5, 2)"});
  expect_shape_error([&] { reshape(x, {-2, 6}); }, {"reshape", "negative"});
  expect_shape_error([&] { split(x, 1, {1, 2}); }, {"split", "(1, 2)", "add up to 3", "(3, 4)", "size 4"});
  expect_shape_error([&] { split(x, 2, {4}); }, {"split", "axis 2", "(3, 4)"});
  expect_shape_error([&] { split(x, 0, {4, -1}); }, {"split", "negative"});
  expect_shape_error([&] { gather_rows(x, index_tensor({0, 3, 1})); },
                     {"gather_rows", "index 3", "position 1", "(3, 4)"});
  expect_shape_error([&] { gather_rows(x, index_tensor({-1})); }, {"gather_rows", "index -1", "position 0"});
  expect_shape_error([&] { gather_rows(Tensor::zeros({12}), index_tensor({0})); }, {"gather_rows", "(12)", "(N, D)"});
  expect_shape_error([&] { gather_rows(x, Tensor::zeros({2})); }, {"gather_rows", "int32"});
}

}  // namespace
