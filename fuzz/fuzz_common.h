// Shared by the libFuzzer targets: a scratch file per process, and the rule that
// bad input may only end in the typed errors a user sees as messages.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>

namespace seqmix::fuzz {

// A file unique to this process (libFuzzer may run jobs in parallel), in memory
// (/dev/shm) where there is one: rewriting a file on a disk, once per input, made
// a disk-backed /tmp (ext4 flushes a truncated-and-rewritten file on close) the
// slowest part of a run on a busy machine.
inline std::string scratch_path(const char* name) {
  struct stat st;
  const std::string dir = ::stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
  return dir + "/seqmix_fuzz_" + std::to_string(::getpid()) + "_" + name;
}

inline void write_bytes(const std::string& path, const uint8_t* data, size_t size) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data),
                                                                static_cast<std::streamsize>(size));
}

// Fuzzed sizes must stay small enough to run thousands of times a second; larger
// ones are the memory estimate's business, which fuzz_config covers.
inline constexpr long double kFuzzMemoryBytes = 64.0L * 1024 * 1024;

}  // namespace seqmix::fuzz
