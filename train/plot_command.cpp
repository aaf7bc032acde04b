#include "train/plot_command.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace seqmix {

namespace fs = std::filesystem;

std::string find_plot_package(const PlotLocations& where) {
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("SEQMIX_PYTHON_DIR")) candidates.emplace_back(env);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) exe = fs::absolute(where.argv0, ec);
  if (!exe.empty()) {
    candidates.push_back(exe.parent_path().parent_path() / "python");
    candidates.push_back(exe.parent_path().parent_path() / "share" / "seqmix" / "python");
  }
  if (!where.source_python_dir.empty()) candidates.emplace_back(where.source_python_dir);
  std::ostringstream looked;
  for (const fs::path& c : candidates) {
    if (fs::is_regular_file(c / "seqmix_plot" / "__main__.py", ec)) return c.string();
    looked << "\n  " << (c / "seqmix_plot").string();
  }
  throw std::runtime_error("cannot find the plotting package seqmix_plot; looked in:" + looked.str() +
                           "\nset SEQMIX_PYTHON_DIR to the directory that holds seqmix_plot/ (python/ in the source tree)");
}

std::string find_python() {
  if (const char* env = std::getenv("SEQMIX_PYTHON")) {
    if (access(env, X_OK) != 0) throw std::runtime_error(std::string("SEQMIX_PYTHON=") + env + " is not an executable file");
    return env;
  }
  // Debian's interpreter first: python3-matplotlib is installed for it, not for another
  // python3 that may come first on PATH.
  if (access("/usr/bin/python3", X_OK) == 0) return "/usr/bin/python3";
  if (const char* path = std::getenv("PATH")) {
    std::stringstream ss(path);
    for (std::string dir; std::getline(ss, dir, ':');) {
      const fs::path p = fs::path(dir.empty() ? "." : dir) / "python3";
      if (access(p.c_str(), X_OK) == 0) return p.string();
    }
  }
  throw std::runtime_error("seqmix plot needs python3 with matplotlib, and no python3 was found "
                           "(/usr/bin/python3 or on PATH); on Debian: apt-get install python3-matplotlib");
}

int cmd_plot(const std::vector<std::string>& args, const PlotLocations& where) {
  const std::string package_dir = find_plot_package(where);
  const std::string python = find_python();
  std::vector<std::string> argv_s = {python, "-m", "seqmix_plot"};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (std::string& s : argv_s) cargv.push_back(s.data());
  cargv.push_back(nullptr);
  // The package goes first on PYTHONPATH; the user's entries stay after it.
  std::vector<std::string> env_s;
  std::string pythonpath = package_dir;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    if (kv.rfind("PYTHONPATH=", 0) == 0) {
      if (kv.size() > 11) pythonpath.append(":").append(kv, 11, std::string::npos);
    } else {
      env_s.push_back(kv);
    }
  }
  env_s.push_back("PYTHONPATH=" + pythonpath);
  std::vector<char*> cenv;
  for (std::string& s : env_s) cenv.push_back(s.data());
  cenv.push_back(nullptr);
  pid_t pid;
  const int rc = posix_spawn(&pid, python.c_str(), nullptr, nullptr, cargv.data(), cenv.data());
  if (rc != 0) throw std::runtime_error("cannot start " + python + ": " + std::strerror(rc));
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("waiting for ") + python + ": " + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  throw std::runtime_error(python + " -m seqmix_plot was killed by signal " + std::to_string(WTERMSIG(status)));
}

}  // namespace seqmix
