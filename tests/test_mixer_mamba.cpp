// The mamba mixer (docs/mixers.md#mamba), what is specific to it: the fused ops (conv + silu,
// dt_proj on columns, the selective scan) and the layer's own rules.
//
// - float64 finite-difference gradient checks of each fused op (table-driven over
//   awkward shapes and chunk lengths);
// - the float32 fused kernels against the plain-loop double twin
//   (tests/support/reference_mamba.*) forward and backward at L = 300, with channel
//   counts that leave partial sub-blocks and several channel groups; the chunk length
//   and the thread count (three channel groups on 1, 2 and 3 threads) change nothing;
// - the exp/softplus approximations, dt_rank "auto", the state tensors, the
//   initialisation and the option rules.
// The layer's gradient check, twin, recurrent form, causality and determinism are the
// shared suite's (tests/test_mixer_suite.cpp).
//
// Tolerance rule for float32 against the double twin: element i passes when
//   |f32_i - ref_i| <= rtol * (|ref_i| + rms(ref))
// i.e. relative to the element, but never tighter than relative to the tensor's
// typical magnitude (an element that is a small difference of large terms can only
// be as accurate as those terms). rtol = 1e-5 throughout; the worst element measured
// was at 0.2 of it (in_proj.weight's gradient, a sum over 600 rows), most below 0.1.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/mamba.h"
#include "layers/mamba_kernel.h"
#include "layers/mamba_math.h"
#include "tests/support/case_names.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_mamba.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

Tensor from_vec(const Vec& v, const Shape& shape, DType dt, bool requires_grad = false) {
  Tensor t = Tensor::from_vector(shape, v);
  if (dt != DType::f64) t = t.to(dt);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

Vec rand_vec(int64_t n, Generator& gen, double lo, double hi) {
  Vec v(static_cast<size_t>(n));
  for (double& x : v) x = gen.uniform(lo, hi);
  return v;
}

::testing::AssertionResult close_to_ref(const Tensor& got, const Vec& ref, double rtol, const char* what) {
  if (!got.defined()) return ::testing::AssertionFailure() << what << ": no gradient";
  if (got.numel() != static_cast<int64_t>(ref.size()))
    return ::testing::AssertionFailure() << what << ": " << got.numel() << " elements, reference " << ref.size();
  double ss = 0;
  for (double r : ref) ss += r * r;
  const double rms = std::sqrt(ss / std::max<size_t>(ref.size(), 1));
  double worst = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double err = std::fabs(got.item(i) - ref[i]) / (rtol * (std::fabs(ref[i]) + rms) + 1e-300);
    if (!(err <= worst)) worst = std::isnan(err) ? INFINITY : err, wi = i;
  }
  if (worst > 1.0)
    return ::testing::AssertionFailure() << what << ": element " << wi << " is " << got.item(wi) << ", reference "
                                         << ref[wi] << " (" << worst << " x tolerance, rms " << rms << ")";
  return ::testing::AssertionSuccess();
}

// Columns [col, col+width) of a (rows, ld) vector.
Vec columns_of(const Vec& src, int64_t rows, int64_t ld, int64_t col, int64_t width) {
  Vec out(static_cast<size_t>(rows * width));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < width; ++k) out[r * width + k] = src[r * ld + col + k];
  return out;
}

// ---------------------------------------------------------------------------

// The exps are defined for arguments <= 0 (all the kernels pass); results below
// 2^-125 (exp(-86.99)) flush to +0.
TEST(MambaMath, Float32ExpsWithinTwoUlpAndFlushedBelowRange) {
  double worst_e = 0, worst_2 = 0;
  for (int64_t i = 0; i <= 400000; ++i) {
    const float x = static_cast<float>(-86.9 * static_cast<double>(i) / 400000.0);
    const double ref = std::exp(static_cast<double>(x));
    worst_e = std::max(worst_e, std::fabs(mamba_math::exp_neg_f32(x) - ref) / ref);
    const float t = static_cast<float>(-125.0 * static_cast<double>(i) / 400000.0);
    const double ref2 = std::exp2(static_cast<double>(t));
    worst_2 = std::max(worst_2, std::fabs(mamba_math::exp2_neg_f32(t) - ref2) / ref2);
  }
  EXPECT_LT(worst_e, 2.0 * 0x1.0p-23) << "exp max relative error";
  EXPECT_LT(worst_2, 2.0 * 0x1.0p-23) << "exp2 max relative error";
  EXPECT_EQ(mamba_math::exp_neg_f32(0.0f), 1.0f);
  EXPECT_EQ(mamba_math::exp_neg_f32(-0.0f), 1.0f);
  EXPECT_EQ(mamba_math::exp2_neg_f32(0.0f), 1.0f);
  EXPECT_EQ(mamba_math::exp2_neg_f32(-3.0f), 0.125f);
  // Far below the range: +0, never a denormal, inf or NaN.
  for (float x : {-87.5f, -100.0f, -1e10f, -1e30f, -INFINITY}) {
    EXPECT_EQ(mamba_math::exp_neg_f32(x), 0.0f) << x;
    EXPECT_EQ(mamba_math::exp2_neg_f32(x * 1.5f), 0.0f) << x;
  }
}

