#include "train/distributed.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#ifdef SEQMIX_HAVE_MPI
// The C API only: without these, mpi.h from C++ pulls in the deprecated C++ bindings,
// which need a library of their own.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace seqmix {

namespace {

int g_rank = 0;
int g_size = 1;
double g_allreduce_s = 0;
int64_t g_allreduce_floats = 0;

// 1M floats (4 MiB) per allreduce: large enough that the per-message latency is a small
// part of the transfer, small enough that the bucket stays a fixed, modest buffer.
constexpr int64_t kBucketFloats = int64_t{1} << 20;

// How long a failing rank waits for the others to report failure too before it aborts
// the job: symmetric failures (a configuration error every rank sees) happen within
// milliseconds of each other; a rank that does not arrive in this time is stuck.
constexpr double kFailureAgreementSeconds = 5.0;

#ifdef SEQMIX_HAVE_MPI
// A communicator of its own for the exit handshake, so that its barrier cannot be matched
// against a collective call another rank is blocked in on MPI_COMM_WORLD.
MPI_Comm g_exit_comm = MPI_COMM_NULL;

void check_mpi(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw std::runtime_error(std::string("MPI ") + what + " failed on rank " + std::to_string(g_rank) + ": " +
                           std::string(text, static_cast<size_t>(len)));
}
#endif

}  // namespace

bool built_with_mpi() {
#ifdef SEQMIX_HAVE_MPI
  return true;
#else
  return false;
#endif
}

namespace {
// Set by a rank after MPI_Init to its pid. The launcher's variables are inherited by the
// processes a rank starts (a `seqmix sweep` rank starting `seqmix train` runs); those
// are not ranks, and this variable, naming another process, tells them so.
constexpr const char* kRankPidVariable = "SEQMIX_MPI_RANK_PID";
}  // namespace

bool launched_by_mpi_launcher() {
  if (const char* owner = std::getenv(kRankPidVariable); owner && std::to_string(::getpid()) != owner) return false;
  // Open MPI's mpirun, PMIx (Slurm, Open MPI 5) and PMI-1/2 (MPICH's hydra, Slurm) launchers.
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"})
    if (std::getenv(v)) return true;
  return false;
}

DistributedSession::DistributedSession(int* argc, char*** argv) {
#ifdef SEQMIX_HAVE_MPI
  // Only under a launcher: a singleton MPI_Init would start Open MPI's runtime for a
  // plain `seqmix info`, and the test suite runs the program hundreds of times.
  if (!launched_by_mpi_launcher()) return;
  // FUNNELED: OpenMP threads compute, only the main thread calls MPI.
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    throw std::runtime_error("MPI_Init_thread failed");
  }
  active_ = true;
  ::setenv(kRankPidVariable, std::to_string(::getpid()).c_str(), 1);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  MPI_Comm_dup(MPI_COMM_WORLD, &g_exit_comm);
  // Errors come back as codes (check_mpi turns them into exceptions with the rank).
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  // Rank 0 speaks for the job; the others report only warnings and errors.
  if (g_rank != 0) spdlog::set_level(spdlog::level::warn);
#else
  (void)argc;
  (void)argv;
#endif
}

DistributedSession::~DistributedSession() {
  if (active_ && !finished_) finish(1);
}

int DistributedSession::finish(int exit_code) {
  if (!active_ || finished_) return exit_code;
  finished_ = true;
#ifdef SEQMIX_HAVE_MPI
  if (exit_code != 0 && g_size > 1) {
    MPI_Request req;
    MPI_Ibarrier(g_exit_comm, &req);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kFailureAgreementSeconds);
    int done = 0;
    while (!done && std::chrono::steady_clock::now() < deadline) {
      MPI_Test(&req, &done, MPI_STATUS_IGNORE);
      if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!done) {
      spdlog::error("rank {} failed alone; ending the other ranks (MPI_Abort)", g_rank);
      MPI_Abort(MPI_COMM_WORLD, exit_code);
    }
  }
  MPI_Comm_free(&g_exit_comm);
  MPI_Finalize();
#endif
  g_rank = 0;
  g_size = 1;
  return exit_code;
}

int world_rank() { return g_rank; }
int world_size() { return g_size; }

