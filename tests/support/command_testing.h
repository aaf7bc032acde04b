// Running a shell command from a test: its exit code and what it printed on stdout
// (callers redirect stderr into it, or into a file, in the command line).
#pragma once

#include <string>

namespace seqmix::testing {

struct CommandResult {
  int code;         // exit status, or -1 if the command did not exit normally
  std::string out;  // everything the command wrote to stdout
};

CommandResult run_command(const std::string& command_line);

#ifdef SEQMIX_BINARY
// `seqmix <args>` with stderr folded into out (SEQMIX_BINARY is the program the test
// target was built with).
inline CommandResult run_seqmix(const std::string& args) {
  return run_command(std::string(SEQMIX_BINARY) + " " + args + " 2>&1");
}
#endif

}  // namespace seqmix::testing
