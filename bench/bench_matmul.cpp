// The oneDNN matmul wrapper (core/gemm.h: cached matmul primitives, transposes
// through strides) against raw dnnl_sgemm on the same shapes, in one run so the
// ratio is meaningful on a shared machine. Shapes are those of seqmix layers.
//   OMP_NUM_THREADS=2 ./build/bench_matmul
#include <oneapi/dnnl/dnnl.h>

#include <cstdio>

#include "bench/bench_common.h"
#include "core/gemm.h"
#include "core/random.h"

using namespace seqmix;

int main() {
  std::printf("# matmul: seqmix gemm (oneDNN matmul primitive) vs raw dnnl_sgemm; %s\n", bench::threads_note().c_str());
  std::printf("%-34s %10s %10s %8s %9s\n", "shape (M x N x K, transposes)", "seqmix ms", "sgemm ms", "ratio", "GFLOP/s");
  struct Case {
    int64_t M, N, K;
    bool ta, tb;
    const char* what;
  };
  const Case cases[] = {
      {8192, 768, 256, false, true, "Wqkv forward (B*L=8k)"},
      {8192, 256, 768, false, false, "Wqkv backward dx"},
      {768, 256, 8192, true, false, "Wqkv backward dW"},
      {16384, 128, 128, false, true, "MQAR d=128 proj"},
      {2048, 8192, 128, false, true, "head, 2k labelled rows"},
      {1000, 999, 67, false, false, "odd sizes"},
      {64, 64, 64, true, true, "small, both transposed"},
  };
  Generator gen(1);
  for (const Case& c : cases) {
    std::vector<float> A(c.M * c.K), B(c.K * c.N), C(c.M * c.N);
    for (auto& x : A) x = float(gen.uniform(-1, 1));
    for (auto& x : B) x = float(gen.uniform(-1, 1));
    const int reps = c.M * c.N * c.K > 100000000 ? 10 : 50;
    const double ours = bench::median_ms([&] { gemm(GemmShape{1, c.M, c.N, c.K, c.ta, c.tb}, A.data(), B.data(), C.data(), false); }, reps, 3);
    const double raw = bench::median_ms(
        [&] {
          dnnl_sgemm(c.ta ? 'T' : 'N', c.tb ? 'T' : 'N', c.M, c.N, c.K, 1.0f, A.data(), c.ta ? c.M : c.K, B.data(),
                     c.tb ? c.K : c.N, 0.0f, C.data(), c.N);
        },
        reps, 3);
    char shape[64];
    std::snprintf(shape, sizeof shape, "%lldx%lldx%lld %s%s", (long long)c.M, (long long)c.N, (long long)c.K,
                  c.ta ? "T" : "N", c.tb ? "T" : "N");
    std::printf("%-34s %10.3f %10.3f %8.2f %9.1f   %s\n", shape, ours, raw, ours / raw,
                2.0 * c.M * c.N * c.K / (ours * 1e6), c.what);
  }
  return 0;
}