// softplus, sigmoid and silu in float32 against libm in double: within 3 ulp
// relative everywhere, including far into the tails (softplus(-60) = 8.8e-27) and
// across softplus's threshold at 20.
TEST(MambaMath, Float32SoftplusSigmoidSiluAccurate) {
  double w_sp = 0, w_sg = 0, w_si = 0, w_spg = 0;
  for (int64_t i = 0; i <= 200000; ++i) {
    const float x = static_cast<float>(-60.0 + 120.0 * static_cast<double>(i) / 200000.0);
    const double xd = x;
    const double sp = xd > 20 ? xd : std::log1p(std::exp(xd)), sg = 1.0 / (1.0 + std::exp(-xd));
    w_sp = std::max(w_sp, std::fabs(mamba_math::softplus(x) - sp) / sp);
    w_sg = std::max(w_sg, std::fabs(mamba_math::sigmoid(x) - sg) / sg);
    w_spg = std::max(w_spg, std::fabs(mamba_math::softplus_grad(x) - (xd > 20 ? 1.0 : sg)) / sg);
    if (x != 0) w_si = std::max(w_si, std::fabs(mamba_math::silu(x) - xd * sg) / std::fabs(xd * sg));
  }
  EXPECT_LT(w_sp, 3 * 0x1.0p-23);
  EXPECT_LT(w_sg, 3 * 0x1.0p-23);
  EXPECT_LT(w_spg, 3 * 0x1.0p-23);
  EXPECT_LT(w_si, 3 * 0x1.0p-23);
  EXPECT_EQ(mamba_math::softplus(20.5f), 20.5f);
  EXPECT_EQ(mamba_math::softplus(-0.0f), std::log1p(1.0f));
}

// ---- selective scan -----------------------------------------------------------

struct ScanCase {
  int64_t B, L, E, N, chunk;
};
void PrintTo(const ScanCase& c, std::ostream* os) {
  *os << seqmix::testing::case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"E", double(c.E)},
                                     {"N", double(c.N)}, {"chunk", double(c.chunk)}});
}

// Operands laid out as in the layer, with extra columns around the parts read:
// bc (B, L, 2N+3): Bt at column 1, Ct at column N+3; z inside (B, L, E+2) at column 2.
struct ScanOperands {
  RefScanInputs ref;
  Vec bc, zs;
  int64_t ldbc, bcol, ccol, ldz, zcol;
};

ScanOperands make_scan_operands(const ScanCase& c, uint64_t seed) {
  Generator gen(seed);
  ScanOperands o;
  RefScanInputs& r = o.ref;
  r.B = c.B, r.L = c.L, r.E = c.E, r.N = c.N;
  const int64_t rows = c.B * c.L;
  r.u = rand_vec(rows * c.E, gen, -1, 1);
  r.dr = rand_vec(rows * c.E, gen, -3, 1);  // softplus in (0.05, 1.3), far from the threshold 20
  r.A_log = rand_vec(c.E * c.N, gen, -1, 1.5);
  r.D = rand_vec(c.E, gen, -1, 1);
  o.ldbc = 2 * c.N + 3, o.bcol = 1, o.ccol = c.N + 3;
  o.bc = rand_vec(rows * o.ldbc, gen, -1, 1);
  o.ldz = c.E + 2, o.zcol = 2;
  o.zs = rand_vec(rows * o.ldz, gen, -2, 2);
  r.Bt = columns_of(o.bc, rows, o.ldbc, o.bcol, c.N);
  r.Ct = columns_of(o.bc, rows, o.ldbc, o.ccol, c.N);
  r.z = columns_of(o.zs, rows, o.ldz, o.zcol, c.E);
  return o;
}

