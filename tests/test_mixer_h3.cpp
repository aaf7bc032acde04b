// H3 mixer (docs/mixers.md#h3), what is specific to it: the initialisation, the fused shift
// and diagonal SSM ops against the plain-loop kernel-form reference (float32 and float64,
// forward and backward, with the documented initial modes), and the option rules. The
// layer's gradient check, twin, recurrent form, causality and determinism are the shared
// suite's (tests/test_mixer_suite.cpp).
//
// The diagonal op is checked by both of its methods (the recurrence and the Toeplitz GEMM of
// layers/h3_diag_toeplitz.cpp) at every shape, and the two against each other at the
// automatic threshold, under a gradient check, across thread counts and against the
// recurrent step.
//
// Tolerance rule for float32 against the float64 reference: every element of a
// result tensor must satisfy |got - ref| <= rtol * max|ref| (the tensor's own
// scale, since each element is a long sum whose rounding error scales with the
// magnitude of its terms rather than with the possibly cancelled result), with
// rtol = 2e-5 for outputs and 5e-5 for gradients (sums over B*L more terms);
// measured errors are 1e-7..8e-6. In float64 the same comparison holds to
// 1e-11 (outputs) and 1e-10 (gradients): both methods and their backward passes are
// exact, not approximations of the kernel form.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <omp.h>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/h3.h"
#include "tests/support/case_names.h"
#include "tests/support/gradcheck.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_h3.h"

using namespace seqmix;
using namespace seqmix::testing;

namespace {

std::map<std::string, Tensor> param_map(const H3Mixer& m) {
  NamedTensors ps;
  m.named_parameters("", ps);
  return {ps.begin(), ps.end()};
}

std::unique_ptr<H3Mixer> make_mixer(int64_t D, int64_t N, int64_t dh, DType dt, uint64_t seed, int64_t n_layers = 1) {
  Generator gen(seed);
  LayerInit init{&gen, n_layers, dt};
  return std::make_unique<H3Mixer>(D, H3Options{N, dh}, init);
}

// Moves every parameter to generic random values so that each path of the
// backward is exercised (B = e_0, zero biases and A_imag = pi n are special).
void randomize(const H3Mixer& m, uint64_t seed) {
  Generator gen(seed);
  NamedTensors ps;
  m.named_parameters("", ps);
  const double D = static_cast<double>(m.d_model());
  for (auto& [name, t] : ps) {
    double lo = -1, hi = 1;
    if (name.find("weight") != std::string::npos) lo = -1.5 / std::sqrt(D), hi = 1.5 / std::sqrt(D);
    if (name.find("bias") != std::string::npos) lo = -0.3, hi = 0.3;
    if (name == "ssm_shift.B" || name == "ssm_shift.C") lo = -0.7, hi = 0.7;
    if (name == "ssm_diag.log_dt") lo = std::log(0.05), hi = std::log(0.5);
    if (name == "ssm_diag.inv_A_real") lo = -1.5, hi = 0.5;
    if (name == "ssm_diag.A_imag") lo = -2.5, hi = 2.5;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double x = gen.uniform(lo, hi);
      if (t.dtype() == DType::f64) t.f64()[i] = x;
      else t.f32()[i] = static_cast<float>(x);
    }
  }
}


::testing::AssertionResult close_to_scale(const Tensor& got, const Tensor& ref, double rtol, const char* what) {
  if (!got.defined()) return ::testing::AssertionFailure() << what << ": no gradient";
  if (got.shape() != ref.shape())
    return ::testing::AssertionFailure() << what << ": shape " << shape_str(got.shape()) << " vs " << shape_str(ref.shape());
  double scale = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) scale = std::max(scale, std::fabs(ref.item(i)));
  double worst = 0;
  int64_t wi = 0;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const double e = std::fabs(got.item(i) - ref.item(i));
    if (!(e <= worst)) worst = e, wi = i;
  }
  if (!(worst <= rtol * scale + 1e-30))
    return ::testing::AssertionFailure() << what << ": element " << wi << " got " << got.item(wi) << ", reference "
                                         << ref.item(wi) << ", error " << worst << " > " << rtol << " * scale " << scale;
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------
// Initialisation (docs/mixers.md#h3 and docs/model.md#initialisation).
// ---------------------------------------------------------------------------

