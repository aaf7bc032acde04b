// The gradient allreduce alone (train/distributed.cpp's bucketed MPI_Allreduce), with
// the ranks started together (a barrier-like allreduce of one double first), so the time
// is the transfer and the sum, not one rank waiting for another's backward pass.
//
//   mpirun -np 2 ./build/bench_allreduce [floats ...]
//
// Default sizes: the MQAR benchmark model's gradient (1.2M floats) and GPT-2 124M's
// (124.5M floats). Prints, from rank 0, the median time of 5 repeats after one warm-up,
// and the bus bandwidth (2 (N-1)/N x bytes / time, the data each rank sends and receives in
// a ring allreduce).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "train/distributed.h"

using namespace seqmix;

int main(int argc, char** argv) {
  DistributedSession mpi(&argc, &argv);
  std::vector<int64_t> sizes;
  for (int i = 1; i < argc; ++i) sizes.push_back(std::atoll(argv[i]));
  if (sizes.empty()) sizes = {1214208, 124475904};
  const int n = world_size();
  if (n < 2) {
    std::fprintf(stderr, "bench_allreduce: run it under mpirun -np 2 (or more)\n");
    return mpi.finish(2);
  }
  for (const int64_t floats : sizes) {
    std::vector<float> data(static_cast<size_t>(floats), 1.0f);
    std::vector<double> ms;
    for (int rep = 0; rep < 6; ++rep) {
      double sync = 0;
      allreduce_sum(&sync, 1);
      const auto t0 = std::chrono::steady_clock::now();
      allreduce_sum(data.data(), floats);
      const double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (rep > 0) ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    const double med = ms[ms.size() / 2];
    const double bytes = 4.0 * static_cast<double>(floats);
    if (world_rank() == 0)
      std::printf("allreduce %lld floats (%.1f MB) on %d ranks: %.2f ms (median of %zu), bus bandwidth %.2f GB/s\n",
                  static_cast<long long>(floats), bytes / 1e6, n, med, ms.size(),
                  2.0 * (n - 1) / n * bytes / (med * 1e-3) / 1e9);
  }
  return mpi.finish(0);
}