struct ScanTensors {
  Tensor u, dr, A_log, bc, D, zs;
};

ScanTensors scan_tensors(const ScanOperands& o, DType dt, bool grad) {
  const RefScanInputs& r = o.ref;
  return {from_vec(r.u, {r.B, r.L, r.E}, dt, grad),      from_vec(r.dr, {r.B, r.L, r.E}, dt, grad),
          from_vec(r.A_log, {r.E, r.N}, dt, grad),       from_vec(o.bc, {r.B, r.L, o.ldbc}, dt, grad),
          from_vec(r.D, {r.E}, dt, grad),                from_vec(o.zs, {r.B, r.L, o.ldz}, dt, grad)};
}

Tensor run_scan(const std::vector<Tensor>& in, const ScanOperands& o, int64_t chunk) {
  return selective_scan(in[0], in[1], in[2], {in[3], o.bcol}, {in[3], o.ccol}, in[4], {in[5], o.zcol}, chunk);
}

class ScanGradCheck : public ::testing::TestWithParam<ScanCase> {};

TEST_P(ScanGradCheck, Float64FiniteDifferences) {
  const ScanCase c = GetParam();
  const ScanOperands o = make_scan_operands(c, 11);
  const ScanTensors t = scan_tensors(o, DType::f64, true);
  EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return run_scan(in, o, c.chunk); },
                        {t.u, t.dr, t.A_log, t.bc, t.D, t.zs}));
}

INSTANTIATE_TEST_SUITE_P(Shapes, ScanGradCheck,
                         ::testing::Values(ScanCase{1, 1, 1, 1, 64}, ScanCase{1, 1, 3, 2, 64},
                                           ScanCase{2, 7, 5, 3, 3}, ScanCase{1, 13, 9, 4, 4},
                                           ScanCase{3, 10, 17, 2, 64}, ScanCase{1, 9, 70, 2, 2}),
                         ::testing::PrintToStringParamName());

class ScanVsReference : public ::testing::TestWithParam<ScanCase> {};

TEST_P(ScanVsReference, Float32ForwardAndBackward) {
  const ScanCase c = GetParam();
  const ScanOperands o = make_scan_operands(c, 21);
  const ScanTensors t = scan_tensors(o, DType::f32, true);
  tape().clear();
  Tensor out = run_scan({t.u, t.dr, t.A_log, t.bc, t.D, t.zs}, o, c.chunk);
  const Vec ref = ref_scan_forward(o.ref);
  EXPECT_TRUE(close_to_ref(out, ref, 1e-5, "out"));

  Generator gen(5);
  const Vec dout = rand_vec(c.B * c.L * c.E, gen, -1, 1);
  backward_weighted(out, from_vec(dout, out.shape(), DType::f32));
  const RefScanGrads g = ref_scan_backward(o.ref, dout);
  const int64_t rows = c.B * c.L;
  const double rtol = 1e-5;
  EXPECT_TRUE(close_to_ref(t.u.grad(), g.u, rtol, "du"));
  EXPECT_TRUE(close_to_ref(t.dr.grad(), g.dr, rtol, "ddelta_raw"));
  EXPECT_TRUE(close_to_ref(t.A_log.grad(), g.A_log, rtol, "dA_log"));
  EXPECT_TRUE(close_to_ref(t.D.grad(), g.D, rtol, "dD"));
  const Vec dbc = t.bc.grad().to_f64_vector(), dzs = t.zs.grad().to_f64_vector();
  EXPECT_TRUE(close_to_ref(from_vec(columns_of(dbc, rows, o.ldbc, o.bcol, c.N), {rows * c.N}, DType::f64), g.Bt,
                           rtol, "dBt"));
  EXPECT_TRUE(close_to_ref(from_vec(columns_of(dbc, rows, o.ldbc, o.ccol, c.N), {rows * c.N}, DType::f64), g.Ct,
                           rtol, "dCt"));
  EXPECT_TRUE(close_to_ref(from_vec(columns_of(dzs, rows, o.ldz, o.zcol, c.E), {rows * c.E}, DType::f64), g.z,
                           rtol, "dz"));
  // Columns no op reads receive no gradient.
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_EQ(dbc[r * o.ldbc + 0], 0.0);
    EXPECT_EQ(dbc[r * o.ldbc + c.N + 1], 0.0);
    EXPECT_EQ(dzs[r * o.ldz + 1], 0.0);
  }
}

