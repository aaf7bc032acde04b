#include "core/gemm.h"

#include <map>
#include <memory>
#include <mutex>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace seqmix {

namespace {

int64_t stride_a(const GemmShape& s) { return s.batch_stride_a >= 0 ? s.batch_stride_a : s.M * s.K; }
int64_t stride_b(const GemmShape& s) { return s.batch_stride_b >= 0 ? s.batch_stride_b : s.K * s.N; }
int64_t stride_c(const GemmShape& s) { return s.batch_stride_c >= 0 ? s.batch_stride_c : s.M * s.N; }

// Plain loop: C[m, n] (+)= sum_k op(A)[m, k] op(B)[k, n], accumulated in T.
template <class T>
void gemm_loops(const GemmShape& s, const T* A, const T* B, T* C, bool accumulate) {
  const int64_t sa = stride_a(s), sb = stride_b(s), sc = stride_c(s);
  // Tiny products (the float64 gradient checks) run serially: a parallel region
  // costs more than the work.
  const bool parallel = s.batch * s.M * s.N * s.K > 32768;
#pragma omp parallel for collapse(2) schedule(static) if (parallel)
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t m = 0; m < s.M; ++m) {
      const T* a = A + b * sa;
      const T* bm = B + b * sb;
      T* c = C + b * sc + m * s.N;
      for (int64_t n = 0; n < s.N; ++n) {
        T acc = 0;
        for (int64_t k = 0; k < s.K; ++k) {
          T av = s.trans_a ? a[k * s.M + m] : a[m * s.K + k];
          T bv = s.trans_b ? bm[n * s.K + k] : bm[k * s.N + n];
          acc += av * bv;
        }
        c[n] = accumulate ? c[n] + acc : acc;
      }
    }
  }
}

struct DnnlContext {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, bool, int>;
  struct Entry {
    std::shared_ptr<dnnl::matmul> prim;
    dnnl::memory::desc scratchpad;
  };
  std::map<Key, Entry> cache;
};

DnnlContext& dnnl_context() {
  static DnnlContext ctx;
  return ctx;
}

// oneDNN describes a transposed operand by its strides, so one primitive covers
// every transpose combination without copies.
struct MatmulDescs {
  dnnl::memory::desc a, b, c;
};

MatmulDescs matmul_descs(const GemmShape& s) {
  using dnnl::memory;
  const int64_t sa = stride_a(s), sb = stride_b(s), sc = stride_c(s);
  const int64_t batch_b = sb == 0 ? 1 : s.batch;
  const int64_t sb_dense = sb == 0 ? s.K * s.N : sb;
  return MatmulDescs{
      memory::desc({s.batch, s.M, s.K}, memory::data_type::f32,
                   s.trans_a ? memory::dims{sa, 1, s.M} : memory::dims{sa, s.K, 1}),
      memory::desc({batch_b, s.K, s.N}, memory::data_type::f32,
                   s.trans_b ? memory::dims{sb_dense, 1, s.K} : memory::dims{sb_dense, s.N, 1}),
      memory::desc({s.batch, s.M, s.N}, memory::data_type::f32, memory::dims{sc, s.N, 1})};
}

// oneDNN plans its thread partition when a primitive is created, so the thread
// count it was created with is part of the key.
DnnlContext::Entry matmul_primitive(DnnlContext& ctx, const GemmShape& s, bool accumulate) {
  using dnnl::memory;
  const int64_t sa = stride_a(s), sb = stride_b(s), sc = stride_c(s);
  DnnlContext::Key key{s.batch, s.M, s.N, s.K, s.trans_a, s.trans_b, sa, sb, sc, accumulate, omp_in_parallel() ? 1 : omp_get_max_threads()};
  std::lock_guard<std::mutex> lock(ctx.mutex);
  auto it = ctx.cache.find(key);
  if (it != ctx.cache.end()) return it->second;
  const MatmulDescs d = matmul_descs(s);
  dnnl::primitive_attr attr;
  // A user scratchpad: fused kernels call gemm from several threads at once, and
  // the library-managed scratchpad of a shared primitive is not safe for that
  // (concurrent calls gave wrong results). Each thread brings its own below.
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  dnnl::matmul::desc desc(d.a, d.b, d.c);
  dnnl::matmul::primitive_desc pd(desc, attr, ctx.engine);
  DnnlContext::Entry entry{std::make_shared<dnnl::matmul>(pd), pd.scratchpad_desc()};
  ctx.cache.emplace(key, entry);
  return entry;
}

