// Which part of a sweep's grid one machine runs: `seqmix sweep FILE --shard I/N`, a
// Slurm job array's task (SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT), or an MPI
// launcher's rank (mpirun -np N), in that order of precedence.
//
// Shards are numbered from 0, as a job array written --array=0-(N-1) and a shell loop
// `for i in $(seq 0 $((N-1)))` number them. Shard I of N owns the grid points whose
// index in the expanded grid (expand_grid's order) is I modulo N. The assignment
// depends only on the grid, so every point belongs to exactly one shard whatever the
// order or timing in which the shards run, and a shard run again owns the same points
// (and skips those it finished). Round-robin rather than contiguous blocks: the grid's
// last axis varies fastest, so neighbouring points differ in the cheapest setting (the
// learning rate, typically) and each shard gets a similar mix of small and large runs.
// The shards must be given the same sweep file and --set; docs/cluster.md shows a job
// array and a plain ssh loop.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace seqmix {

struct SweepShard {
  int64_t index = 0;   // I, 0 <= I < count
  int64_t count = 1;   // N; 1 is the whole grid, an ordinary sweep
  std::string source;  // how it was chosen, for the start line: "--shard 1/3" or the Slurm variables
  bool mpi_launcher = false;  // chosen from an MPI launcher's rank (see shard_from_mpi_launcher)
  bool sharded() const { return count > 1; }
  bool owns(int64_t grid_index) const { return grid_index % count == index; }
  // "results.shard-1-of-3.csv": each shard writes its own rows, so that shards on a
  // shared filesystem never write one file; `seqmix sweep FILE --collect` merges them.
  std::string results_file() const;
};

// "I/N" from --shard. Throws std::invalid_argument naming the value and what is expected.
SweepShard parse_shard(const std::string& text);

// The shard of a Slurm job array task, or nothing when SLURM_ARRAY_TASK_ID is not set
// (not in a job array). Slurm's task ids need not start at 0 (--array=1-8) nor be
// consecutive (--array=0-14:2): the shard is the task's position in the array,
// (ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP, and N is SLURM_ARRAY_TASK_COUNT.
// Ids that are not evenly spaced (--array=1,2,5) have no such position and are refused,
// as are a missing SLURM_ARRAY_TASK_COUNT and values that are not numbers. So is an
// array of one task: it is most likely one shard submitted again (--array=3), which
// must say which shard of how many with --shard.
// getenv: the environment (a parameter so that tests can give their own).
std::optional<SweepShard> shard_from_slurm(const std::function<const char*(const char*)>& getenv);

// The shard of a process that an MPI launcher started (`mpirun -np N seqmix sweep FILE`):
// its rank of N, from Open MPI's OMPI_COMM_WORLD_RANK and OMPI_COMM_WORLD_SIZE or
// MPICH's PMI_RANK and PMI_SIZE; nothing when neither pair is set. The ranks need not
// talk to each other: each runs its shard and writes its rows file. Such a shard exits
// 0 even when some of its runs failed: mpirun ends every rank as soon as one exits
// non-zero, which would cut the other shards short; --collect reports the failures.
std::optional<SweepShard> shard_from_mpi_launcher(const std::function<const char*(const char*)>& getenv);

}  // namespace seqmix
