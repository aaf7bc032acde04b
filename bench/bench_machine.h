// What a benchmark prints about the machine it ran on, so that a figure can be
// read later: CPU model and SIMD flags, load average (the machine is shared),
// peak resident memory of this process.
#pragma once

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

namespace seqmix::bench {

// "model name" and the SIMD-relevant flags (avx*, fma, f16c, amx*) of the first CPU.
inline std::string cpu_summary() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model, flags;
  while (std::getline(in, line) && (model.empty() || flags.empty())) {
    auto value = [&] { return line.substr(line.find(':') + 2); };
    if (model.empty() && line.rfind("model name", 0) == 0) model = value();
    if (flags.empty() && line.rfind("flags", 0) == 0) flags = value();
  }
  std::set<std::string> kept;
  std::istringstream fs(flags);
  for (std::string f; fs >> f;)
    if (f.rfind("avx", 0) == 0 || f == "fma" || f == "f16c" || f.rfind("amx", 0) == 0) kept.insert(f);
  std::string out = model.empty() ? "unknown CPU" : model;
  out += "; flags:";
  for (const auto& f : kept) out += " " + f;
  return out;
}

inline std::string load_average() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "unavailable";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f %.2f %.2f", l[0], l[1], l[2]);
  return buf;
}

// Peak resident set of this process so far, in MiB (Linux reports ru_maxrss in KiB).
inline double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_maxrss) / 1024.0;
}

}  // namespace seqmix::bench