// Runs one product through a cached primitive. Inside a parallel region oneDNN
// runs on the calling thread with a stream of its own.
void gemm_execute(DnnlContext& ctx, const GemmShape& s, const float* A, const float* B, float* C, bool accumulate) {
  const DnnlContext::Entry entry = matmul_primitive(ctx, s, accumulate);
  const auto& prim = entry.prim;
  thread_local std::vector<std::byte> scratch;
  if (scratch.size() < entry.scratchpad.get_size()) scratch.resize(entry.scratchpad.get_size());
  using dnnl::memory;
  const MatmulDescs d = matmul_descs(s);
  memory a_mem(d.a, ctx.engine, const_cast<float*>(A));
  memory b_mem(d.b, ctx.engine, const_cast<float*>(B));
  memory c_mem(d.c, ctx.engine, C);
  memory scratch_mem(entry.scratchpad, ctx.engine, scratch.data());
  const std::unordered_map<int, memory> args = {
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}, {DNNL_ARG_SCRATCHPAD, scratch_mem}};
  if (omp_in_parallel()) {
    dnnl::stream stream(ctx.engine);
    prim->execute(stream, args);
    stream.wait();
  } else {
    prim->execute(ctx.stream, args);
    ctx.stream.wait();
  }
}

}  // namespace

void gemm(const GemmShape& s, const float* A, const float* B, float* C, bool accumulate) {
  if (s.batch == 0 || s.M == 0 || s.N == 0) return;
  if (s.K == 0) {
    if (!accumulate)
      for (int64_t b = 0; b < s.batch; ++b)
        for (int64_t i = 0; i < s.M * s.N; ++i) C[b * stride_c(s) + i] = 0;
    return;
  }
  DnnlContext& ctx = dnnl_context();
  // Small products (decoding one token, a chunk inside a fused kernel) run on one
  // thread: waking a second thread costs more than the work. They run inside a
  // parallel region of the current team with one thread working, so oneDNN sees
  // omp_in_parallel() and stays serial, and the team is never resized (changing
  // omp_set_num_threads instead made libgomp rebuild its team at every call: a text
  // model trained 5x slower). Decoding a layer at batch 1 spent ~40% of its time in
  // OpenMP barriers before.
  const bool serial = !omp_in_parallel() && s.batch * s.M * s.N * s.K < (int64_t{1} << 20);
  if (serial && omp_get_max_threads() > 1) {
#pragma omp parallel
    {
#pragma omp single
      gemm_execute(ctx, s, A, B, C, accumulate);
    }
  } else {
    gemm_execute(ctx, s, A, B, C, accumulate);
  }
}


void gemm(const GemmShape& s, const double* A, const double* B, double* C, bool accumulate) {
  gemm_loops(s, A, B, C, accumulate);
}

void gemm_naive(const GemmShape& s, const float* A, const float* B, float* C, bool accumulate) {
  gemm_loops(s, A, B, C, accumulate);
}

void gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
             const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (st != dnnl_success) throw std::runtime_error("gemm_ld: dnnl_sgemm failed with status " + std::to_string(st));
}

void gemm_ld(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double* A, int64_t lda,
             const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k)
        acc += (ta ? A[k * lda + m] : A[m * lda + k]) * (tb ? B[n * ldb + k] : B[k * ldb + n]);
      C[m * ldc + n] = alpha * acc + (beta == 0.0 ? 0.0 : beta * C[m * ldc + n]);
    }
}

}  // namespace seqmix
