// Helpers for the tests of files, messages and commands: a scratch directory per test, and
// the message of an expected error.
#pragma once

#include <exception>
#include <filesystem>
#include <string>

namespace seqmix::testing {

// <temp>/seqmix_<suite>_<pid>_<name>, emptied of an earlier run's files; created when
// `create` (a run directory that the trainer itself must create is left absent).
std::filesystem::path scratch_dir(const std::string& suite, const std::string& name, bool create = true);

bool contains(const std::string& text, const std::string& part);

// The message of the E that f throws, or "" when it throws nothing.
template <class E = std::exception, class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

}  // namespace seqmix::testing