struct Stats {
  double mean = 0, std = 0, min = 1e300, max = -1e300;
};
Stats stats(const Tensor& t) {
  Stats s;
  const int64_t n = t.numel();
  for (int64_t i = 0; i < n; ++i) {
    const double x = t.item(i);
    s.mean += x;
    s.min = std::min(s.min, x);
    s.max = std::max(s.max, x);
  }
  s.mean /= n;
  for (int64_t i = 0; i < n; ++i) s.std += (t.item(i) - s.mean) * (t.item(i) - s.mean);
  s.std = std::sqrt(s.std / n);
  return s;
}

TEST(H3Init, Statistics) {
  const int64_t D = 128, N = 64, dh = 2, H = D / dh, Nh = N / 2, n_layers = 4;
  auto m = make_mixer(D, N, dh, DType::f32, 42, n_layers);
  auto p = param_map(*m);
  for (const char* w : {"q_proj.weight", "k_proj.weight", "v_proj.weight"}) {
    const Stats s = stats(p[w]);
    EXPECT_NEAR(s.mean, 0.0, 0.001) << w;
    EXPECT_NEAR(s.std, 0.02, 0.001) << w;
  }
  const Stats so = stats(p["out_proj.weight"]);
  EXPECT_NEAR(so.std, 0.02 / std::sqrt(2.0 * n_layers), 0.0005);
  for (const char* b : {"q_proj.bias", "k_proj.bias", "v_proj.bias", "out_proj.bias"}) {
    const Stats s = stats(p[b]);
    EXPECT_EQ(s.min, 0.0) << b;
    EXPECT_EQ(s.max, 0.0) << b;
  }
  // ssm_shift.B = e_0 in every channel.
  for (int64_t d = 0; d < D; ++d)
    for (int64_t n = 0; n < N; ++n) ASSERT_EQ(p["ssm_shift.B"].item(d * N + n), n == 0 ? 1.0 : 0.0);
  const double bound = 1.0 / std::sqrt(double(N));
  const Stats sc = stats(p["ssm_shift.C"]);
  EXPECT_GE(sc.min, -bound);
  EXPECT_LE(sc.max, bound);
  EXPECT_LT(sc.min, -0.95 * bound);
  EXPECT_GT(sc.max, 0.95 * bound);
  EXPECT_NEAR(sc.std, bound / std::sqrt(3.0), 0.01);
  const Stats sd = stats(p["ssm_shift.D"]);
  EXPECT_NEAR(sd.mean, 0.0, 0.3);
  EXPECT_NEAR(sd.std, 1.0, 0.2);
  const Stats sdt = stats(p["ssm_diag.log_dt"]);
  EXPECT_GE(sdt.min, std::log(0.001) - 1e-6);
  EXPECT_LE(sdt.max, std::log(0.1) + 1e-6);
  EXPECT_NEAR(sdt.mean, 0.5 * (std::log(0.001) + std::log(0.1)), 0.5);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t n = 0; n < Nh; ++n) {
      const int64_t i = h * Nh + n;
      ASSERT_FLOAT_EQ(p["ssm_diag.inv_A_real"].item(i), std::log(0.5));
      ASSERT_FLOAT_EQ(p["ssm_diag.A_imag"].item(i), M_PI * n);
      ASSERT_EQ(p["ssm_diag.B"].item(2 * i), 1.0);
      ASSERT_EQ(p["ssm_diag.B"].item(2 * i + 1), 0.0);
    }
  // C: real and imaginary parts each of variance 1/2 (2048 + 2048 draws).
  const Stats sC = stats(p["ssm_diag.C"]);
  EXPECT_NEAR(sC.mean, 0.0, 0.05);
  EXPECT_NEAR(sC.std, std::sqrt(0.5), 0.03);
  const Stats sD = stats(p["ssm_diag.D"]);
  EXPECT_NEAR(sD.std, 1.0, 0.3);
  // Same seed, float64: the same values.
  auto m64 = make_mixer(D, N, dh, DType::f64, 42, n_layers);
  auto p64 = param_map(*m64);
  for (auto& [name, t] : p) EXPECT_TRUE(allclose(t, p64[name], 1e-7, 1e-7)) << name;
}

