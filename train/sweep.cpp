#include "train/sweep.h"

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <yaml-cpp/yaml.h>

#include "train/config.h"
#include "train/sweep_collect.h"
#include "train/sweep_progress.h"
#include "train/sweep_shard.h"
#include "train/trainer.h"

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

// "a.b, c.d" -> {"a.b", "c.d"}: the keys of one grid axis.
std::vector<std::string> split_keys(const std::string& name) {
  std::vector<std::string> keys;
  std::stringstream ss(name);
  for (std::string k; std::getline(ss, k, ',');) {
    const auto b = k.find_first_not_of(" \t");
    const auto e = k.find_last_not_of(" \t");
    if (b == std::string::npos) return {};
    keys.push_back(k.substr(b, e - b + 1));
  }
  return keys;
}

std::string last_line_of(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

// results.csv (or a shard's results.shard-I-of-N.csv): one row per run in grid order,
// written to a temporary file and renamed so that a reader never sees half a file.
// status is done | failed | running | pending.
void write_results(const fs::path& dir, const std::string& file, const SweepSpec& spec,
                   const std::vector<SweepPoint>& points, const std::vector<std::string>& status) {
  const fs::path path = dir / file;
  const fs::path tmp = dir / (file + ".tmp");
  {
    std::ofstream csv(tmp);
    csv << results_csv_header(spec) << "\n";
    for (size_t i = 0; i < points.size(); ++i) {
      csv << csv_escape(points[i].name);
      for (const auto& [k, v] : points[i].values) csv << "," << csv_escape(v);
      const fs::path result = dir / points[i].name / "result.json";
      nlohmann::json j;
      bool ok = status[i] == "done" && fs::exists(result);
      if (ok) {
        try {
          j = nlohmann::json::parse(std::ifstream(result));
          // Read every field before writing any, so that a bad file cannot leave half a row.
          const double best = j.at("best_valid_accuracy").get<double>();
          const double train_loss = j.at("final_train_loss").get<double>();
          const double valid_loss = j.at("final_valid_loss").get<double>();
          const int64_t params = j.at("parameters").get<int64_t>();
          const int64_t state = j.at("state_size").get<int64_t>();
          const double wall = j.at("wall_s").get<double>();
          const int64_t steps = j.value("steps", int64_t{0});
          const double final_acc = j.value("final_valid_accuracy", 0.0);
          const bool early = j.value("early_stopped", false);
          // The state is float32: 4 bytes per number (the Based paper's x axis is bytes).
          csv << ",done," << best << "," << train_loss << "," << valid_loss << "," << params << "," << state << ","
              << wall << "," << state * int64_t(sizeof(float)) << "," << steps << "," << final_acc << ","
              << (early ? 1 : 0) << "\n";
        } catch (const nlohmann::json::exception& e) {
          std::cerr << "sweep: " << result.string() << " is unreadable (" << e.what() << "); the run counts as failed\n";
          ok = false;
        }
      }
      if (!ok) csv << "," << (status[i] == "done" ? "failed" : status[i]) << ",,,,,,,,,,\n";
    }
  }
  fs::rename(tmp, path);
}

// wall_s of a result.json; 0 for an unreadable one (results.csv reports it).
double recorded_wall_s(const fs::path& result) {
  try {
    return nlohmann::json::parse(std::ifstream(result)).value("wall_s", 0.0);
  } catch (const nlohmann::json::exception&) {
    return 0.0;
  }
}

// How a point's directory stands before the sweep starts it.
enum class RunDir { ready, in_use, moved_aside };

// A directory another process trains in (it holds the flock of train/run_lock.h) is
// left to it. One that an earlier attempt left with metrics.jsonl but neither a
// checkpoint to resume nor a result (the run failed, or was killed before its first
// checkpoint) would be refused by `seqmix train`, which does not append a new run to an
// old one's metrics: it is renamed RUN.failed, replacing an older one, so that its log
// stays readable, and the point starts afresh. The lock is held during the rename so
// that no `seqmix train` starts in the directory meanwhile.
RunDir prepare_run_dir(const fs::path& run) {
  if (!fs::exists(run)) return RunDir::ready;
  const int fd = ::open((run / ".seqmix.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return RunDir::ready;  // seqmix train reports why it cannot lock
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const bool busy = errno == EWOULDBLOCK;
    ::close(fd);
    return busy ? RunDir::in_use : RunDir::ready;
  }
  RunDir state = RunDir::ready;
  if (fs::exists(run / "metrics.jsonl") && !fs::exists(run / "checkpoint.h5") && !fs::exists(run / "result.json")) {
    fs::path aside = run;
    aside += ".failed";
    fs::remove_all(aside);
    fs::rename(run, aside);
    state = RunDir::moved_aside;
  }
  ::close(fd);
  return state;
}

struct Job {
  pid_t pid;
  size_t index;
  std::chrono::steady_clock::time_point start;
  bool resumed;  // continued from a checkpoint: this session saw only part of the run
};

}  // namespace

SweepSpec load_sweep(const std::string& path, const std::vector<std::string>& extra_overrides) {
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
    const std::string name = kv.first.as<std::string>();
    SweepAxis axis;
    axis.keys = split_keys(name);
    if (axis.keys.empty()) throw ConfigError(where(path, kv.first) + ": empty grid key '" + name + "'");
    if (!kv.second.IsSequence() || kv.second.size() == 0)
      throw ConfigError(where(path, kv.second) + ": grid." + name + " must be a non-empty list");
    const size_t n = axis.keys.size();
    // One grid value: a scalar, or null (~) for "leave this key unset in this row".
    auto value = [&](const YAML::Node& x) -> std::string {
      if (x.IsNull()) return kGridUnset;
      if (!x.IsScalar()) throw ConfigError(where(path, x) + ": grid." + name + " values must be scalars");
      const std::string s = x.as<std::string>();
      if (s == kGridUnset)
        throw ConfigError(where(path, x) + ": grid." + name +
                          " has an empty value; write null (or ~) to leave the key unset in a row");
      return s;
    };
    for (const auto& v : kv.second) {
      std::vector<std::string> tuple;
      if (n == 1) {
        tuple.push_back(value(v));
      } else {
        if (!v.IsSequence() || v.size() != n)
          throw ConfigError(where(path, v) + ": grid." + name + " names " + std::to_string(n) +
                            " keys, so each value must be a list of " + std::to_string(n) + " scalars, one per key");
        for (const auto& x : v) tuple.push_back(value(x));
      }
      axis.values.push_back(tuple);
    }
    spec.axes.push_back(axis);
  }
  {
    // A key on two axes would be set twice per run, the later value silently winning.
    std::vector<std::string> all = spec.keys();
    std::sort(all.begin(), all.end());
    auto dup = std::adjacent_find(all.begin(), all.end());
    if (dup != all.end()) throw ConfigError(path + ": grid key '" + *dup + "' appears more than once");
  }
  if (root["set"]) {
    if (!root["set"].IsSequence()) throw ConfigError(where(path, root["set"]) + ": 'set' must be a list of key=value");
    for (const auto& v : root["set"]) spec.common_overrides.push_back(v.as<std::string>());
  }
  // The command line's --set comes after the file's set, so it wins; a grid key would be
  // overridden by the grid in every run, so it is refused rather than ignored.
  const std::vector<std::string> grid_keys = spec.keys();
  for (const std::string& o : extra_overrides) {
    const std::string key = o.substr(0, o.find('='));
    if (std::find(grid_keys.begin(), grid_keys.end(), key) != grid_keys.end())
      throw ConfigError("--set " + o + ": " + key + " is a grid key of " + path + "; the grid sets it in every run");
    spec.common_overrides.push_back(o);
  }
  // Every point must be a valid config: check them all before running anything.
  for (const SweepPoint& p : expand_grid(spec)) {
    try {
      load_config(spec.base_config, point_overrides(spec, p));
    } catch (const ConfigError& e) {
      throw ConfigError(path + ": run " + p.name + " has an invalid config:\n" + e.what());
    }
  }
  // Two points in one directory would overwrite each other's run.
  std::map<std::string, std::string> seen;
  for (const SweepPoint& p : expand_grid(spec)) {
    std::string desc;
    for (const auto& [k, v] : p.values) desc += (desc.empty() ? "" : ", ") + k + "=" + (v == kGridUnset ? "~" : v);
    auto [it, fresh] = seen.emplace(p.name, desc);
    if (!fresh)
      throw ConfigError(path + ": the runs {" + it->second + "} and {" + desc + "} would share the directory '" +
                        p.name + "'; make the grid values differ in letters, digits or ._=,-");
  }
  return spec;
}