// L = 300 crosses several chunk boundaries; E = 74 is two channel groups (64 + 10)
// with a partial sub-block; E = 13 with N = 5 and chunk 7 leaves partial everything.
INSTANTIATE_TEST_SUITE_P(Long, ScanVsReference,
                         ::testing::Values(ScanCase{2, 300, 74, 16, 64}, ScanCase{1, 300, 13, 5, 7},
                                           ScanCase{3, 65, 8, 16, 64}),
                         ::testing::PrintToStringParamName());

TEST(SelectiveScan, SkipsInputsThatNeedNoGradientWithSameResult) {
  const ScanCase c{2, 40, 19, 4, 16};
  const ScanOperands o = make_scan_operands(c, 31);
  Generator gen(2);
  const Tensor dout = from_vec(rand_vec(c.B * c.L * c.E, gen, -1, 1), {c.B, c.L, c.E}, DType::f32);
  const ScanTensors all = scan_tensors(o, DType::f32, true);
  backward_weighted(run_scan({all.u, all.dr, all.A_log, all.bc, all.D, all.zs}, o, c.chunk), dout);
  ScanTensors some = scan_tensors(o, DType::f32, false);
  some.A_log.set_requires_grad(true);
  some.bc.set_requires_grad(true);
  backward_weighted(run_scan({some.u, some.dr, some.A_log, some.bc, some.D, some.zs}, o, c.chunk), dout);
  EXPECT_TRUE(same_values(some.A_log.grad(), all.A_log.grad()));
  EXPECT_TRUE(same_values(some.bc.grad(), all.bc.grad()));
  EXPECT_FALSE(some.u.grad().defined());
  EXPECT_FALSE(some.zs.grad().defined());
}

TEST(SelectiveScan, ChunkLengthDoesNotChangeTheResult) {
  const ScanCase c{2, 100, 11, 3, 64};
  const ScanOperands o = make_scan_operands(c, 41);
  Generator gen(3);
  const Tensor dout = from_vec(rand_vec(c.B * c.L * c.E, gen, -1, 1), {c.B, c.L, c.E}, DType::f32);
  std::vector<Tensor> grads;
  Tensor out_first;
  for (int64_t chunk : {64, 1, 17, 100, 1000}) {
    const ScanTensors t = scan_tensors(o, DType::f32, true);
    Tensor out = run_scan({t.u, t.dr, t.A_log, t.bc, t.D, t.zs}, o, chunk);
    if (!out_first.defined()) out_first = out.detach();
    EXPECT_TRUE(same_values(out, out_first)) << "chunk " << chunk;  // the forward never depends on it
    backward_weighted(out, dout);
    if (grads.empty()) {
      grads = {t.u.grad(), t.dr.grad(), t.A_log.grad(), t.bc.grad(), t.D.grad(), t.zs.grad()};
    } else {
      // Recomputation repeats the forward's arithmetic exactly, so only the order
      // of the dA/dD chunk sums differs.
      const std::vector<Tensor> now{t.u.grad(), t.dr.grad(), t.A_log.grad(), t.bc.grad(), t.D.grad(), t.zs.grad()};
      for (size_t k = 0; k < now.size(); ++k) EXPECT_TRUE(allclose(now[k], grads[k], 1e-5, 1e-6)) << "chunk " << chunk;
    }
  }
}