// The option rules and the fused ops' shape checks (the shared suite checks the layer's
// inputs and states).
TEST(H3Init, RejectsBadOptionsAndShapes) {
  EXPECT_THROW(make_mixer(8, 7, 1, DType::f32, 1), ShapeError);   // odd d_state
  EXPECT_THROW(make_mixer(8, 8, 3, DType::f32, 1), ShapeError);   // head_dim does not divide D
  auto m = make_mixer(8, 4, 1, DType::f32, 1);
  H3SsmParams p = m->ssm();
  EXPECT_THROW(h3_diag_mix(Tensor::zeros({1, 3, 8}), Tensor::zeros({1, 3, 8}), Tensor::zeros({1, 4, 8}), p),
               ShapeError);
  EXPECT_THROW(h3_shift_conv(Tensor::zeros({1, 3, 6}), p), ShapeError);
}

// ---------------------------------------------------------------------------
// Fused ops against the kernel-form reference.
// ---------------------------------------------------------------------------

struct OpCase {
  int64_t B, L, D, N, dh;
  bool spec_init = false;  // keep the documented initial parameters (A_imag up to pi*(N/2-1))
};
void PrintTo(const OpCase& c, std::ostream* os) {
  *os << seqmix::testing::case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"D", double(c.D)},
                                     {"N", double(c.N)}, {"dh", double(c.dh)}, {"specinit", double(c.spec_init)}});
}

const char* method_name(H3DiagMethod m) {
  return m == H3DiagMethod::toeplitz ? "toeplitz" : m == H3DiagMethod::recurrence ? "recurrence" : "automatic";
}

std::vector<Tensor> diag_params(const H3SsmParams& p) {
  return {p.log_dt, p.inv_A_real, p.A_imag, p.diag_B, p.diag_C, p.diag_D};
}

class H3FusedVsReference : public ::testing::TestWithParam<OpCase> {};

