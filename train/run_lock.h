// One writer per run directory: `seqmix train` holds an exclusive flock(2) on
// <dir>/.seqmix.lock for as long as it runs. A second writer is refused at once
// with the first one's pid. The lock is released by the kernel when the process
// ends, however it ends (kill -9 included), so a stale lock file is harmless.
#pragma once

#include <stdexcept>
#include <string>

namespace seqmix {

struct RunLockError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class RunLock {
 public:
  // Creates dir if needed and takes the lock; throws RunLockError naming the
  // directory and the pid holding it, or the OS error.
  explicit RunLock(const std::string& dir);
  ~RunLock();
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace seqmix
