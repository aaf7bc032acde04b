// H3's diagonal SSM (h3_diag_mix, layers/h3_diag.cpp) and the whole H3 layer, forward+backward:
//  1. the Zoology MQAR study's shapes: B=64, L in {32, 64, 128, 256, 512}, D in {32, 64},
//     head_dim 1 and 2, d_state 64;
//  2. large: B=8, L=1024, D=256, head_dim 1 and 2, d_state 64.
// CPU time is printed beside wall time: the machine is shared, and with one thread the CPU
// time leaves out the time the run was descheduled.
// --crossover instead times h3_diag_mix with each method forced over L (the figures behind
// h3_diag_method's threshold).
// --shape B L D dh N method times one case of h3_diag_mix, or of h3_shift_conv with method
// "shift" (for perf).
//   OMP_NUM_THREADS=1 ./build/bench_h3 [--quick] [--crossover | --shape B L D dh N auto|recurrence|toeplitz|shift]

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "bench/bench_machine.h"
#include "core/ops.h"
#include "core/tape.h"
#include "layers/h3.h"
#include "layers/h3_kernel.h"

using namespace seqmix;

namespace {

Tensor random_tensor(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(g.uniform(-1, 1));
  t.set_requires_grad(true);
  return t;
}

// Forward + backward (the sum of the output as the loss) after 2 warm-up calls, repeated
// until ~0.4 s or 15 times (at least 3): median wall and median CPU time of the process.
bench::Timing fwd_bwd_ms(const std::function<Tensor()>& f, const std::vector<Tensor>& zero, bool quick,
                  bool with_backward = true) {
  auto once = [&] {
    if (!with_backward) {
      f();
      return;
    }
    backward(sum(f()));
    for (const Tensor& t : zero) t.zero_grad();
  };
  return bench::median_wall_cpu(once, 3, quick ? 3 : 15, 400);
}

// The forward alone (no tape), timed as fwd_bwd_ms.
bench::Timing fwd_ms(const std::function<Tensor()>& f, bool quick) {
  NoGradGuard no_grad;
  return fwd_bwd_ms(f, {}, quick, false);
}

struct Shape5 {
  int64_t B, L, D, dh;
};

void run(const Shape5& s, bool quick) {
  const int64_t N = 64;
  Generator g(1);
  H3Mixer m(s.D, H3Options{N, s.dh}, LayerInit{&g, 2, DType::f32});
  NamedTensors ps;
  m.named_parameters("", ps);
  std::vector<Tensor> params;
  for (auto& [name, p] : ps) params.push_back(p);
  const H3SsmParams& p = m.ssm();
  Tensor q = random_tensor({s.B, s.L, s.D}, g), kt = random_tensor({s.B, s.L, s.D}, g),
         v = random_tensor({s.B, s.L, s.D}, g), x = random_tensor({s.B, s.L, s.D}, g);
  std::vector<Tensor> zero_op = params, zero_layer = params;
  zero_op.insert(zero_op.end(), {q, kt, v});
  zero_layer.push_back(x);
  const bench::Timing op = fwd_bwd_ms([&] { return h3_diag_mix(q, kt, v, p); }, zero_op, quick);
  Generator drop(0);
  const bench::Timing layer = fwd_bwd_ms([&] { return m.forward(x, true, drop); }, zero_layer, quick);
  std::printf("%4lld %5lld %4lld %3lld | %10.2f %10.2f | %10.2f %10.2f\n", (long long)s.B, (long long)s.L,
              (long long)s.D, (long long)s.dh, op.wall, op.cpu, layer.wall, layer.cpu);
  std::fflush(stdout);
}

// Forward+backward of h3_diag_mix with each method forced, over L, for the threshold in
// h3_diag_method: CPU ms of the recurrence and of the Toeplitz form, and their ratio.
void crossover(bool quick) {
  struct Case {
    int64_t B, D, dh, N;
  };
  const std::vector<Case> cases{{64, 32, 1, 64}, {64, 64, 2, 64}, {64, 64, 1, 16}, {64, 64, 2, 16},
                                {64, 64, 2, 128}, {12, 128, 1, 64}, {8, 256, 1, 64}, {8, 256, 2, 64},
                                {4, 64, 1, 64},   {2, 64, 2, 64},   {2, 64, 1, 64},  {1, 64, 1, 64}};
  std::printf("## Crossover: h3_diag_mix forward+backward, CPU ms, each method forced; auto = the\n"
              "## method h3_diag_method picks (T Toeplitz, R recurrence)\n");
  std::printf("%4s %4s %3s %4s %5s | %10s %10s %7s %4s\n", "B", "D", "dh", "N", "L", "recurrence", "toeplitz",
              "rec/toe", "auto");
  for (const Case& c : cases)
    for (int64_t L : {32, 64, 128, 256, 384, 512, 768, 1024}) {
      if (L > 512 && (c.B * c.D > 64 * 32 || c.B < 8)) continue;  // a long run each; the large shape is
                                                                   // in the table above
      Generator g(1);
      H3Mixer m(c.D, H3Options{c.N, c.dh}, LayerInit{&g, 2, DType::f32});
      NamedTensors ps;
      m.named_parameters("", ps);
      std::vector<Tensor> zero;
      for (auto& [name, p] : ps) zero.push_back(p);
      const H3SsmParams& p = m.ssm();
      Tensor q = random_tensor({c.B, L, c.D}, g), kt = random_tensor({c.B, L, c.D}, g),
             v = random_tensor({c.B, L, c.D}, g);
      zero.insert(zero.end(), {q, kt, v});
      double ms[2];
      int i = 0;
      for (H3DiagMethod method : {H3DiagMethod::recurrence, H3DiagMethod::toeplitz})
        ms[i++] = fwd_bwd_ms([&] { return h3_diag_mix(q, kt, v, p, method); }, zero, quick).cpu;
      const bool toe = h3_diag_method(c.B, L, c.N, c.dh) == H3DiagMethod::toeplitz;
      std::printf("%4lld %4lld %3lld %4lld %5lld | %10.2f %10.2f %7.2f %4s\n", (long long)c.B, (long long)c.D,
                  (long long)c.dh, (long long)c.N, (long long)L, ms[0], ms[1], ms[0] / ms[1], toe ? "T" : "R");
      std::fflush(stdout);
    }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, cross = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--crossover") == 0) cross = true;
    else if (std::strcmp(argv[i], "--shape") == 0 && i + 6 < argc) {
      // --shape B L D dh N method: one case, for profiling (auto, recurrence, toeplitz or shift)
      const int64_t B = std::atoll(argv[i + 1]), L = std::atoll(argv[i + 2]), D = std::atoll(argv[i + 3]),
                    dh = std::atoll(argv[i + 4]), N = std::atoll(argv[i + 5]);
      const std::string m = argv[i + 6];
      const H3DiagMethod method = m == "recurrence" ? H3DiagMethod::recurrence
                                  : m == "toeplitz" ? H3DiagMethod::toeplitz
                                                    : H3DiagMethod::automatic;
      Generator g(1);
      H3Mixer mx(D, H3Options{N, dh}, LayerInit{&g, 2, DType::f32});
      NamedTensors ps;
      mx.named_parameters("", ps);
      std::vector<Tensor> zero;
      for (auto& [name, p] : ps) zero.push_back(p);
      Tensor q = random_tensor({B, L, D}, g), kt = random_tensor({B, L, D}, g), v = random_tensor({B, L, D}, g);
      zero.insert(zero.end(), {q, kt, v});
      auto op = [&] { return m == "shift" ? h3_shift_conv(q, mx.ssm()) : h3_diag_mix(q, kt, v, mx.ssm(), method); };
      bench::Timing t{}, fwd{};
      for (int r = 0; r < (quick ? 1 : 10); ++r) {  // ~10 s of runs for a profile
        t = fwd_bwd_ms(op, zero, quick);
        fwd = fwd_ms(op, quick);
      }
      std::printf("B %lld L %lld D %lld dh %lld N %lld %s: forward+backward %.2f ms wall, %.2f ms CPU; "
                  "forward %.2f ms wall, %.2f ms CPU\n",
                  (long long)B, (long long)L, (long long)D, (long long)dh, (long long)N, m.c_str(), t.wall, t.cpu,
                  fwd.wall, fwd.cpu);
      return 0;
    }
    else {
      std::fprintf(stderr, "usage: bench_h3 [--quick] [--crossover | --shape B L D dh N method]\n");
      return 2;
    }
  }
  std::printf("# bench_h3; %s\n# %s\n# load average: %s\n", bench::threads_note().c_str(),
              bench::cpu_summary().c_str(), bench::load_average().c_str());
  if (cross) {
    crossover(quick);
  } else {
    std::printf("# forward+backward, d_state 64, float32; medians in ms (wall, CPU)\n");
    std::printf("%4s %5s %4s %3s | %10s %10s | %10s %10s\n", "B", "L", "D", "dh", "diag wall", "diag cpu",
                "layer wall", "layer cpu");
    std::vector<Shape5> shapes;
    for (int64_t D : {32, 64})
      for (int64_t dh : {1, 2})
        for (int64_t L : {32, 64, 128, 256, 512}) shapes.push_back({64, L, D, dh});
    shapes.push_back({8, 1024, 256, 1});
    shapes.push_back({8, 1024, 256, 2});
    for (const Shape5& s : shapes) run(s, quick);
  }
  std::printf("# load average after: %s\n", bench::load_average().c_str());
  return 0;
}
