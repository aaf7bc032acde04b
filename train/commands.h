// The seqmix subcommands, callable from the CLI and from tests. Each returns the
// process exit code (0 only on success) and reports problems on stderr with the
// file, key or argument at fault.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "train/generate.h"

namespace seqmix {

struct TrainArgs {
  std::string config_path;            // empty with --resume
  std::vector<std::string> overrides;  // --set a.b=c
  std::string out_dir;                 // default: runs/<config file stem>
  std::string resume_dir;              // --resume DIR
  std::string init_from;               // --init-from CKPT: its weights, a fresh optimizer
};

struct EvalArgs {
  std::string checkpoint;
  std::vector<std::string> overrides;
};

struct SampleArgs {
  std::string checkpoint;
  std::string prompt;
  SampleOptions options;
};

int cmd_train(const TrainArgs& args);
int cmd_eval(const EvalArgs& args, std::ostream& out);
int cmd_info(const std::string& checkpoint, std::ostream& out);
int cmd_sample(const SampleArgs& args, std::ostream& out);

// Runs f, turning every expected error into a message on stderr and exit code 1.
int report_errors(const std::string& command, const std::function<int()>& f);

}  // namespace seqmix