void allreduce_sum(float* data, int64_t n) {
  if (g_size == 1) return;
#ifdef SEQMIX_HAVE_MPI
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t off = 0; off < n; off += kBucketFloats) {
    const int count = static_cast<int>(std::min(kBucketFloats, n - off));
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), "allreduce");
  }
  g_allreduce_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  g_allreduce_floats += n;
#else
  (void)data;
  (void)n;
#endif
}

#ifdef SEQMIX_HAVE_MPI
namespace {
// The few doubles a step reduces (losses, counts, flags): one message, no bucketing.
void allreduce_doubles(double* data, int64_t n, MPI_Op op) {
  check_mpi(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(n), MPI_DOUBLE, op, MPI_COMM_WORLD), "allreduce");
}
}  // namespace
#endif

void allreduce_sum(double* data, int64_t n) {
  if (g_size == 1) return;
#ifdef SEQMIX_HAVE_MPI
  allreduce_doubles(data, n, MPI_SUM);
#else
  (void)data;
  (void)n;
#endif
}

void allreduce_max(double* data, int64_t n) {
  if (g_size == 1) return;
#ifdef SEQMIX_HAVE_MPI
  allreduce_doubles(data, n, MPI_MAX);
#else
  (void)data;
  (void)n;
#endif
}

double allreduce_seconds() { return g_allreduce_s; }
int64_t allreduce_floats() { return g_allreduce_floats; }

void allreduce_gradients(const NamedTensors& params, float weight) {
  if (g_size == 1) return;
  // One float per parameter says whether this rank has its gradient; it travels in the
  // last bucket, so that the reduced flags say which parameters any rank had.
  const int64_t np = static_cast<int64_t>(params.size());
  std::vector<float> bucket;
  bucket.reserve(static_cast<size_t>(kBucketFloats));
  struct Piece {
    size_t param;
    int64_t begin, n;
  };
  std::vector<Piece> pieces;  // what the bucket holds, in order
  std::vector<float> has(static_cast<size_t>(np), 0.0f);
  std::vector<Tensor> reduced(static_cast<size_t>(np));
  for (int64_t i = 0; i < np; ++i) {
    const Tensor g = params[static_cast<size_t>(i)].second.grad();
    if (g.defined()) {
      if (g.dtype() != DType::f32) throw std::invalid_argument("data-parallel training needs float32 gradients");
      has[static_cast<size_t>(i)] = 1.0f;
    }
  }
  const auto flush = [&] {
    allreduce_sum(bucket.data(), static_cast<int64_t>(bucket.size()));
    int64_t at = 0;
    for (const Piece& p : pieces) {
      Tensor& r = reduced[p.param];
      if (!r.defined()) r = params[p.param].second.grad_buffer();  // zeros where this rank had none
      std::copy_n(bucket.data() + at, p.n, r.f32() + p.begin);
      at += p.n;
    }
    bucket.clear();
    pieces.clear();
  };
  const double w = weight;
  for (int64_t i = 0; i < np; ++i) {
    const Tensor& p = params[static_cast<size_t>(i)].second;
    const Tensor g = p.grad();
    const int64_t numel = p.numel();
    for (int64_t b = 0; b < numel;) {
      const int64_t n = std::min(numel - b, kBucketFloats - static_cast<int64_t>(bucket.size()));
      const size_t at = bucket.size();
      bucket.resize(at + static_cast<size_t>(n));
      if (g.defined()) {
        const float* src = g.f32() + b;
        for (int64_t k = 0; k < n; ++k) bucket[at + static_cast<size_t>(k)] = static_cast<float>(src[k] * w);
      } else {
        std::fill_n(bucket.data() + at, n, 0.0f);
      }
      pieces.push_back({static_cast<size_t>(i), b, n});
      b += n;
      if (static_cast<int64_t>(bucket.size()) == kBucketFloats) flush();
    }
  }
  if (!bucket.empty()) flush();
  allreduce_sum(has.data(), np);
  // A parameter no rank had a gradient for goes back to having none.
  for (int64_t i = 0; i < np; ++i)
    if (has[static_cast<size_t>(i)] == 0.0f) params[static_cast<size_t>(i)].second.zero_grad();
}

RowRange slice_rows(int64_t rows, int64_t index, int64_t parts) {
  const int64_t base = rows / parts, extra = rows % parts;
  const int64_t begin = index * base + std::min(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

}  // namespace seqmix