// The shift op, then the diagonal op by each method (both whatever the length: the
// automatic choice is only a matter of speed), against the reference.
void check_ops_against_reference(const OpCase& c, DType dt, double rtol_out, double rtol_grad) {
  auto m = make_mixer(c.D, c.N, c.dh, dt, 21);
  if (!c.spec_init) randomize(*m, 22);
  const H3SsmParams& p = m->ssm();
  Generator gen(23);
  auto rnd = [&](const Shape& s) {
    return dt == DType::f64 ? rand_f64(s, gen, -1, 1, true) : rand_f32(s, gen, -1, 1, true);
  };
  const Shape s{c.B, c.L, c.D};
  Tensor k = rnd(s), q = rnd(s), kt_in = rnd(s), v = rnd(s);
  Tensor r1 = rand_f64(s, gen, -1, 1, false), r2 = rand_f64(s, gen, -1, 1, false);

  // Shift SSM.
  Tensor kt = h3_shift_conv(k, p);
  EXPECT_TRUE(close_to_scale(kt, ref_h3_shift_forward(k, p), rtol_out, "shift forward"));
  backward(weighted_sum(kt, r1));
  RefH3Grads g;
  ref_h3_shift_backward(r1, k, p, g);
  EXPECT_TRUE(close_to_scale(k.grad(), g.dk, rtol_grad, "shift dk"));
  EXPECT_TRUE(close_to_scale(p.shift_B.grad(), g.d_shift_B, rtol_grad, "ssm_shift.B grad"));
  EXPECT_TRUE(close_to_scale(p.shift_C.grad(), g.d_shift_C, rtol_grad, "ssm_shift.C grad"));
  EXPECT_TRUE(close_to_scale(p.shift_D.grad(), g.d_shift_D, rtol_grad, "ssm_shift.D grad"));

  // Diagonal SSM with the q contraction.
  const Tensor o_ref = ref_h3_diag_forward(q, kt_in, v, p);
  ref_h3_diag_backward(r2, q, kt_in, v, p, g);
  for (H3DiagMethod method : {H3DiagMethod::recurrence, H3DiagMethod::toeplitz}) {
    SCOPED_TRACE(method_name(method));
    for (const Tensor& t : diag_params(p)) t.zero_grad();
    for (const Tensor* t : {&q, &kt_in, &v}) t->zero_grad();
    Tensor o = h3_diag_mix(q, kt_in, v, p, method);
    EXPECT_TRUE(close_to_scale(o, o_ref, rtol_out, "diag forward"));
    backward(weighted_sum(o, r2));
    EXPECT_TRUE(close_to_scale(q.grad(), g.dq, rtol_grad, "dq"));
    EXPECT_TRUE(close_to_scale(kt_in.grad(), g.dkt, rtol_grad, "dkt"));
    EXPECT_TRUE(close_to_scale(v.grad(), g.dv, rtol_grad, "dv"));
    EXPECT_TRUE(close_to_scale(p.log_dt.grad(), g.d_log_dt, rtol_grad, "log_dt grad"));
    EXPECT_TRUE(close_to_scale(p.inv_A_real.grad(), g.d_inv_A_real, rtol_grad, "inv_A_real grad"));
    EXPECT_TRUE(close_to_scale(p.A_imag.grad(), g.d_A_imag, rtol_grad, "A_imag grad"));
    EXPECT_TRUE(close_to_scale(p.diag_B.grad(), g.d_diag_B, rtol_grad, "ssm_diag.B grad"));
    EXPECT_TRUE(close_to_scale(p.diag_C.grad(), g.d_diag_C, rtol_grad, "ssm_diag.C grad"));
    EXPECT_TRUE(close_to_scale(p.diag_D.grad(), g.d_diag_D, rtol_grad, "ssm_diag.D grad"));
  }
}

TEST_P(H3FusedVsReference, Float32ForwardAndBackward) { check_ops_against_reference(GetParam(), DType::f32, 2e-5, 5e-5); }

// In float64 both methods agree with the kernel form to rounding: the fused backward
// passes are exact, not approximations of the kernel's gradient.
TEST_P(H3FusedVsReference, Float64ForwardAndBackward) { check_ops_against_reference(GetParam(), DType::f64, 1e-11, 1e-10); }

// Lengths 1, 7, 32, 64, 100, 128 (the MQAR study's and nanoGPT's among them) at head_dim 1
// and 2 and the documented d_state 64, and longer ones past the automatic threshold.
INSTANTIATE_TEST_SUITE_P(Shapes, H3FusedVsReference,
                         ::testing::Values(OpCase{1, 1, 12, 8, 1}, OpCase{2, 33, 12, 8, 2}, OpCase{2, 300, 12, 8, 1},
                                           OpCase{1, 300, 18, 64, 3}, OpCase{3, 97, 20, 16, 2},
                                           OpCase{2, 5, 7, 64, 1}, OpCase{2, 300, 32, 64, 2, true},
                                           OpCase{1, 257, 16, 64, 1, true}, OpCase{2, 40, 16, 8, 4},
                                           OpCase{3, 1, 8, 64, 2}, OpCase{3, 7, 10, 64, 1}, OpCase{2, 7, 8, 64, 2},
                                           OpCase{3, 32, 12, 64, 1}, OpCase{2, 32, 16, 64, 2, true},
                                           OpCase{3, 64, 16, 64, 1, true}, OpCase{2, 64, 12, 64, 2},
                                           OpCase{2, 100, 10, 64, 1}, OpCase{3, 100, 16, 64, 2},
                                           OpCase{2, 128, 16, 64, 1}, OpCase{2, 128, 8, 64, 2, true},
                                           OpCase{1, 700, 8, 64, 1}, OpCase{1, 600, 8, 64, 2}),
                         ::testing::PrintToStringParamName());

