// The GLA core kernel (gla_chunk_attention, layers/gla_kernel.cpp) against linear
// attention's (causal_linear_attention), forward+backward of the fused op alone:
//  1. the Zoology MQAR study's shapes: B=64, L in {32, 64, 128}, d_model in {32, 64, 128},
//     GLA at its defaults (4 heads, expand_k 0.5, expand_v 1: dk = D/8, dv = D/4 per head),
//     linear attention as the study runs it (1 head, d = D);
//  2. large heads, B=8, L=1024, D=256: GLA at its defaults (dk=32, dv=64) and with
//     expand_k 1 (dk=dv=64); linear attention with 4 heads of 64, as bench_mixers runs it.
// CPU time is printed beside wall time: the machine is shared, and with one thread the CPU
// time leaves out the time the run was descheduled.
//   OMP_NUM_THREADS=1 ./build/bench_gla [--quick] [--shape B L H dk dv]

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#include "bench/bench_common.h"
#include "bench/bench_machine.h"
#include "core/ops.h"
#include "core/tape.h"
#include "layers/gla_kernel.h"
#include "layers/linear_attention_kernel.h"

using namespace seqmix;

namespace {

Tensor random_tensor(const Shape& s, Generator& g, double lo, double hi) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(g.uniform(lo, hi));
  t.set_requires_grad(true);
  return t;
}

// Forward + backward (the sum of the output as the loss), `reps` times after 2 warm-up
// calls: median wall time and median CPU time of the process. The machine is shared;
// with one thread, CPU time does not count the time the run was descheduled.
bench::Timing fwd_bwd_ms(const std::function<Tensor()>& f, const std::vector<Tensor*>& inputs, int reps) {
  auto once = [&] {
    backward(sum(f()));
    for (Tensor* t : inputs) t->zero_grad();
  };
  return bench::median_wall_cpu(once, reps, reps, 0);
}

// GLA with H heads of widths dk, dv (q, k, gate logits (B, L, H*dk), v (B, L, H*dv)) and
// linear attention at width Dv = H*dv with la_heads heads.
void run(int64_t B, int64_t L, int64_t H, int64_t dk, int64_t dv, int64_t la_heads, int reps) {
  Generator g(1);
  const int64_t Dk = H * dk, Dv = H * dv;
  Tensor q = random_tensor({B, L, Dk}, g, -1, 1), k = random_tensor({B, L, Dk}, g, -1, 1);
  Tensor v = random_tensor({B, L, Dv}, g, -1, 1);
  // Gate logits in [-6, 4]: with the normaliser 16, log a from -0.38 to -0.001 per step.
  Tensor u = random_tensor({B, L, Dk}, g, -6, 4);
  const double scale = 1.0 / std::sqrt(double(dk));
  const bench::Timing gla =
      fwd_bwd_ms([&] { return gla_chunk_attention(q, k, v, u, H, scale, 16.0); }, {&q, &k, &v, &u}, reps);
  Tensor lq = random_tensor({B, L, Dv}, g, -1, 1), lk = random_tensor({B, L, Dv}, g, -1, 1);
  Tensor lv = random_tensor({B, L, Dv}, g, -1, 1);
  const bench::Timing la =
      fwd_bwd_ms([&] { return causal_linear_attention(lq, lk, lv, la_heads, 1e-6); }, {&lq, &lk, &lv}, reps);
  std::printf("%4lld %5lld %4lld %4lld %4lld %9.3f %9.3f %9.3f %9.3f %7.2f\n", (long long)B, (long long)L,
              (long long)Dv, (long long)dk, (long long)dv, gla.wall, gla.cpu, la.wall, la.cpu, gla.cpu / la.cpu);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int64_t only[5] = {0, 0, 0, 0, 0};  // --shape B L H dk dv: that shape alone (for a profiler)
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--shape") == 0 && i + 5 < argc)
      for (int64_t& x : only) x = std::atoll(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_gla [--quick] [--shape B L H dk dv]\n");
      return 2;
    }
  }
  std::printf("# GLA core kernel vs linear attention core, forward+backward; %s\n", bench::threads_note().c_str());
  std::printf("# %s\n# load average: %s\n", bench::cpu_summary().c_str(), bench::load_average().c_str());
  std::printf("# ms per forward+backward, medians: wall clock and CPU time of the process\n");
  std::printf("%4s %5s %4s %4s %4s %9s %9s %9s %9s %7s\n", "B", "L", "D", "dk", "dv", "gla wall", "gla cpu",
              "la wall", "la cpu", "gla/la");
  const int reps = quick ? 5 : 21;
  if (only[0] > 0) {
    run(only[0], only[1], only[2], only[3], only[4], only[2] * only[4] >= 256 ? 4 : 1, reps);
    return 0;
  }
  // The study: GLA's defaults (4 heads, dk = D/8, dv = D/4), linear attention with 1 head.
  for (int64_t L : {32, 64, 128})
    for (int64_t D : {32, 64, 128}) run(64, L, 4, D / 8, D / 4, 1, reps);
  // Large: D = 256 at the defaults (dk 32, dv 64), and with expand_k = 1 (dk = dv = 64);
  // linear attention with 4 heads of 64.
  run(8, 1024, 4, 32, 64, 4, quick ? 3 : 7);
  run(8, 1024, 4, 64, 64, 4, quick ? 3 : 7);
  std::printf("# load average after: %s\n", bench::load_average().c_str());
  return 0;
}
