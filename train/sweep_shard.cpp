#include "train/sweep_shard.h"

#include <charconv>
#include <stdexcept>

namespace seqmix {

namespace {

// A whole number written in decimal digits only (no sign, no spaces), or nothing.
std::optional<int64_t> parse_count(const std::string& s) {
  int64_t v = 0;
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

std::string SweepShard::results_file() const {
  return "results.shard-" + std::to_string(index) + "-of-" + std::to_string(count) + ".csv";
}

SweepShard parse_shard(const std::string& text) {
  const std::string usage =
      "; expected I/N, the shard's index I (from 0) and the number of shards N, e.g. --shard 0/4 ... --shard 3/4";
  const auto slash = text.find('/');
  if (slash == std::string::npos) throw std::invalid_argument("--shard '" + text + "': no '/'" + usage);
  const std::optional<int64_t> i = parse_count(text.substr(0, slash));
  const std::optional<int64_t> n = parse_count(text.substr(slash + 1));
  if (!i || !n) throw std::invalid_argument("--shard '" + text + "': I and N must be whole numbers (0, 1, 2, ...)" + usage);
  if (*n < 1) throw std::invalid_argument("--shard '" + text + "': the number of shards N must be at least 1" + usage);
  if (*i >= *n)
    throw std::invalid_argument("--shard '" + text + "': shards are numbered from 0, so I must be below N = " +
                                std::to_string(*n) + " (the last shard is " + std::to_string(*n - 1) + "/" +
                                std::to_string(*n) + ")");
  return SweepShard{*i, *n, "--shard " + text};
}

std::optional<SweepShard> shard_from_slurm(const std::function<const char*(const char*)>& getenv) {
  const char* id_s = getenv("SLURM_ARRAY_TASK_ID");
  if (!id_s) return std::nullopt;
  // The variables as Slurm set them, for the start line and for every error.
  std::string vars;
  auto read = [&](const char* name, bool required) -> std::optional<int64_t> {
    const char* v = getenv(name);
    if (!v) {
      if (required)
        throw std::invalid_argument(std::string("SLURM_ARRAY_TASK_ID is set (this is a Slurm job array task) but ") +
                                    name + " is not, so the number of shards is unknown; pass --shard I/N");
      return std::nullopt;
    }
    vars += (vars.empty() ? "" : ", ") + std::string(name) + "=" + v;
    const std::optional<int64_t> x = parse_count(v);
    if (!x) throw std::invalid_argument(std::string(name) + "='" + v + "' is not a whole number; pass --shard I/N");
    return x;
  };
  const int64_t id = *read("SLURM_ARRAY_TASK_ID", true);
  const int64_t count = *read("SLURM_ARRAY_TASK_COUNT", true);
  const int64_t min = read("SLURM_ARRAY_TASK_MIN", false).value_or(0);
  const int64_t step = read("SLURM_ARRAY_TASK_STEP", false).value_or(1);
  const std::optional<int64_t> max = read("SLURM_ARRAY_TASK_MAX", false);
  const std::string fix = " (" + vars + "); submit the array as --array=0-" + std::to_string(count > 0 ? count - 1 : 0) +
                          " or pass --shard I/N";
  if (count < 1) throw std::invalid_argument("the job array has no tasks" + fix);
  // One task is most likely one shard of a larger array submitted again (sbatch
  // --array=3): taken at its word it would run the whole grid, beside the other shards.
  if (count == 1)
    throw std::invalid_argument("this job array has one task (" + vars + "), which would run the whole grid; to run "
                                "one shard of N again pass --shard I/N (or submit the whole array again: finished "
                                "points are skipped), and for the whole grid in one task pass --shard 0/1");
  if (step < 1) throw std::invalid_argument("the job array's step is not positive" + fix);
  // An evenly spaced array has max = min + (count - 1) x step; a list such as 1,2,5 has not.
  if (max && *max != min + (count - 1) * step)
    throw std::invalid_argument("the job array's task ids are not evenly spaced, so a task's position in it is "
                                "unknown" + fix);
  if (id < min || (id - min) % step != 0 || (id - min) / step >= count)
    throw std::invalid_argument("task " + std::to_string(id) + " is not one of the array's " + std::to_string(count) +
                                " tasks" + fix);
  return SweepShard{(id - min) / step, count, vars};
}

std::optional<SweepShard> shard_from_mpi_launcher(const std::function<const char*(const char*)>& getenv) {
  for (const auto& [rank_var, size_var] : {std::pair{"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                           std::pair{"PMI_RANK", "PMI_SIZE"}}) {
    const char* rank_s = getenv(rank_var);
    const char* size_s = getenv(size_var);
    if (!rank_s || !size_s) continue;
    const std::string vars = std::string(rank_var) + "=" + rank_s + ", " + size_var + "=" + size_s;
    const std::optional<int64_t> rank = parse_count(rank_s), size = parse_count(size_s);
    if (!rank || !size || *size < 1 || *rank >= *size)
      throw std::invalid_argument("the MPI launcher's rank and size (" + vars + ") are not a rank of a size; pass "
                                  "--shard I/N");
    return SweepShard{*rank, *size, vars, true};
  }
  return std::nullopt;
}

}  // namespace seqmix