// ---------------------------------------------------------------------------
// The two methods of the diagonal op (recurrence and Toeplitz GEMM).
// ---------------------------------------------------------------------------

// The largest L at which h3_diag_method picks the Toeplitz form for these sizes, checking
// that it picks it for every shorter L and the recurrence for every longer one up to 4096.
int64_t toeplitz_max_length(int64_t B, int64_t N, int64_t dh) {
  int64_t last = 0;
  for (int64_t L = 1; L <= 4096; ++L)
    if (h3_diag_method(B, L, N, dh) == H3DiagMethod::toeplitz) {
      EXPECT_EQ(last, L - 1) << "the Toeplitz form is chosen at L " << L << " but not at " << last + 1;
      last = L;
    }
  return last;
}

struct DiagRun {
  Tensor o;
  std::vector<Tensor> grads;  // dq, dkt, dv, then the six ssm_diag parameters
};

DiagRun run_diag(const H3SsmParams& p, const Tensor& q, const Tensor& kt, const Tensor& v, const Tensor& r,
                 H3DiagMethod method) {
  for (const Tensor& t : diag_params(p)) t.zero_grad();
  for (const Tensor* t : {&q, &kt, &v}) t->zero_grad();
  DiagRun run;
  run.o = h3_diag_mix(q, kt, v, p, method);
  backward_weighted(run.o, r);
  for (const Tensor* t : {&q, &kt, &v}) run.grads.push_back(t->grad().clone());
  for (const Tensor& t : diag_params(p)) run.grads.push_back(t.grad().clone());
  return run;
}

const char* const kDiagGradNames[] = {"dq", "dkt", "dv", "log_dt", "inv_A_real", "A_imag", "ssm_diag.B",
                                      "ssm_diag.C", "ssm_diag.D"};

// The automatic choice at the users' sizes (bench/bench_h3 --crossover has the figures):
// the Zoology MQAR study (B=64, L up to 512, D 32..64, N=64, head_dim 1 and 2) and
// nanoGPT's shakespeare_char recipe (B=12, L=64, D=128) take the Toeplitz form; long
// sequences and batches too small for a GEMM (decoding-size checks) take the recurrence.
TEST(H3DiagMethods, ChoosesTheFasterMethodAtUsersSizes) {
  for (int64_t dh : {1, 2})
    for (int64_t L : {32, 64, 128, 256, 512})
      EXPECT_EQ(h3_diag_method(64, L, 64, dh), H3DiagMethod::toeplitz) << "dh " << dh << " L " << L;
  EXPECT_EQ(h3_diag_method(12, 64, 64, 1), H3DiagMethod::toeplitz);
  EXPECT_EQ(h3_diag_method(8, 1024, 64, 1), H3DiagMethod::recurrence);
  EXPECT_EQ(h3_diag_method(64, 4096, 64, 2), H3DiagMethod::recurrence);
  EXPECT_EQ(h3_diag_method(1, 64, 64, 1), H3DiagMethod::recurrence);
  EXPECT_EQ(h3_diag_method(2, 32, 64, 1), H3DiagMethod::recurrence);
  EXPECT_EQ(h3_diag_method(64, 256, 16, 1), H3DiagMethod::recurrence);  // small d_state
}

