// One training step of a GPT-2-style LanguageModel on random tokens (issue 9):
// forward with the loss over every position, backward, gradient clipping at 1.0,
// AdamW. Prints ms/step (median of repeats after warm-up) and its phases, model
// FLOPs per step, achieved GFLOP/s, the GFLOP/s of raw dnnl_sgemm on the model's
// own linear-layer GEMM shapes measured in the same run, peak RSS, CPU flags,
// load average and the thread count.
//
//   OMP_NUM_THREADS=2 ./build/bench_train_step                      # gpt2_124m, B=4, T=64
//   OMP_NUM_THREADS=2 ./build/bench_train_step --B 4 --T 256
//   OMP_NUM_THREADS=2 ./build/bench_train_step --layers 4 --d-model 256 --heads 4 --vocab 8192
//
// Preset gpt2_124m: attention, 12 layers, 12 heads, d_model 768, GELU MLP 4x,
// learned positions 1024, tied embeddings, layernorm, vocab 50304: GPT-2's 50257
// padded to a multiple of 128 as llm.c does (124,475,904 parameters). Tokens are
// drawn from the real 50257 ids, so padded rows are never a target, as in llm.c.
//
// FLOPs are counted per GEMM (2 M N K each): the five linear maps of a layer and
// the tied output head, forward (x W^T), backward dx (dy W) and dW (dy^T x), plus
// the attention core's Q K^T and P V over the causal triangle (T(T+1)/2 pairs per
// head), whose backward is counted as twice its forward (dQ, dK, dP, dV). The
// FlashAttention recomputation of Q K^T in backward, layernorm, GELU, softmax
// and AdamW are not counted: model FLOPs, not hardware FLOPs.
#include <oneapi/dnnl/dnnl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "bench/bench_machine.h"
#include "core/random.h"
#include "core/tape.h"
#include "layers/model.h"
#include "optim/adamw.h"

using namespace seqmix;

namespace {

struct Args {
  int64_t B = 4, T = 64;
  int64_t layers = 12, heads = 12, d_model = 768, vocab = 50304, token_range = 50257, max_pos = 1024;
  int repeats = 5, warmup = 1;
  bool sgemm = true;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "bench_train_step: %s\n"
               "usage: bench_train_step [--preset gpt2_124m] [--B n] [--T n] [--layers n] [--heads n]\n"
               "                        [--d-model n] [--vocab n] [--max-pos n] [--repeats n] [--warmup n]\n"
               "                        [--no-sgemm]\n",
               why);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  bool vocab_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--no-sgemm") {
      a.sgemm = false;
      continue;
    }
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const std::string v = argv[++i];
    if (k == "--preset") {
      if (v != "gpt2_124m") usage(("unknown preset '" + v + "' (known: gpt2_124m)").c_str());
      continue;  // the defaults are the preset
    }
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (*end != '\0' || n <= 0) usage((k + " needs a positive integer, got '" + v + "'").c_str());
    if (k == "--B") a.B = n;
    else if (k == "--T") a.T = n;
    else if (k == "--layers") a.layers = n;
    else if (k == "--heads") a.heads = n;
    else if (k == "--d-model") a.d_model = n;
    else if (k == "--vocab") a.vocab = n, vocab_set = true;
    else if (k == "--max-pos") a.max_pos = n;
    else if (k == "--repeats") a.repeats = int(n);
    else if (k == "--warmup") a.warmup = int(n);
    else usage(("unknown flag " + k).c_str());
  }
  if (vocab_set) a.token_range = a.vocab;
  if (a.T > a.max_pos) usage("--T is larger than --max-pos (learned positions)");
  if (a.d_model % a.heads != 0) usage("--heads must divide --d-model");
  return a;
}

// One GEMM shape of the step and how many times a step runs it.
struct GemmUse {
  int64_t M, N, K;
  bool ta, tb;
  int64_t count;
  std::string what;
  double flops() const { return 2.0 * double(M) * double(N) * double(K) * double(count); }
};

// The linear-layer GEMMs of one step: for a weight (out, in) over n rows,
// forward n x out x in (x W^T), backward dx n x in x out (dy W), dW out x in x n (dy^T x).
std::vector<GemmUse> linear_gemms(const Args& a) {
  const int64_t n = a.B * a.T, D = a.d_model;
  std::vector<GemmUse> g;
  auto add = [&](int64_t out, int64_t in, int64_t count, const std::string& what) {
    g.push_back({n, out, in, false, true, count, what + " fwd"});
    g.push_back({n, in, out, false, false, count, what + " dx"});
    g.push_back({out, in, n, true, false, count, what + " dW"});
  };
  add(3 * D, D, a.layers, "qkv");
  add(D, D, a.layers, "attn out");
  add(4 * D, D, a.layers, "mlp fc1");
  add(D, 4 * D, a.layers, "mlp fc2");
  add(a.vocab, D, 1, "head (tied)");
  return g;
}

