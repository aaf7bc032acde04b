// The mixers of issue 9's long-context targets, measured one piece at a time so that
// bench/compare_mixers_torch.sh can interleave them with PyTorch's runs:
//   layers  forward+backward of one layer (attention, linear_attention, h3 by default)
//           at B=8, L=1024, D=256;
//   kernel  the fused attention core alone (B=8, L=1024, H=4, dh=64), its GFLOP/s
//           beside raw dnnl_sgemm's on the shapes it is made of, in the same run;
//   decode  attention's decode step, batch 1, D=256, after 1k and 4k tokens of context.
//   OMP_NUM_THREADS=2 ./build/bench_attention [layers|kernel|decode]... [--mixers a,b]
//       [--reps N] [--heads H] [--ctx 1024,4096]
// With no section named, all three run.
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <utility>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "bench/bench_machine.h"
#include "core/ops.h"
#include "core/tape.h"
#include "layers/attention_kernel.h"
#include "layers/mixer_factory.h"
#include "layers/mixer_registry.h"

using namespace seqmix;

namespace {

struct Args {
  std::vector<std::string> sections, mixers{"attention", "linear_attention", "h3"};
  std::vector<int64_t> ctx{1024, 4096};
  int reps = 5;
  int64_t heads = 4;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

Tensor random_tensor(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(g.uniform(-1, 1));
  return t;
}

MixerOptions options(const std::string& type, int64_t heads) {
  MixerOptions m;
  m.type = type;
  m.attention.num_heads = heads;
  m.linear_attention.num_heads = heads;
  return m;
}

void layers(const Args& a) {
  const int64_t B = 8, L = 1024, D = 256;
  std::printf("\n## layer forward+backward, B=%lld L=%lld D=%lld, heads %lld, median of %d\n", (long long)B,
              (long long)L, (long long)D, (long long)a.heads, a.reps);
  for (const std::string& type : a.mixers) {
    Generator g(1);
    auto mixer = make_mixer(options(type, a.heads), D, LayerInit{&g, 2, DType::f32});
    Tensor x = random_tensor({B, L, D}, g);
    x.set_requires_grad(true);
    Generator drop(0);
    NamedTensors ps;
    mixer->named_parameters("", ps);
    const double ms = bench::median_ms(
        [&] {
          Tensor y = mixer->forward(x, true, drop);
          backward(sum(y));
          x.zero_grad();
          for (auto& [n, p] : ps) p.zero_grad();
        },
        a.reps);
    std::printf("layer %-18s %10.1f ms %12.0f tokens/s\n", type.c_str(), ms, B * L / (ms / 1e3));
  }
}

// CPU time of the process: on a loaded machine, tokens per CPU-second (with one thread)
// tell two versions of a kernel apart where wall time cannot.
double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Median over repeats of (wall ms, CPU ms of the process) after one warm-up call.
std::pair<double, double> wall_and_cpu_ms(const std::function<void()>& f, int repeats) {
  f();
  std::vector<double> w, c;
  for (int i = 0; i < repeats; ++i) {
    const double c0 = cpu_seconds();
    const auto a = std::chrono::steady_clock::now();
    f();
    w.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
    c.push_back(1e3 * (cpu_seconds() - c0));
  }
  std::sort(w.begin(), w.end());
  std::sort(c.begin(), c.end());
  return {w[w.size() / 2], c[c.size() / 2]};
}

// Raw dnnl_sgemm on the block shapes the fused kernel issues, n_calls of them spread over
// the threads as the kernel spreads its tasks; returns GFLOP/s.
std::pair<double, double> sgemm_gflops(char ta, char tb, int64_t M, int64_t N, int64_t K, int64_t n_calls,
                                       int reps) {
  const int nt = omp_get_max_threads();
  std::vector<std::vector<float>> A(nt), Bm(nt), C(nt);
  for (int t = 0; t < nt; ++t) {
    A[t].assign(M * K, 0.5f);
    Bm[t].assign(K * N, 0.25f);
    C[t].assign(M * N, 0.f);
  }
  const auto [wall, cpu] = wall_and_cpu_ms(
      [&] {
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < n_calls; ++c) {
          const int t = omp_get_thread_num();
          const int64_t lda = ta == 'N' ? K : M, ldb = tb == 'N' ? N : K;
          dnnl_sgemm(ta, tb, M, N, K, 1.f, A[t].data(), lda, Bm[t].data(), ldb, 1.f, C[t].data(), N);
        }
      },
      reps);
  const double flops = 2.0 * M * N * K * n_calls;
  return {flops / (wall * 1e6), flops / (cpu * 1e6)};
}

void kernel(const Args& a) {
  const int64_t B = 8, L = 1024, H = a.heads, D = 256, dh = D / H;
  Generator g(2);
  Tensor qkv = random_tensor({B, L, 3 * D}, g);
  qkv.set_requires_grad(true);
  Generator drop(0);
  // Multiply-adds of the causal products (the L (L + 1) / 2 visible pairs): two GEMMs in the
  // forward (scores, P V), five in the backward (scores again, dP, dV, dK, dQ).
  const double pairs = double(B) * H * L * (L + 1) / 2;
  const double fwd_flops = 2.0 * 2 * pairs * dh, bwd_flops = 2.0 * 5 * pairs * dh;
  const auto [fwd, fwd_cpu] = wall_and_cpu_ms(
      [&] {
        NoGradGuard ng;
        causal_attention(qkv, H, 0.0, drop);
      },
      a.reps);
  const auto [both, both_cpu] = wall_and_cpu_ms(
      [&] {
        Tensor o = causal_attention(qkv, H, 0.0, drop);
        backward(sum(o));
        qkv.zero_grad();
      },
      a.reps);
  // GFLOP/s per wall second, and per CPU second of the process (what the kernel gets out of
  // the cycles it is given: on a loaded machine the two differ; with several threads the
  // CPU time includes OpenMP's waiting).
  std::printf("\n## fused attention core, B=%lld L=%lld H=%lld dh=%lld (causal FLOPs only; GFLOP/s per wall s, per CPU s)\n",
              (long long)B, (long long)L, (long long)H, (long long)dh);
  std::printf("kernel forward          %8.1f ms %8.1f GFLOP/s %8.1f GFLOP/cpu-s\n", fwd, fwd_flops / (fwd * 1e6),
              fwd_flops / (fwd_cpu * 1e6));
  std::printf("kernel forward+backward %8.1f ms %8.1f GFLOP/s %8.1f GFLOP/cpu-s\n", both,
              (fwd_flops + bwd_flops) / (both * 1e6), (fwd_flops + bwd_flops) / (both_cpu * 1e6));
  // The kernel's products: scores Q K^T (bq x dh)(dh x bk), P V (bq x bk)(bk x dh), as raw
  // sgemm calls on matching blocks, and one head's dense scores as a single large call.
  const int64_t bq = attention_block_rows(), calls = B * H * (L / bq) * (L / bq + 1) / 2;
  auto row = [&](const char* what, char ta, char tb, int64_t M, int64_t N, int64_t K, int64_t n) {
    const auto [w, c] = sgemm_gflops(ta, tb, M, N, K, n, a.reps);
    std::printf("raw dnnl_sgemm %-28s %lldx%lldx%lld %c,%c %8.1f GFLOP/s %8.1f GFLOP/cpu-s\n", what, (long long)M,
                (long long)N, (long long)K, ta, tb, w, c);
  };
  row("scores block", 'N', 'T', bq, bq, dh, calls);
  row("P V block", 'N', 'N', bq, dh, bq, calls);
  row("one head, dense", 'N', 'T', L, L, dh, B * H);
}

void decode(const Args& a) {
  const int64_t D = 256;
  std::printf("\n## attention decode, batch 1, D=%lld, heads %lld (tokens/s, best and median of 10 chunks of 10 steps)\n",
              (long long)D, (long long)a.heads);
  Generator g(5);
  auto mixer = make_mixer(options("attention", a.heads), D, LayerInit{&g, 2, DType::f32});
  Tensor x = random_tensor({1, D}, g);
  for (int64_t ctx : a.ctx) {
    auto state = mixer->init_state(1);
    for (int64_t t = 0; t < ctx; ++t) mixer->step(*state, x);
    std::vector<double> rate, cpu_rate;
    // 100 steps in all: the context grows by 10% at 1k while measured.
    const int chunks = 10, steps = 10;
    for (int c = 0; c < chunks; ++c) {
      const double c0 = cpu_seconds();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < steps; ++i) mixer->step(*state, x);
      rate.push_back(steps / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      cpu_rate.push_back(steps / (cpu_seconds() - c0));
    }
    std::sort(rate.begin(), rate.end());
    std::sort(cpu_rate.begin(), cpu_rate.end());
    std::printf("decode attention ctx %6lld %10.0f tok/s best %10.0f tok/s median %10.0f tok/cpu-s median\n",
                (long long)ctx, rate.back(), rate[rate.size() / 2], cpu_rate[cpu_rate.size() / 2]);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_attention: %s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "layers" || k == "kernel" || k == "decode") a.sections.push_back(k);
    else if (k == "--mixers") a.mixers = split(value());
    else if (k == "--reps") a.reps = std::stoi(value());
    else if (k == "--heads") a.heads = std::stoll(value());
    else if (k == "--ctx") {
      a.ctx.clear();
      for (const auto& c : split(value())) a.ctx.push_back(std::stoll(c));
    } else {
      std::fprintf(stderr,
                   "usage: bench_attention [layers|kernel|decode]... [--mixers a,b] [--reps N] [--heads H] "
                   "[--ctx 1024,4096]\n");
      return 2;
    }
  }
  if (a.sections.empty()) a.sections = {"layers", "kernel", "decode"};
  std::printf("# bench_attention; %s; %s; load %s\n", bench::threads_note().c_str(), bench::cpu_summary().c_str(),
              bench::load_average().c_str());
  for (const auto& s : a.sections) {
    if (s == "layers") layers(a);
    if (s == "kernel") kernel(a);
    if (s == "decode") decode(a);
  }
  return 0;
}