// Every reduction in the fused ops sums in an order fixed by the shapes alone, so
// the results do not even depend on the thread count.
TEST(SelectiveScan, ScanAndConvIndependentOfThreadCount) {
  const ScanCase c{2, 200, 130, 16, 64};
  const ScanOperands o = make_scan_operands(c, 51);
  Generator gen(4);
  const Tensor dout = from_vec(rand_vec(c.B * c.L * c.E, gen, -1, 1), {c.B, c.L, c.E}, DType::f32);
  Tensor cw = rand_f32({c.E, 1, 4}, gen, -0.5, 0.5), cb = rand_f32({c.E}, gen, -0.5, 0.5);
  std::vector<std::vector<Tensor>> results;
  const int threads = omp_get_max_threads();
  for (int nt : {1, 2, 3}) {
    omp_set_num_threads(nt);
    const ScanTensors t = scan_tensors(o, DType::f32, true);
    cw.zero_grad();
    cb.zero_grad();
    cw.set_requires_grad(true);
    cb.set_requires_grad(true);
    Tensor u = mamba_conv1d_silu({t.zs, 1}, cw, cb);  // (B, L, E) from columns [1, E+1) of z's source
    Tensor out = selective_scan(u, t.dr, t.A_log, {t.bc, o.bcol}, {t.bc, o.ccol}, t.D, {t.zs, o.zcol}, c.chunk);
    backward_weighted(out, dout);
    results.push_back({out.detach(), t.dr.grad(), t.A_log.grad(), t.bc.grad(), t.D.grad(), t.zs.grad(), cw.grad(),
                       cb.grad()});
  }
  omp_set_num_threads(threads);
  for (size_t r = 1; r < results.size(); ++r)
    for (size_t k = 0; k < results[0].size(); ++k)
      EXPECT_TRUE(same_values(results[r][k], results[0][k])) << "threads run " << r << ", tensor " << k;
}

TEST(SelectiveScan, RejectsBadShapes) {
  Tensor u = Tensor::zeros({2, 5, 4}), dr = Tensor::zeros({2, 5, 4}), A = Tensor::zeros({4, 3});
  Tensor bc = Tensor::zeros({2, 5, 6}), D = Tensor::zeros({4}), z = Tensor::zeros({2, 5, 4});
  EXPECT_NO_THROW(selective_scan(u, dr, A, {bc, 0}, {bc, 3}, D, {z, 0}));
  EXPECT_THROW(selective_scan(u, dr, A, {bc, 0}, {bc, 4}, D, {z, 0}), ShapeError);  // Ct past the end
  EXPECT_THROW(selective_scan(u, Tensor::zeros({2, 4, 4}), A, {bc, 0}, {bc, 3}, D, {z, 0}), ShapeError);
  EXPECT_THROW(selective_scan(u, dr, Tensor::zeros({5, 3}), {bc, 0}, {bc, 3}, D, {z, 0}), ShapeError);
  EXPECT_THROW(selective_scan(u, dr, A, {bc, 0}, {bc, 3}, D, {z, 1}), ShapeError);
  EXPECT_THROW(selective_scan(u, dr, A, {bc, 0}, {bc, 3}, D, {z, 0}, 0), ShapeError);
  EXPECT_THROW(selective_scan(u, dr.to(DType::f64), A, {bc, 0}, {bc, 3}, D, {z, 0}), ShapeError);
}

// ---- conv1d + silu and dt_proj on columns --------------------------------------

struct ConvCase {
  int64_t B, L, E, K;
};
void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << seqmix::testing::case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"E", double(c.E)}, {"K", double(c.K)}});
}

class ConvGradCheck : public ::testing::TestWithParam<ConvCase> {};
class ConvVsReference : public ::testing::TestWithParam<ConvCase> {};

TEST_P(ConvGradCheck, Float64FiniteDifferences) {
  const ConvCase c = GetParam();
  Generator gen(13);
  // x at columns [2, 2+E) of a (B, L, E+3) source.
  Tensor xs = rand_f64({c.B, c.L, c.E + 3}, gen), w = rand_f64({c.E, 1, c.K}, gen), b = rand_f64({c.E}, gen);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return mamba_conv1d_silu({in[0], 2}, in[1], in[2]); }, {xs, w, b}));
}

