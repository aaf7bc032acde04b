// What data-parallel training relies on inside one process (no MPI needed): a rank's rows
// of the batch, and the dropout masks a sliced generator draws for them, which must be
// the rows of the masks one process draws for the whole batch.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "core/ops.h"
#include "core/random.h"
#include "layers/attention_kernel.h"
#include "train/data_source.h"
#include "train/distributed.h"

using namespace seqmix;

namespace {

Tensor ramp(const Shape& shape) {
  Tensor t = Tensor::empty(shape);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = 0.25f + 0.01f * static_cast<float>(i % 97);
  return t;
}

// Rows [begin, end) of a float tensor whose leading dimension is the batch.
Tensor rows(const Tensor& t, int64_t begin, int64_t end) {
  const int64_t per_row = t.numel() / t.size(0);
  Shape s = t.shape();
  s[0] = end - begin;
  Tensor out = Tensor::empty(s);
  std::memcpy(out.f32(), t.f32() + begin * per_row, static_cast<size_t>((end - begin) * per_row) * sizeof(float));
  return out;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.f32(), b.f32(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// Draws through `draw` on the whole batch with one generator, and on each of `parts`
// slices with a generator sliced accordingly: every slice's output is its rows of the
// whole, and every generator ends at the whole batch's counter.
template <class Draw>
void expect_slices_draw_the_whole(const Tensor& x, int64_t parts, Draw draw) {
  Generator whole_gen(77, 5);
  Tensor whole = draw(x, whole_gen);
  whole = draw(whole, whole_gen);  // a second draw: the counter must have moved past the batch
  const int64_t B = x.size(0), per = B / parts;
  for (int64_t r = 0; r < parts; ++r) {
    Generator g(77, 5);
    g.set_batch_slice(static_cast<uint64_t>(r), static_cast<uint64_t>(parts));
    Tensor mine = draw(rows(x, r * per, (r + 1) * per), g);
    mine = draw(mine, g);
    EXPECT_TRUE(same_bits(mine, rows(whole, r * per, (r + 1) * per))) << "slice " << r << " of " << parts;
    EXPECT_EQ(g.counter(), whole_gen.counter());
    EXPECT_EQ(g.seed(), whole_gen.seed());
  }
}

TEST(BatchSlice, DropoutMasksOfTheSlicesAreTheWholeBatchMasks) {
  for (int64_t parts : {1, 2, 3}) {
    expect_slices_draw_the_whole(ramp({6, 5, 7}), parts,
                                 [](const Tensor& x, Generator& g) { return dropout(x, 0.3, true, g); });
  }
}

TEST(BatchSlice, AttentionProbabilityDropoutOfTheSlicesIsTheWholeBatchDropout) {
  // qkv (B, L, 3D) with D = 4, two heads.
  for (int64_t parts : {2, 4}) {
    expect_slices_draw_the_whole(ramp({4, 5, 12}), parts, [](const Tensor& qkv, Generator& g) {
      Tensor o = causal_attention(qkv, 2, 0.25, g);  // (B, L, D): fed back as q, k and v
      Tensor again = Tensor::empty(qkv.shape());
      const int64_t positions = qkv.size(0) * qkv.size(1);
      for (int64_t p = 0; p < positions; ++p)
        for (int64_t c = 0; c < 12; ++c) again.f32()[p * 12 + c] = o.f32()[p * 4 + c % 4];
      return again;
    });
  }
}

TEST(SliceRows, SlicesCoverTheRowsInOrderWithSizesApartByAtMostOne) {
  for (int64_t n : {0, 1, 2, 7, 16, 50})
    for (int64_t parts : {1, 2, 3, 4}) {
      int64_t next = 0;
      for (int64_t r = 0; r < parts; ++r) {
        const RowRange s = slice_rows(n, r, parts);
        EXPECT_EQ(s.begin, next) << n << " rows, slice " << r << " of " << parts;
        const int64_t size = s.end - s.begin;
        EXPECT_TRUE(size == n / parts || size == n / parts + 1) << n << " rows, slice " << r << " of " << parts;
        next = s.end;
      }
      EXPECT_EQ(next, n);
    }
}

TEST(BatchRows, TakesTheRowsOfInputsAndLabels) {
  std::vector<int32_t> in(12), lab(12);
  for (int32_t i = 0; i < 12; ++i) {
    in[static_cast<size_t>(i)] = i;
    lab[static_cast<size_t>(i)] = i % 3 == 0 ? -100 : 100 + i;
  }
  const Batch b{Tensor::from_vector({4, 3}, in), Tensor::from_vector({4, 3}, lab)};
  const Batch mid = batch_rows(b, 1, 3);
  ASSERT_EQ(mid.inputs.shape(), (Shape{2, 3}));
  ASSERT_EQ(mid.labels.shape(), (Shape{2, 3}));
  for (int64_t i = 0; i < 6; ++i) {
    EXPECT_EQ(mid.inputs.i32()[i], in[static_cast<size_t>(3 + i)]);
    EXPECT_EQ(mid.labels.i32()[i], lab[static_cast<size_t>(3 + i)]);
  }
}

TEST(SingleProcessWorld, WithoutALauncherTheProcessIsRankZeroOfOne) {
  // The suite runs the tests without mpirun: training must then be the plain program.
  if (launched_by_mpi_launcher()) GTEST_SKIP() << "run under an MPI launcher";
  EXPECT_EQ(world_rank(), 0);
  EXPECT_EQ(world_size(), 1);
  double x[2] = {1.5, -2.0};
  allreduce_sum(x, 2);
  EXPECT_EQ(x[0], 1.5);
  EXPECT_EQ(x[1], -2.0);
}

TEST(SingleProcessWorld, AProcessARankStartedIsNotARank) {
  // A rank's children (the runs of a `seqmix sweep` started by mpirun) inherit the
  // launcher's variables; the rank's pid in SEQMIX_MPI_RANK_PID tells them apart.
  const char* saved_size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* saved_pid = std::getenv("SEQMIX_MPI_RANK_PID");
  const std::string keep_size = saved_size ? saved_size : "", keep_pid = saved_pid ? saved_pid : "";
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  ::unsetenv("SEQMIX_MPI_RANK_PID");
  EXPECT_TRUE(launched_by_mpi_launcher());
  ::setenv("SEQMIX_MPI_RANK_PID", std::to_string(::getpid()).c_str(), 1);
  EXPECT_TRUE(launched_by_mpi_launcher());
  ::setenv("SEQMIX_MPI_RANK_PID", std::to_string(::getpid() + 1).c_str(), 1);
  EXPECT_FALSE(launched_by_mpi_launcher());
  if (saved_size) ::setenv("OMPI_COMM_WORLD_SIZE", keep_size.c_str(), 1);
  else ::unsetenv("OMPI_COMM_WORLD_SIZE");
  if (saved_pid) ::setenv("SEQMIX_MPI_RANK_PID", keep_pid.c_str(), 1);
  else ::unsetenv("SEQMIX_MPI_RANK_PID");
}

}  // namespace
