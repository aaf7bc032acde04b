// The floor under the main job's step (configs/mqar/attention.yaml: 2 attention layers,
// d_model 64, 2 heads, L = 64, batch 64, V = 8192, the head at the 4 labelled positions
// of each sequence): the time of its GEMMs alone, every one at the size a training step
// runs it, with nothing else. Issue 8 asks for the time to 0.99 at half of the time
// when it was filed; a step cannot take less than its GEMMs, so this says how far below
// a given step time the GEMMs allow.
//
//   OMP_NUM_THREADS=2 ./build/bench_mqar_floor [--reps N]
//
// Printed: the GEMMs of one step on one thread (whole batch), and on two threads as a
// batch-parallel step runs them (each thread the GEMMs of 32 sequences, at once), in ms
// and GFLOP/s. The shapes are the step's own (gemm_ld with the leading dimensions the
// fused attention kernel uses); the GEMMs are oneDNN's sgemm, as in the step.
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "bench/bench_machine.h"

namespace {

struct Gemm {
  char ta, tb;
  int64_t M, N, K, lda, ldb, ldc, count;
};

// The GEMMs of one training step on `seqs` sequences (see the file comment).
std::vector<Gemm> step_gemms(int64_t seqs) {
  const int64_t L = 64, D = 64, H = 2, dh = D / H, V = 8192, layers = 2, labelled = 4 * seqs;
  const int64_t rows = seqs * L, heads = seqs * H;
  std::vector<Gemm> g = {
      // Output head (tied embeddings) at the labelled rows: logits, d hidden, d embedding.
      {'N', 'T', labelled, V, D, D, D, V, 1},
      {'N', 'N', labelled, D, V, V, D, D, 1},
      {'T', 'N', V, D, labelled, V, D, D, 1},
  };
  for (int64_t l = 0; l < layers; ++l) {
    const std::vector<Gemm> layer = {
        // qkv and output projections: forward, d input, d weight.
        {'N', 'T', rows, 3 * D, D, D, D, 3 * D, 1},
        {'N', 'N', rows, D, 3 * D, 3 * D, D, D, 1},
        {'T', 'N', 3 * D, D, rows, 3 * D, D, D, 1},
        {'N', 'T', rows, D, D, D, D, D, 1},
        {'N', 'N', rows, D, D, D, D, D, 1},
        {'T', 'N', D, D, rows, D, D, D, 1},
        // Fused attention, one (L x L) block per (sequence, head): forward S and P V;
        // backward S again, dO V^T, dV, dK, dQ.
        {'N', 'T', L, L, dh, 3 * D, 3 * D, L, 2 * heads},  // S = Q K^T, forward and backward
        {'N', 'N', L, dh, L, L, 3 * D, dh, heads},          // acc += P V
        {'N', 'T', L, L, dh, D, 3 * D, L, heads},           // dPd = dO V^T
        {'T', 'N', L, dh, L, L, D, 3 * D, heads},           // dV += Pd^T dO
        {'T', 'N', L, dh, L, L, 3 * D, 3 * D, heads},       // dK += dS^T Q
        {'N', 'N', L, dh, L, L, 3 * D, 3 * D, heads},       // dQ += dS K
    };
    g.insert(g.end(), layer.begin(), layer.end());
  }
  return g;
}

double flops(const std::vector<Gemm>& gs) {
  double f = 0;
  for (const Gemm& g : gs) f += 2.0 * g.M * g.N * g.K * g.count;
  return f;
}

// Operands big enough for every shape, zero-filled (sgemm's speed does not depend on values).
struct Buffers {
  std::vector<float> a, b, c;
  Buffers() : a(8 << 20, 0.01f), b(8 << 20, 0.02f), c(8 << 20, 0.0f) {}
};

void run_all(const std::vector<Gemm>& gs, Buffers& buf) {
  for (const Gemm& g : gs)
    for (int64_t i = 0; i < g.count; ++i)
      dnnl_sgemm(g.ta, g.tb, g.M, g.N, g.K, 1.0f, buf.a.data(), g.lda, buf.b.data(), g.ldb, 0.0f, buf.c.data(), g.ldc);
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 30;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--reps N]\n", argv[0]);
      return 2;
    }
  }
  using namespace seqmix::bench;
  std::printf("bench_mqar_floor: %s; %s; load average %s\n", cpu_summary().c_str(), threads_note().c_str(),
              load_average().c_str());
  const std::vector<Gemm> whole = step_gemms(64), half = step_gemms(32);
  std::printf("GEMM work of one step: %.3f GFLOP\n", flops(whole) / 1e9);

  Buffers one;
  omp_set_num_threads(1);
  const double t1 = median_ms([&] { run_all(whole, one); }, reps, 3);
  std::printf("one thread, batch 64:               %7.2f ms  %6.1f GFLOP/s\n", t1, flops(whole) / t1 / 1e6);

  // Two threads at once, each the GEMMs of half the batch, serial inside the region as
  // in a batch-parallel step: the step's GEMM time is the slower thread's.
  std::vector<Buffers> per_thread(2);
  const double t2 = median_ms(
      [&] {
#pragma omp parallel num_threads(2)
        run_all(half, per_thread[static_cast<size_t>(omp_get_thread_num())]);
      },
      reps, 3);
  std::printf("two threads, batch 32 each at once: %7.2f ms  %6.1f GFLOP/s\n", t2, flops(whole) / t2 / 1e6);
  std::printf("load average after: %s\n", load_average().c_str());
  return 0;
}