TEST_P(ConvVsReference, Float32ForwardAndBackward) {
  const ConvCase c = GetParam();
  Generator gen(17);
  const int64_t rows = c.B * c.L;
  const Vec xv = rand_vec(rows * (c.E + 3), gen, -2, 2), wv = rand_vec(c.E * c.K, gen, -1, 1),
            bv = rand_vec(c.E, gen, -1, 1), dv = rand_vec(rows * c.E, gen, -1, 1);
  Tensor xs = from_vec(xv, {c.B, c.L, c.E + 3}, DType::f32, true), w = from_vec(wv, {c.E, 1, c.K}, DType::f32, true),
         b = from_vec(bv, {c.E}, DType::f32, true);
  Tensor y = mamba_conv1d_silu({xs, 2}, w, b);
  const Vec x = columns_of(xv, rows, c.E + 3, 2, c.E);
  EXPECT_TRUE(close_to_ref(y, ref_conv_forward(x, wv, bv, c.B, c.L, c.E, c.K), 1e-5, "xc"));
  backward_weighted(y, from_vec(dv, y.shape(), DType::f32));
  const RefConvGrads g = ref_conv_backward(x, wv, bv, c.B, c.L, c.E, c.K, dv);
  const Vec dxs = xs.grad().to_f64_vector();
  EXPECT_TRUE(close_to_ref(from_vec(columns_of(dxs, rows, c.E + 3, 2, c.E), {rows * c.E}, DType::f64), g.x, 1e-5,
                           "dx"));
  EXPECT_TRUE(close_to_ref(w.grad(), g.w, 1e-5, "dw"));
  EXPECT_TRUE(close_to_ref(b.grad(), g.bias, 1e-5, "dbias"));
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(dxs[r * (c.E + 3) + 1], 0.0);
}

// E = 37: a full block of 32 channels and a partial one.
INSTANTIATE_TEST_SUITE_P(Shapes, ConvGradCheck,
                         ::testing::Values(ConvCase{1, 1, 1, 4}, ConvCase{2, 5, 3, 1}, ConvCase{1, 7, 5, 3},
                                           ConvCase{3, 6, 37, 4}),
                         ::testing::PrintToStringParamName());
INSTANTIATE_TEST_SUITE_P(Shapes, ConvVsReference,
                         ::testing::Values(ConvCase{1, 1, 1, 4}, ConvCase{2, 5, 3, 1}, ConvCase{3, 6, 37, 4},
                                           ConvCase{2, 300, 37, 4}, ConvCase{1, 300, 70, 2}),
                         ::testing::PrintToStringParamName());

TEST(MambaLinearColumns, GradCheckFloat64) {
  Generator gen(19);
  Tensor xs = rand_f64({2, 5, 7}, gen), w = rand_f64({4, 3}, gen), b = rand_f64({4}, gen);
  EXPECT_TRUE(gradcheck(
      [](const std::vector<Tensor>& in) { return mamba_linear_columns({in[0], 2}, in[1], in[2]); }, {xs, w, b}));
  EXPECT_THROW(mamba_linear_columns({xs, 5}, w, b), ShapeError);  // columns [5, 8) of 7
}

// ---- the layer -----------------------------------------------------------------

// dt_rank "auto" and the state tensors (names, shapes and the state size are the shared
// suite's, tests/test_mixer_suite.cpp).
TEST(MambaLayer, DtRankAndStateTensors) {
  Generator gen(1);
  MambaOptions opt;  // documented defaults: N 16, d_conv 4, expand 2, dt_rank auto
  MambaMixer m(40, opt, LayerInit{&gen, 1, DType::f32});
  const int64_t E = 80, N = 16, R = 3, K = 4;  // R = ceil(40/16)
  EXPECT_EQ(m.dt_rank(), R);
  auto st = m.init_state(3);
  auto* ms = dynamic_cast<MambaState*>(st.get());
  ASSERT_NE(ms, nullptr);
  EXPECT_EQ(ms->conv.shape(), (Shape{3, K - 1, E}));
  EXPECT_EQ(ms->ssm.shape(), (Shape{3, E, N}));
  EXPECT_EQ(ms->conv.numel() + ms->ssm.numel(), 3 * m.state_size(0));
  for (int64_t d : {8, 16, 17, 256}) {
    Generator g2(1);
    EXPECT_EQ(MambaMixer(d, opt, LayerInit{&g2, 1, DType::f32}).dt_rank(), (d + 15) / 16) << d;
  }
  MambaOptions r5 = opt;
  r5.dt_rank = 5;
  Generator g3(1);
  EXPECT_EQ(MambaMixer(40, r5, LayerInit{&g3, 1, DType::f32}).dt_rank(), 5);
}

// The option rules (the shared suite checks the inputs and states).
TEST(MambaLayer, RejectsBadOptions) {
  Generator gen(1);
  const LayerInit init{&gen, 1, DType::f32};
  MambaOptions o;
  o.d_state = 0;
  EXPECT_THROW(MambaMixer(8, o, init), ShapeError);
  o = MambaOptions();
  o.dt_min = 0.2;  // > dt_max
  EXPECT_THROW(MambaMixer(8, o, init), ShapeError);
}