std::vector<std::string> point_overrides(const SweepSpec& spec, const SweepPoint& p) {
  std::vector<std::string> ov = spec.common_overrides;
  for (const auto& [k, v] : p.values)
    if (v != kGridUnset) ov.push_back(k + "=" + v);
  return ov;
}

std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

std::string results_csv_header(const SweepSpec& spec) {
  std::string h = "run";
  for (const std::string& k : spec.keys()) h += "," + csv_escape(k);
  return h + ",status,best_valid_accuracy,final_train_loss,final_valid_loss,parameters,state_size,wall_s,"
             "state_bytes,steps,final_valid_accuracy,early_stopped";
}

std::vector<std::string> SweepSpec::keys() const {
  std::vector<std::string> all;
  for (const SweepAxis& a : axes) all.insert(all.end(), a.keys.begin(), a.keys.end());
  return all;
}

std::vector<SweepPoint> expand_grid(const SweepSpec& spec) {
  std::vector<SweepPoint> points(1);
  for (const SweepAxis& axis : spec.axes) {
    std::vector<SweepPoint> next;
    for (const SweepPoint& p : points)
      for (const std::vector<std::string>& tuple : axis.values) {
        SweepPoint q = p;
        for (size_t k = 0; k < axis.keys.size(); ++k) q.values.emplace_back(axis.keys[k], tuple[k]);
        next.push_back(q);
      }
    points = std::move(next);
  }
  for (SweepPoint& p : points) {
    std::string name;
    // An unset key stays out of the name, so that adding a key for one row of an axis
    // (an option of one mixer) leaves the other rows' directories, and their results, as they were.
    for (const auto& [k, v] : p.values)
      if (v != kGridUnset) name += (name.empty() ? "" : ",") + leaf(k) + "=" + v;
    p.name = sanitize(name);
  }
  return points;
}

