// Timing helpers for the benchmark programs: median of repeats after warm-up.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <omp.h>

namespace seqmix::bench {

// Median wall time in milliseconds of `repeats` calls of f after `warmup` calls.
inline double median_ms(const std::function<void()>& f, int repeats, int warmup = 1) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

inline std::string threads_note() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  return std::string("OMP_NUM_THREADS=") + (env ? env : "(unset)") + ", omp_get_max_threads()=" +
         std::to_string(omp_get_max_threads());
}

}  // namespace seqmix::bench
