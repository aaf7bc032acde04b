#include "tests/support/command_testing.h"

#include <sys/wait.h>

#include <cstdio>

namespace seqmix::testing {

CommandResult run_command(const std::string& command_line) {
  FILE* p = popen(command_line.c_str(), "r");
  if (!p) return {-1, ""};
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace seqmix::testing
