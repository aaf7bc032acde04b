// Data-parallel training across processes (docs/cluster.md). Every MPI call of seqmix is
// behind these functions. Built without MPI (cmake -DSEQMIX_MPI=OFF), or run without an
// MPI launcher, the process is rank 0 of a world of 1 and every reduction is the identity,
// so a plain `seqmix train` runs exactly as it would without this file.
#pragma once

#include <cstdint>
#include <string>

#include "layers/module.h"

namespace seqmix {

// Whether the program was built with MPI.
bool built_with_mpi();

// Whether an MPI launcher (mpirun, or srun with PMI/PMIx) started this process: its
// environment names a world size or a rank, and was not inherited from a rank that
// started this process (a rank's child is a process of its own, not a rank).
bool launched_by_mpi_launcher();

// MPI_Init in the constructor when built with MPI and launched by a launcher; otherwise
// nothing. One per process, in main(), living as long as the command.
class DistributedSession {
 public:
  DistributedSession(int* argc, char*** argv);
  ~DistributedSession();
  DistributedSession(const DistributedSession&) = delete;
  DistributedSession& operator=(const DistributedSession&) = delete;

  // Ends MPI and returns the exit code to use. A command that failed on some ranks but
  // not on others leaves those others waiting in a collective call forever, so a
  // failure that not every rank reports within a few seconds aborts the whole job
  // (MPI_Abort) instead of finalising: a job ends, it does not hang.
  int finish(int exit_code);

 private:
  bool active_ = false;
  bool finished_ = false;
};

int world_rank();  // 0 without MPI
int world_size();  // 1 without MPI

// In-place sums over all ranks; every rank receives the same result. Floats go in
// buckets of a fixed size, so a message is never larger than one bucket (MPI counts are
// int) and the bucket buffer does not grow with the model.
void allreduce_sum(float* data, int64_t n);
void allreduce_sum(double* data, int64_t n);
void allreduce_max(double* data, int64_t n);

// Time spent in allreduce_sum(float*) and floats sent through it since the start (for
// the benchmark).
double allreduce_seconds();
int64_t allreduce_floats();

// Sums every parameter's gradient over the ranks after each rank has scaled its own by
// `weight` (its share of the global loss): afterwards every rank holds the same
// gradient, sum_r weight_r * grad_r. A parameter has a gradient afterwards iff some rank
// had one (the optimizer skips parameters without one, and all ranks must skip alike).
// The gradients are packed into fixed-size buckets in parameter order, one allreduce
// per bucket. With one rank the gradients are left as they are (its weight is 1).
void allreduce_gradients(const NamedTensors& params, float weight);

// Rows [begin, end) of `rows` split into `parts` near-equal slices, slice `index`: the
// first rows % parts slices have one row more.
struct RowRange {
  int64_t begin = 0, end = 0;
};
RowRange slice_rows(int64_t rows, int64_t index, int64_t parts);

}  // namespace seqmix
