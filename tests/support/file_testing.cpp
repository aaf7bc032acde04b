#include "tests/support/file_testing.h"

#include <unistd.h>

namespace seqmix::testing {

std::filesystem::path scratch_dir(const std::string& suite, const std::string& name, bool create) {
  namespace fs = std::filesystem;
  const fs::path d = fs::temp_directory_path() / ("seqmix_" + suite + "_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  if (create) fs::create_directories(d);
  return d;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace seqmix::testing
