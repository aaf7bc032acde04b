// Timing helpers for the benchmark programs: median of repeats after warm-up.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include <omp.h>
#include <time.h>

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

// CPU time of the process in milliseconds: on a shared machine, one thread's CPU time does
// not count the time it was descheduled, as its wall time does.
inline double cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

struct Timing {
  double wall, cpu;  // medians, ms
};

// Median wall and CPU time of `once` after 2 warm-up calls, repeated at least min_reps
// and at most max_reps times, stopping once budget_ms of wall time has been spent.
inline Timing median_wall_cpu(const std::function<void()>& once, int min_reps, int max_reps, double budget_ms) {
  for (int i = 0; i < 2; ++i) once();
  std::vector<double> wall, cpu;
  double spent = 0;
  while (int(wall.size()) < max_reps && (int(wall.size()) < min_reps || spent < budget_ms)) {
    const double c0 = cpu_ms();
    const auto w0 = std::chrono::steady_clock::now();
    once();
    wall.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count());
    cpu.push_back(cpu_ms() - c0);
    spent += wall.back();
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  return {wall[wall.size() / 2], cpu[cpu.size() / 2]};
}

inline std::string threads_note() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  return std::string("OMP_NUM_THREADS=") + (env ? env : "(unset)") + ", omp_get_max_threads()=" +
         std::to_string(omp_get_max_threads());
}

}  // namespace seqmix::bench