// Q K^T and P V over the causal triangle, forward once and backward twice.
double attention_core_flops(const Args& a) {
  const double pairs = double(a.T) * double(a.T + 1) / 2.0;
  const double fwd = 2.0 /* GEMMs */ * 2.0 * double(a.B) * double(a.d_model) * pairs * double(a.layers);
  return 3.0 * fwd;
}

double sgemm_ms(const GemmUse& u, Generator& gen) {
  std::vector<float> A(size_t(u.M * u.K)), Bm(size_t(u.K * u.N)), C(size_t(u.M * u.N));
  for (auto& x : A) x = float(gen.uniform(-1, 1));
  for (auto& x : Bm) x = float(gen.uniform(-1, 1));
  const double flop = 2.0 * double(u.M) * double(u.N) * double(u.K);
  const int reps = flop > 2e9 ? 5 : flop > 2e8 ? 10 : 30;
  return bench::median_ms(
      [&] {
        dnnl_sgemm(u.ta ? 'T' : 'N', u.tb ? 'T' : 'N', u.M, u.N, u.K, 1.0f, A.data(), u.ta ? u.M : u.K, Bm.data(),
                   u.tb ? u.K : u.N, 0.0f, C.data(), u.N);
      },
      reps, 2);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  std::printf("# seqmix training step, attention LM: layers %lld, heads %lld, d_model %lld, vocab %lld, "
              "learned positions %lld, GELU MLP 4x, tied, layernorm; B=%lld T=%lld\n",
              (long long)a.layers, (long long)a.heads, (long long)a.d_model, (long long)a.vocab, (long long)a.max_pos,
              (long long)a.B, (long long)a.T);
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");  // decides the figure on a shared machine (RESULTS.md)
  std::printf("# %s\n# %s, OMP_WAIT_POLICY=%s\n# load average at start: %s\n", bench::cpu_summary().c_str(),
              bench::threads_note().c_str(), wait_policy ? wait_policy : "(unset)", bench::load_average().c_str());

  ModelOptions mo;
  mo.vocab_size = a.vocab;
  mo.d_model = a.d_model;
  mo.n_layers = a.layers;
  mo.norm = "layernorm";
  mo.mlp = "gelu";
  mo.max_position_embeddings = a.max_pos;
  mo.tie_embeddings = true;
  mo.mixer.type = "attention";
  mo.mixer.attention.num_heads = a.heads;
  Generator init_gen(1234);
  LanguageModel model(mo, LayerInit{&init_gen, a.layers, DType::f32});
  const NamedTensors params = model.named_parameters();
  std::printf("parameters: %lld\n", (long long)model.num_parameters());

  // Random next-token data: labels are the inputs shifted by one, as in a token file window.
  Generator data_gen(42);
  std::vector<int32_t> seq(size_t(a.B * (a.T + 1)));
  for (auto& t : seq) t = int32_t(data_gen.randint(0, a.token_range));
  std::vector<int32_t> in(size_t(a.B * a.T)), lab(size_t(a.B * a.T));
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = 0; t < a.T; ++t) {
      in[size_t(b * a.T + t)] = seq[size_t(b * (a.T + 1) + t)];
      lab[size_t(b * a.T + t)] = seq[size_t(b * (a.T + 1) + t + 1)];
    }
  const Tensor tokens = Tensor::from_vector({a.B, a.T}, in), labels = Tensor::from_vector({a.B, a.T}, lab);

  Adam opt(params, AdamOptions{true, 0.9, 0.95, 1e-8, 0.1});
  Generator drop(0);
  std::vector<double> t_step, t_fwd, t_bwd, t_clip, t_opt;
  double first_loss = 0, last_loss = 0;
  using clock = std::chrono::steady_clock;
  auto ms = [](clock::time_point a0, clock::time_point a1) { return std::chrono::duration<double, std::milli>(a1 - a0).count(); };
  for (int i = 0; i < a.warmup + a.repeats; ++i) {
    const auto c0 = clock::now();
    LossResult r = model.loss(tokens, labels, true, drop);
    const double loss = r.loss.item();
    const auto c1 = clock::now();
    backward(r.loss);
    const auto c2 = clock::now();
    clip_grad_norm(params, 1.0);
    const auto c3 = clock::now();
    opt.step(3e-4);
    opt.zero_grad();
    const auto c4 = clock::now();
    if (!std::isfinite(loss)) {
      std::fprintf(stderr, "bench_train_step: loss is %g at step %d\n", loss, i + 1);
      return 1;
    }
    if (i == 0) first_loss = loss;
    last_loss = loss;
    std::printf("step %d%s: %.1f ms (forward+loss %.1f, backward %.1f, clip %.1f, adamw %.1f), loss %.4f\n", i + 1,
                i < a.warmup ? " (warm-up)" : "", ms(c0, c4), ms(c0, c1), ms(c1, c2), ms(c2, c3), ms(c3, c4), loss);
    std::fflush(stdout);
    if (i < a.warmup) continue;
    t_step.push_back(ms(c0, c4));
    t_fwd.push_back(ms(c0, c1));
    t_bwd.push_back(ms(c1, c2));
    t_clip.push_back(ms(c2, c3));
    t_opt.push_back(ms(c3, c4));
  }
  const double peak_mib = bench::peak_rss_mib();  // before the sgemm buffers below
  const double step_ms = median(t_step);

  const std::vector<GemmUse> gemms = linear_gemms(a);
  double linear_flops = 0;
  for (const auto& g : gemms) linear_flops += g.flops();
  const double core_flops = attention_core_flops(a);
  const double model_flops = linear_flops + core_flops;
  const double tokens_per_step = double(a.B * a.T);

  std::printf("\nms/step (median of %d after %d warm-up): %.1f  [forward+loss %.1f, backward %.1f, clip %.1f, adamw %.1f]\n",
              a.repeats, a.warmup, step_ms, median(t_fwd), median(t_bwd), median(t_clip), median(t_opt));
  std::printf("tokens/s: %.0f\n", tokens_per_step / (step_ms / 1e3));
  std::printf("loss: first %.4f (ln %lld = %.4f), last %.4f\n", first_loss, (long long)a.token_range,
              std::log(double(a.token_range)), last_loss);
  std::printf("model FLOPs/step: %.3e (linear GEMMs %.3e, causal attention core %.3e; 6 * params * tokens = %.3e)\n",
              model_flops, linear_flops, core_flops, 6.0 * double(model.num_parameters()) * tokens_per_step);
  const double achieved = model_flops / (step_ms * 1e6);
  std::printf("achieved: %.1f GFLOP/s (model FLOPs / step time)\n", achieved);
  std::printf("peak RSS: %.0f MiB\n", peak_mib);

  double sgemm_gflops = 0, sgemm_total_ms = 0;
  if (a.sgemm) {
    std::printf("\nraw dnnl_sgemm on the step's linear-layer GEMM shapes (same run, same threads):\n");
    std::printf("%-18s %-22s %6s %10s %9s\n", "GEMM", "M x N x K", "calls", "ms each", "GFLOP/s");
    Generator gen(7);
    for (const auto& g : gemms) {
      const double t = sgemm_ms(g, gen);
      sgemm_total_ms += t * double(g.count);
      char shape[64];
      std::snprintf(shape, sizeof shape, "%lldx%lldx%lld %c%c", (long long)g.M, (long long)g.N, (long long)g.K,
                    g.ta ? 'T' : 'N', g.tb ? 'T' : 'N');
      std::printf("%-18s %-22s %6lld %10.2f %9.1f\n", g.what.c_str(), shape, (long long)g.count, t,
                  2.0 * double(g.M) * double(g.N) * double(g.K) / (t * 1e6));
    }
    sgemm_gflops = linear_flops / (sgemm_total_ms * 1e6);
    std::printf("sgemm: %.1f GFLOP/s over the linear GEMMs (%.1f ms of a step if they ran at that rate)\n", sgemm_gflops,
                sgemm_total_ms);
    std::printf("step at %.1f%% of sgemm GFLOP/s (model FLOPs / step time against sgemm's rate on the same shapes); "
                "linear GEMMs alone at sgemm speed would take %.1f%% of the step\n",
                100.0 * achieved / sgemm_gflops, 100.0 * sgemm_total_ms / step_ms);
  }
  std::printf("# load average at end: %s\n", bench::load_average().c_str());
  // One line for scripts (bench/compare_llmc.sh).
  std::printf("RESULT seqmix B=%lld T=%lld ms_step=%.1f gflops=%.2f sgemm_gflops=%.2f model_flops=%.4e peak_rss_mib=%.0f\n",
              (long long)a.B, (long long)a.T, step_ms, achieved, sgemm_gflops, model_flops, peak_mib);
  return 0;
}