// At d_state 64 the automatic choice switches once, and at the last Toeplitz length and
// the first recurrence length both methods give the same output and gradients, in float64
// to rounding and in float32 to the float32 tolerances; the automatic method gives exactly
// the result of the method it picks. Batches 4 (head_dim 1) and 2 (head_dim 2) keep the
// threshold short (128 and 384) for the float64 runs.
TEST(H3DiagMethods, AgreeAtTheThreshold) {
  const int64_t D = 16, N = 64;
  for (int64_t dh : {1, 2}) {
    const int64_t B = dh == 1 ? 4 : 2;
    const int64_t Lmax = toeplitz_max_length(B, N, dh);
    ASSERT_GE(Lmax, 64);
    ASSERT_LT(Lmax, 4096);
    for (int64_t L : {Lmax, Lmax + 1}) {
      for (DType dt : {DType::f64, DType::f32}) {
        SCOPED_TRACE("dh " + std::to_string(dh) + " L " + std::to_string(L) + " " + dtype_name(dt));
        const bool f64 = dt == DType::f64;
        auto m = make_mixer(D, N, dh, dt, 31);
        randomize(*m, 32);
        Generator gen(33);
        auto rnd = [&] { return f64 ? rand_f64({B, L, D}, gen) : rand_f32({B, L, D}, gen, -1, 1, true); };
        const Tensor q = rnd(), kt = rnd(), v = rnd();
        const Tensor r = rand_f64({B, L, D}, gen, -1, 1, false);
        const DiagRun rec = run_diag(m->ssm(), q, kt, v, r, H3DiagMethod::recurrence);
        const DiagRun toe = run_diag(m->ssm(), q, kt, v, r, H3DiagMethod::toeplitz);
        const DiagRun aut = run_diag(m->ssm(), q, kt, v, r, H3DiagMethod::automatic);
        const double rtol_out = f64 ? 1e-12 : 4e-5, rtol_grad = f64 ? 1e-11 : 1e-4;
        EXPECT_TRUE(close_to_scale(toe.o, rec.o, rtol_out, "forward"));
        for (size_t i = 0; i < rec.grads.size(); ++i)
          EXPECT_TRUE(close_to_scale(toe.grads[i], rec.grads[i], rtol_grad, kDiagGradNames[i]));
        const DiagRun& picked = L == Lmax ? toe : rec;
        EXPECT_TRUE(same_values(aut.o, picked.o));
        for (size_t i = 0; i < rec.grads.size(); ++i) EXPECT_TRUE(same_values(aut.grads[i], picked.grads[i]));
      }
    }
  }
}

// Central differences in float64 through each method, every element of the inputs and of
// the six ssm_diag parameters, at small awkward shapes.
TEST(H3DiagMethods, GradCheckFloat64) {
  ThreadCount one(1);
  struct C {
    int64_t B, L, D, N, dh;
  };
  for (C c : {C{2, 9, 4, 4, 2}, C{1, 5, 3, 6, 1}, C{2, 1, 4, 8, 2}, C{1, 70, 2, 4, 1}})
    for (H3DiagMethod method : {H3DiagMethod::recurrence, H3DiagMethod::toeplitz}) {
      SCOPED_TRACE(std::string(method_name(method)) + " B " + std::to_string(c.B) + " L " + std::to_string(c.L));
      auto m = make_mixer(c.D, c.N, c.dh, DType::f64, 41);
      randomize(*m, 42);
      const H3SsmParams& p = m->ssm();
      Generator gen(43);
      std::vector<Tensor> inputs;
      for (int i = 0; i < 3; ++i) inputs.push_back(rand_f64({c.B, c.L, c.D}, gen));
      for (const Tensor& t : diag_params(p)) inputs.push_back(t);
      GradCheckOptions opt;
      opt.atol = 1e-7;
      EXPECT_TRUE(gradcheck([&](const std::vector<Tensor>& in) { return h3_diag_mix(in[0], in[1], in[2], p, method); },
                            inputs, opt));
    }
}

