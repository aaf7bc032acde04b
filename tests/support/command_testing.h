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

}  // namespace seqmix::testing
