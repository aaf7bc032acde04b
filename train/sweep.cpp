#include "train/sweep.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <yaml-cpp/yaml.h>

#include "train/config.h"

extern char** environ;

namespace seqmix {

namespace fs = std::filesystem;

namespace {

std::string where(const std::string& path, const YAML::Node& n) {
  return path + ":" + std::to_string(n.Mark().line + 1);
}

std::string leaf(const std::string& key) {
  auto p = key.rfind('.');
  return p == std::string::npos ? key : key.substr(p + 1);
}

// Directory names keep letters, digits and . _ = , - ; anything else becomes '_'.
std::string sanitize(const std::string& s) {
  std::string o;
  for (char c : s) o += (std::isalnum(static_cast<unsigned char>(c)) || std::string("._=,-").find(c) != std::string::npos) ? c : '_';
  return o;
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string last_line_of(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

struct Job {
  pid_t pid;
  size_t index;
  std::chrono::steady_clock::time_point start;
};

}  // namespace

SweepSpec load_sweep(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (!root.IsMap()) throw ConfigError(path + ": a sweep is a mapping with keys base, grid and optionally set");
  SweepSpec spec;
  for (const auto& kv : root) {
    const std::string key = kv.first.as<std::string>();
    if (key != "base" && key != "grid" && key != "set")
      throw ConfigError(where(path, kv.first) + ": unknown key '" + key + "' in the sweep; valid keys are: base, grid, set");
  }
  if (!root["base"] || !root["base"].IsScalar()) throw ConfigError(path + ": 'base' (the base config file) is required");
  fs::path base = root["base"].as<std::string>();
  if (base.is_relative()) base = fs::path(path).parent_path() / base;
  if (!fs::exists(base)) throw ConfigError(where(path, root["base"]) + ": base config '" + base.string() + "' does not exist");
  spec.base_config = base.string();
  const YAML::Node grid = root["grid"];
  if (!grid || !grid.IsMap() || grid.size() == 0)
    throw ConfigError(path + ": 'grid' must map config keys to lists of values");
  for (const auto& kv : grid) {
    const std::string key = kv.first.as<std::string>();
    if (!kv.second.IsSequence() || kv.second.size() == 0)
      throw ConfigError(where(path, kv.second) + ": grid." + key + " must be a non-empty list");
    std::vector<std::string> vals;
    for (const auto& v : kv.second) {
      if (!v.IsScalar()) throw ConfigError(where(path, v) + ": grid." + key + " values must be scalars");
      vals.push_back(v.as<std::string>());
    }
    spec.keys.push_back(key);
    spec.values.push_back(vals);
  }
  if (root["set"]) {
    if (!root["set"].IsSequence()) throw ConfigError(where(path, root["set"]) + ": 'set' must be a list of key=value");
    for (const auto& v : root["set"]) spec.common_overrides.push_back(v.as<std::string>());
  }
  // Every point must be a valid config: check them all before running anything.
  for (const SweepPoint& p : expand_grid(spec)) {
    std::vector<std::string> ov = spec.common_overrides;
    for (const auto& [k, v] : p.values) ov.push_back(k + "=" + v);
    try {
      load_config(spec.base_config, ov);
    } catch (const ConfigError& e) {
      throw ConfigError(path + ": run " + p.name + " has an invalid config:\n" + e.what());
    }
  }
  return spec;
}

std::vector<SweepPoint> expand_grid(const SweepSpec& spec) {
  std::vector<SweepPoint> points(1);
  for (size_t k = 0; k < spec.keys.size(); ++k) {
    std::vector<SweepPoint> next;
    for (const SweepPoint& p : points)
      for (const std::string& v : spec.values[k]) {
        SweepPoint q = p;
        q.values.emplace_back(spec.keys[k], v);
        next.push_back(q);
      }
    points = std::move(next);
  }
  for (SweepPoint& p : points) {
    std::string name;
    for (const auto& [k, v] : p.values) name += (name.empty() ? "" : ",") + leaf(k) + "=" + v;
    p.name = sanitize(name);
  }
  return points;
}

int cmd_sweep(const SweepArgs& args, const std::string& binary_arg) {
  // argv[0] may be a bare name found on PATH; the kernel knows the real file.
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const std::string binary = ec ? binary_arg : self.string();
  const SweepSpec spec = load_sweep(args.sweep_path);
  const std::vector<SweepPoint> points = expand_grid(spec);
  const fs::path dir = args.out_dir.empty() ? fs::path("runs") / fs::path(args.sweep_path).stem() : fs::path(args.out_dir);
  fs::create_directories(dir);
  std::cout << "sweep: " << points.size() << " runs in " << dir.string() << " (" << args.jobs << " at a time)" << std::endl;

  // Children share the cores: unless the user chose, each gets cores / jobs threads.
  const char* user_threads = std::getenv("OMP_NUM_THREADS");
  const long cores = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  const std::string threads = user_threads ? user_threads : std::to_string(std::max(1L, cores / args.jobs));

  std::vector<std::string> status(points.size(), "pending");
  std::vector<Job> running;
  size_t next = 0;
  int failures = 0;
  auto launch = [&](size_t i) {
    const fs::path run = dir / points[i].name;
    fs::create_directories(run);
    std::vector<std::string> argv_s = {binary, "train"};
    if (fs::exists(run / "checkpoint.h5")) {
      argv_s.insert(argv_s.end(), {"--resume", run.string()});
    } else {
      argv_s.push_back(spec.base_config);
      for (const std::string& o : spec.common_overrides) argv_s.insert(argv_s.end(), {"--set", o});
      for (const auto& [k, v] : points[i].values) argv_s.insert(argv_s.end(), {"--set", k + "=" + v});
      argv_s.insert(argv_s.end(), {"--out", run.string()});
    }
    std::vector<char*> cargv;
    for (std::string& s : argv_s) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e)
      if (std::string(*e).rfind("OMP_NUM_THREADS=", 0) != 0) env_s.push_back(*e);
    env_s.push_back("OMP_NUM_THREADS=" + threads);
    std::vector<char*> cenv;
    for (std::string& s : env_s) cenv.push_back(s.data());
    cenv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = (run / "log.txt").string();
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, binary.c_str(), &fa, nullptr, cargv.data(), cenv.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start " + binary + ": " + std::strerror(rc));
    running.push_back(Job{pid, i, std::chrono::steady_clock::now()});
    std::cout << "[" << i + 1 << "/" << points.size() << "] started " << points[i].name << std::endl;
  };

  for (size_t i = 0; i < points.size(); ++i)
    if (fs::exists(dir / points[i].name / "result.json")) {
      status[i] = "done";
      std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": finished before, skipped" << std::endl;
    }
  while (true) {
    while (static_cast<int64_t>(running.size()) < args.jobs && next < points.size()) {
      if (status[next] == "pending") launch(next);
      ++next;
    }
    if (running.empty()) break;
    int wstatus = 0;
    pid_t done = waitpid(-1, &wstatus, 0);
    if (done < 0) break;
    for (size_t j = 0; j < running.size(); ++j) {
      if (running[j].pid != done) continue;
      const size_t i = running[j].index;
      const bool ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 && fs::exists(dir / points[i].name / "result.json");
      status[i] = ok ? "done" : "failed";
      if (!ok) ++failures;
      std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": "
                << (ok ? "done" : "FAILED: " + last_line_of(dir / points[i].name / "log.txt")) << std::endl;
      running.erase(running.begin() + static_cast<long>(j));
      break;
    }
  }

  // results.csv: one row per run in grid order.
  std::ofstream csv(dir / "results.csv");
  csv << "run";
  for (const std::string& k : spec.keys) csv << "," << csv_escape(k);
  csv << ",status,best_valid_accuracy,final_train_loss,final_valid_loss,parameters,state_size,wall_s\n";
  for (size_t i = 0; i < points.size(); ++i) {
    csv << csv_escape(points[i].name);
    for (const auto& [k, v] : points[i].values) csv << "," << csv_escape(v);
    const fs::path result = dir / points[i].name / "result.json";
    if (status[i] == "done" && fs::exists(result)) {
      nlohmann::json j = nlohmann::json::parse(std::ifstream(result));
      csv << ",done," << j["best_valid_accuracy"].get<double>() << "," << j["final_train_loss"].get<double>() << ","
          << j["final_valid_loss"].get<double>() << "," << j["parameters"].get<int64_t>() << ","
          << j["state_size"].get<int64_t>() << "," << j["wall_s"].get<double>() << "\n";
    } else {
      csv << ",failed,,,,,,\n";
    }
  }
  csv.close();
  std::cout << "results: " << (dir / "results.csv").string() << " (" << points.size() - failures << " done, "
            << failures << " failed)" << std::endl;
  return failures == 0 ? 0 : 1;
}

}  // namespace seqmix