// The Toeplitz form at a size where its passes and head loop run in parallel: the same
// bits twice on all threads and once on one thread (the suite's test of this runs at a
// length past the threshold, on the recurrence).
TEST(H3DiagMethods, ToeplitzBitIdenticalAcrossThreadCounts) {
  const int saved = omp_get_max_threads();
  const int64_t B = 4, L = 100, D = 32, N = 64;
  for (int64_t dh : {1, 2}) {
    auto m = make_mixer(D, N, dh, DType::f32, 51);
    randomize(*m, 52);
    Generator gen(53);
    const Tensor q = rand_f32({B, L, D}, gen, -1, 1, true), kt = rand_f32({B, L, D}, gen, -1, 1, true),
                 v = rand_f32({B, L, D}, gen, -1, 1, true), r = rand_f32({B, L, D}, gen);
    std::vector<DiagRun> runs;
    for (int threads : {saved, saved, 1}) {
      omp_set_num_threads(threads);
      runs.push_back(run_diag(m->ssm(), q, kt, v, r, H3DiagMethod::toeplitz));
    }
    omp_set_num_threads(saved);
    // A size below the parallel threshold (the kernels' regions inactive) leaves the
    // caller's thread count as it was: the op pins oneDNN to one thread inside its own
    // region only.
    Generator small_gen(54);
    const Tensor qs = rand_f32({1, 3, D}, small_gen, -1, 1, true);
    run_diag(m->ssm(), qs, qs, qs, rand_f32({1, 3, D}, small_gen), H3DiagMethod::toeplitz);
    EXPECT_EQ(omp_get_max_threads(), saved);
    for (int k : {1, 2}) {
      SCOPED_TRACE("dh " + std::to_string(dh) + (k == 1 ? ": two runs on all threads" : ": all threads and one"));
      EXPECT_TRUE(same_values(runs[0].o, runs[k].o));
      for (size_t i = 0; i < runs[0].grads.size(); ++i) EXPECT_TRUE(same_values(runs[0].grads[i], runs[k].grads[i]));
    }
  }
}

// The layer's recurrent form (h3_core_step, always the recurrence) against its parallel
// form at MQAR lengths, where the parallel form takes the Toeplitz route: float64 to
// rounding, float32 to 1e-5 of the output's scale.
TEST(H3DiagMethods, RecurrentStepsMatchToeplitzForm) {
  ThreadCount one(1);
  const int64_t B = 4, L = 64, D = 16, N = 64;
  for (int64_t dh : {1, 2}) {
    ASSERT_EQ(h3_diag_method(B, L, N, dh), H3DiagMethod::toeplitz);
    for (DType dt : {DType::f64, DType::f32}) {
      SCOPED_TRACE("dh " + std::to_string(dh) + " " + dtype_name(dt));
      auto m = make_mixer(D, N, dh, dt, 61);
      randomize(*m, 62);
      Generator gen(63);
      const Tensor x = dt == DType::f64 ? rand_f64({B, L, D}, gen, -1, 1, false) : rand_f32({B, L, D}, gen);
      Tensor y;
      {
        NoGradGuard ng;
        Generator unused(0);
        y = m->forward(x, false, unused);
      }
      auto state = m->init_state(B);
      const double tol = (dt == DType::f64 ? 1e-13 : 1e-5) * max_abs(y);
      for (int64_t t = 0; t < L; ++t) {
        const Tensor yt = m->step(*state, time_slice(x, t));
        const Tensor want = time_slice(y, t);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t e = 0; e < D; ++e)
            ASSERT_NEAR(yt.item(b * D + e), want.item(b * D + e), tol) << "t " << t << " b " << b << " e " << e;
      }
    }
  }
}

}  // namespace