// ---- initialisation --------------------------------------------------------------

struct Moments {
  double mean, sd, lo, hi;
};
Moments moments(const Tensor& t) {
  const Vec v = t.to_f64_vector();
  double s = 0, ss = 0, lo = INFINITY, hi = -INFINITY;
  for (double x : v) s += x, lo = std::min(lo, x), hi = std::max(hi, x);
  const double mean = s / v.size();
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / v.size()), lo, hi};
}

TEST(MambaInit, FollowsSpec) {
  Generator gen(2024);
  const int64_t Dm = 256, n_layers = 4;
  MambaOptions opt;
  MambaMixer m(Dm, opt, LayerInit{&gen, n_layers, DType::f32});
  const int64_t E = 512, N = 16, R = 16;
  // Normal(0, 0.02) projections; out_proj scaled by 1/sqrt(2 n_layers).
  for (auto [t, sd] : {std::pair{&m.in_proj_weight, 0.02}, std::pair{&m.x_proj_weight, 0.02},
                       std::pair{&m.out_proj_weight, 0.02 / std::sqrt(2.0 * n_layers)}}) {
    const Moments mo = moments(*t);
    EXPECT_NEAR(mo.sd, sd, 0.03 * sd);
    EXPECT_NEAR(mo.mean, 0.0, 0.03 * sd);
  }
  // Uniform(-b, b): within bounds, sd = b / sqrt(3).
  const double cb = 1.0 / std::sqrt(4.0), db = 1.0 / std::sqrt(double(R));
  for (auto [t, b] : {std::pair{&m.conv1d_weight, cb}, std::pair{&m.conv1d_bias, cb},
                      std::pair{&m.dt_proj_weight, db}}) {
    const Moments mo = moments(*t);
    EXPECT_GE(mo.lo, -b);
    EXPECT_LE(mo.hi, b);
    EXPECT_NEAR(mo.sd, b / std::sqrt(3.0), 0.08 * b);
    EXPECT_GT(mo.hi, 0.9 * b);
    EXPECT_LT(mo.lo, -0.9 * b);
  }
  // dt = softplus(dt_proj.bias) is log-uniform on [dt_min, dt_max].
  const Vec bias = m.dt_proj_bias.to_f64_vector();
  double mean_log = 0;
  for (double v : bias) {
    const double dt = std::log1p(std::exp(v));
    EXPECT_GE(dt, opt.dt_min * (1 - 1e-5));
    EXPECT_LE(dt, opt.dt_max * (1 + 1e-5));
    mean_log += std::log(dt) / E;
  }
  const double lmid = 0.5 * (std::log(opt.dt_min) + std::log(opt.dt_max)), lsd = (std::log(opt.dt_max) - std::log(opt.dt_min)) / std::sqrt(12.0);
  EXPECT_NEAR(mean_log, lmid, 4 * lsd / std::sqrt(double(E)));
  // A_log[e, n] = log(n + 1) in every row; D = 1.
  for (int64_t e = 0; e < E; ++e)
    for (int64_t n = 0; n < N; ++n)
      ASSERT_FLOAT_EQ(m.A_log.f32()[e * N + n], static_cast<float>(std::log(n + 1.0))) << e << "," << n;
  for (int64_t e = 0; e < E; ++e) ASSERT_EQ(m.D.f32()[e], 1.0f);
  // The same seed gives the same parameters in float64 (the gradient checks' layer).
  Generator gen2(2024);
  MambaMixer m64(Dm, opt, LayerInit{&gen2, n_layers, DType::f64});
  EXPECT_TRUE(same_values(m64.dt_proj_bias.to(DType::f32), m.dt_proj_bias));
  EXPECT_TRUE(same_values(m64.out_proj_weight.to(DType::f32), m.out_proj_weight));
}

TEST(MambaInit, DtFloor) {
  Generator gen(5);
  MambaOptions opt;
  opt.dt_min = 1e-6;
  opt.dt_max = 1e-5;
  opt.dt_init_floor = 1e-4;  // above every draw: every dt is the floor
  MambaMixer m(16, opt, LayerInit{&gen, 1, DType::f64});
  for (int64_t e = 0; e < m.d_inner(); ++e)
    EXPECT_NEAR(std::log1p(std::exp(m.dt_proj_bias.f64()[e])), 1e-4, 1e-12);
}

}  // namespace