std::string child_thread_count(const char* omp_num_threads, long cores, int jobs) {
  if (omp_num_threads) {
    const std::string v(omp_num_threads);
    if (v.find_first_not_of(" \t") != std::string::npos) return v;
  }
  return std::to_string(std::max(1L, std::max(1L, cores) / std::max(1, jobs)));
}

int cmd_sweep(const SweepArgs& args, const std::string& binary_arg) {
  // argv[0] may be a bare name found on PATH; the kernel knows the real file.
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const std::string binary = ec ? binary_arg : self.string();
  if (args.collect && !args.shard.empty()) throw std::invalid_argument("--collect merges every shard's rows; drop --shard");
  // --shard wins over a job array's variables (--shard 0/1 runs the whole grid in one).
  std::optional<SweepShard> shard;
  if (!args.shard.empty()) shard = parse_shard(args.shard);
  else if (!args.collect) {
    auto env = [](const char* name) { return std::getenv(name); };
    shard = shard_from_slurm(env);
    if (!shard) shard = shard_from_mpi_launcher(env);
  }
  const SweepSpec spec = load_sweep(args.sweep_path, args.overrides);
  std::vector<SweepPoint> points = expand_grid(spec);
  const fs::path dir = args.out_dir.empty() ? fs::path("runs") / fs::path(args.sweep_path).stem() : fs::path(args.out_dir);
  if (args.collect) return collect_sweep(args.sweep_path, spec, points, dir, std::cout);
  fs::create_directories(dir);
  const std::string results_file = shard && shard->sharded() ? shard->results_file() : "results.csv";
  if (shard) {
    const size_t grid_size = points.size();
    std::vector<SweepPoint> mine;
    for (size_t i = 0; i < grid_size; ++i)
      if (shard->owns(static_cast<int64_t>(i))) mine.push_back(points[i]);
    points = std::move(mine);
    std::cout << "sweep: shard " << shard->index << "/" << shard->count << " (" << shard->source << "): " << points.size()
              << " of the grid's " << grid_size << " runs in " << dir.string() << " (" << args.jobs
              << " at a time); rows in " << (dir / results_file).string() << std::endl;
  } else {
    std::cout << "sweep: " << points.size() << " runs in " << dir.string() << " (" << args.jobs << " at a time)"
              << std::endl;
  }

  // Children share the cores: unless the user chose, each gets cores / jobs threads. The
  // cores are those this process may run on (a Slurm task's allocation, a taskset), not
  // every core of the machine, which a cluster node shares among jobs.
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0) cores = CPU_COUNT(&allowed);
  const std::string threads = child_thread_count(std::getenv("OMP_NUM_THREADS"), cores, args.jobs);

  std::vector<std::string> status(points.size(), "pending");
  std::vector<Job> running;
  size_t next = 0;
  int failures = 0;
  int elsewhere = 0;  // points whose directory another process is training in
  auto launch = [&](size_t i) {
    const fs::path run = dir / points[i].name;
    fs::create_directories(run);
    std::vector<std::string> argv_s = {binary, "train"};
    const bool resumed = fs::exists(run / "checkpoint.h5");
    if (resumed) {
      argv_s.insert(argv_s.end(), {"--resume", run.string()});
    } else {
      argv_s.push_back(spec.base_config);
      for (const std::string& o : point_overrides(spec, points[i])) argv_s.insert(argv_s.end(), {"--set", o});
      argv_s.insert(argv_s.end(), {"--out", run.string()});
    }
    std::vector<char*> cargv;
    for (std::string& s : argv_s) cargv.push_back(s.data());
    cargv.push_back(nullptr);
    // Each run is a process of its own: it inherits neither the thread count (set below)
    // nor an MPI launcher's variables, which under `mpirun seqmix sweep` would make every
    // run try to join the launcher's job as a rank of a data-parallel training.
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) {
      const std::string var = *e;
      bool keep = var.rfind("OMP_NUM_THREADS=", 0) != 0;
      for (const char* launcher : {"OMPI_", "PMIX_", "PMI_"}) keep = keep && var.rfind(launcher, 0) != 0;
      if (keep) env_s.push_back(var);
    }
    env_s.push_back("OMP_NUM_THREADS=" + threads);
    std::vector<char*> cenv;
    for (std::string& s : env_s) cenv.push_back(s.data());
    cenv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const std::string log = (run / "log.txt").string();
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    // Its own process group: Ctrl-C in a terminal reaches the sweep alone, which passes
    // it on once (a training that got the signal twice would quit without a checkpoint).
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, binary.c_str(), &fa, &attr, cargv.data(), cenv.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start " + binary + ": " + std::strerror(rc));
    running.push_back(Job{pid, i, std::chrono::steady_clock::now(), resumed});
    std::cout << "[" << i + 1 << "/" << points.size() << "] started " << points[i].name << std::endl;
  };

  // For the ETA: each run's cost weight (load_sweep has validated every config), and
  // the times of finished runs; those finished before this sweep count with their
  // recorded time.
  std::vector<double> weight;
  for (const SweepPoint& p : points) weight.push_back(run_cost_weight(load_config(spec.base_config, point_overrides(spec, p))));
  std::vector<RunTime> finished;
  for (size_t i = 0; i < points.size(); ++i) {
    const fs::path result = dir / points[i].name / "result.json";
    if (!fs::exists(result)) continue;
    status[i] = "done";
    finished.push_back({recorded_wall_s(result), weight[i]});
    std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": finished before, skipped" << std::endl;
  }
  const auto sweep_start = std::chrono::steady_clock::now();
  auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  auto last_progress = sweep_start;
  auto print_progress = [&] {
    SweepCounts c;
    for (const std::string& st : status) {
      if (st == "done") ++c.done;
      else if (st == "failed") ++c.failed;
      else if (st == "running") ++c.running;
      else ++c.left;
    }
    std::vector<RunTime> now_running;
    for (const Job& j : running) now_running.push_back({seconds_since(j.start), weight[j.index]});
    std::vector<double> left;
    for (size_t i = 0; i < points.size(); ++i)
      if (status[i] == "pending") left.push_back(weight[i]);
    std::cout << format_sweep_progress(c, seconds_since(sweep_start),
                                       estimate_eta_seconds(finished, now_running, left, args.jobs))
              << std::endl;
    last_progress = std::chrono::steady_clock::now();
  };

  // SIGINT or SIGTERM (Ctrl-C, kill, a scheduler's preemption): no run is started any
  // more, and the signal is passed on to the running trainings, each of which stops
  // after its step with a checkpoint; the sweep waits for them, writes results.csv and
  // exits 128 + signal. Running the sweep again resumes them. Without this, `kill` on the
  // sweep left its trainings running on as orphans.
  install_stop_signal_handlers();
  int forwarded = 0;
  while (true) {
    bool changed = false;
    if (const int sig = stop_signal_received(); sig != 0 && forwarded == 0) {
      forwarded = sig;
      for (const Job& j : running) ::kill(j.pid, sig);
      std::cout << "sweep: " << (sig == SIGINT ? "SIGINT" : "SIGTERM") << ": stopping " << running.size()
                << " running run(s) at their next step (each writes a checkpoint); run the sweep again to resume"
                << std::endl;
    }
    while (forwarded == 0 && static_cast<int64_t>(running.size()) < args.jobs && next < points.size()) {
      if (status[next] == "pending") {
        const std::string tag = "[" + std::to_string(next + 1) + "/" + std::to_string(points.size()) + "] ";
        const RunDir state = prepare_run_dir(dir / points[next].name);
        if (state == RunDir::in_use) {
          ++elsewhere;
          std::cout << tag << points[next].name << ": running in another process (its directory is locked); left to it"
                    << std::endl;
        } else {
          if (state == RunDir::moved_aside)
            std::cout << tag << points[next].name << ": an earlier attempt stopped without a checkpoint or a result; "
                      << "moved it to " << points[next].name << ".failed and starting afresh" << std::endl;
          launch(next);
        }
        status[next] = "running";
        changed = true;
      }
      ++next;
    }
    if (changed) print_progress();
    if (running.empty()) break;
    // Poll rather than block, so that a long run still shows progress every interval.
    int wstatus = 0;
    const pid_t done = waitpid(-1, &wstatus, WNOHANG);
    if (done < 0) break;
    if (done == 0) {
      if (args.progress_interval_s > 0 && seconds_since(last_progress) >= args.progress_interval_s) print_progress();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    for (size_t j = 0; j < running.size(); ++j) {
      if (running[j].pid != done) continue;
      const size_t i = running[j].index;
      const bool ok = WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0 && fs::exists(dir / points[i].name / "result.json");
      // A run stopped by the forwarded signal kept its checkpoint: it is pending, not failed.
      const bool stopped = !ok && forwarded != 0 && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 128 + forwarded;
      if (stopped) {
        status[i] = "pending";
        std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name
                  << ": stopped with a checkpoint; resumes when the sweep runs again" << std::endl;
        running.erase(running.begin() + static_cast<long>(j));
        write_results(dir, results_file, spec, points, status);
        break;
      }
      status[i] = ok ? "done" : "failed";
      // A fresh run's cost is the time it took here (start-up and data included); a
      // resumed run's is the whole run's training time that result.json records.
      if (ok)
        finished.push_back({running[j].resumed ? recorded_wall_s(dir / points[i].name / "result.json")
                                               : seconds_since(running[j].start),
                            weight[i]});
      else ++failures;
      std::cout << "[" << i + 1 << "/" << points.size() << "] " << points[i].name << ": "
                << (ok ? "done" : "FAILED: " + last_line_of(dir / points[i].name / "log.txt")) << std::endl;
      running.erase(running.begin() + static_cast<long>(j));
      // Rewritten after every run, so that a sweep in progress (or one that was
      // interrupted) can already be read and plotted.
      write_results(dir, results_file, spec, points, status);
      print_progress();
      break;
    }
  }
  write_results(dir, results_file, spec, points, status);
  if (forwarded != 0) {
    std::cout << "sweep: stopped by " << (forwarded == SIGINT ? "SIGINT" : "SIGTERM") << "; results so far in "
              << (dir / results_file).string() << std::endl;
    return 128 + forwarded;
  }
  std::cout << "results: " << (dir / results_file).string() << " (" << points.size() - failures - elsewhere
            << " done, " << failures << " failed" << (elsewhere ? ", " + std::to_string(elsewhere) + " running elsewhere" : "")
            << ")" << std::endl;
  if (shard && shard->sharded())
    std::cout << "when every shard has run: seqmix sweep " << args.sweep_path << " --collect --out " << dir.string()
              << std::endl;
  const bool complete = failures == 0 && elsewhere == 0;
  if (!complete && shard && shard->mpi_launcher) {
    // mpirun ends every rank when one exits non-zero: the other shards would be cut short.
    std::cout << "exit code 0 under an MPI launcher, so that the other ranks' shards go on; --collect tells whether "
                 "every point finished" << std::endl;
    return 0;
  }
  return complete ? 0 : 1;
}

}  // namespace seqmix
