// The optimizer step alone (issues 8 and 9): grad_norm + clip 1.0 + AdamW over the
// parameter tensors of GPT-2 124M (148 tensors, tied 50257 x 768 embedding) and of a
// small model (~0.8M), old code against new in the same run, on the same buffers.
//   before: the double-precision loops (optim/adam_kernels.h's reference twins) run
//           as the optimizer ran them: grad_norm one sequential double sum, the clip
//           and the update one `omp parallel for` per tensor;
//   after:  clip_grad_norm + Adam::step, and the clip folded into the step
//           (grad_norm + Adam::step(lr, clip_coefficient)).
// Timings are medians; run it with OMP_NUM_THREADS=1 and 2. It needs ~2.1 GB for
// GPT-2 (parameters, gradients, two moments); --small skips it.
//   OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive ./build/bench_optim [--small] [--repeats 3]
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_common.h"
#include "bench/bench_machine.h"
#include "optim/adam_kernels.h"
#include "optim/adamw.h"

using namespace seqmix;

namespace {

// GPT-2's parameter shapes: embeddings, then per layer ln_1, attn (qkv, proj), ln_2,
// mlp (fc, proj), then ln_f; weights decay, biases and norms do not.
Parameters transformer(int64_t vocab, int64_t positions, int64_t d, int64_t layers) {
  Parameters ps;
  auto add = [&](const std::string& name, const Shape& s) {
    Tensor t = Tensor::zeros(s);
    t.set_requires_grad(true);
    ps.push_back({name, t, s.size() >= 2 ? kDecay : kNoDecay});
  };
  add("wte", {vocab, d});
  add("wpe", {positions, d});
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {d});
    add(p + "ln_1.bias", {d});
    add(p + "attn.c_attn.weight", {d, 3 * d});
    add(p + "attn.c_attn.bias", {3 * d});
    add(p + "attn.c_proj.weight", {d, d});
    add(p + "attn.c_proj.bias", {d});
    add(p + "ln_2.weight", {d});
    add(p + "ln_2.bias", {d});
    add(p + "mlp.c_fc.weight", {d, 4 * d});
    add(p + "mlp.c_fc.bias", {4 * d});
    add(p + "mlp.c_proj.weight", {4 * d, d});
    add(p + "mlp.c_proj.bias", {d});
  }
  add("ln_f.weight", {d});
  add("ln_f.bias", {d});
  return ps;
}

// Deterministic values without a generator's cost per element: p ~ 0.01-scale, g ~ 1e-2-scale
// (norm above the clip 1.0 for both models, so the clip scales every call).
void fill(const Parameters& ps) {
  uint32_t s = 12345;
  for (const Parameter& p : ps) {
    float* w = p.tensor.f32();
    float* g = p.tensor.grad_buffer().f32();
    const int64_t n = p.tensor.numel();
    for (int64_t i = 0; i < n; ++i) {
      s = s * 1664525u + 1013904223u;
      const float u = float(s >> 8) * (1.0f / 16777216.0f) - 0.5f;
      w[i] = 0.04f * u;
      g[i] = 1e-2f * u * float(1 + (i & 7));
    }
  }
}

NamedTensors as_named(const Parameters& ps) {
  NamedTensors out;
  for (const Parameter& p : ps) out.push_back({p.name, p.tensor});
  return out;
}

// The code before this change, with its per-tensor parallel regions.
double old_clip(const NamedTensors& params, double max_norm) {
  const double norm = grad_norm_reference(params);
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1.0) return norm;
  for (const auto& [name, p] : params) {
    float* d = p.grad().f32();
    const int64_t n = p.numel();
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(d[i] * coef);
  }
  return norm;
}

void old_step(Adam& opt, double lr) {
  opt.set_step_count(opt.step_count() + 1);
  const int64_t t = opt.step_count();
  for (Adam::Slot& s : opt.slots()) {
    float* p = s.param.f32();
    float* m = s.m.f32();
    float* v = s.v.f32();
    const float* g = s.param.grad().f32();
    const int64_t n = s.param.numel();
#pragma omp parallel
    {
      // schedule(static)'s split of the old loop
      const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
      const int64_t b = n * id / nt, e = n * (id + 1) / nt;
      adam_update_reference<float>(p + b, m + b, v + b, g + b, e - b, lr, opt.options(), s.decay, t);
    }
  }
}

void run(const char* label, const Parameters& ps, int repeats) {
  const NamedTensors params = as_named(ps);
  int64_t count = 0;
  for (const Parameter& p : ps) count += p.tensor.numel();
  fill(ps);
  Adam opt(ps, AdamOptions{true, 0.9, 0.95, 1e-8, 0.1});
  const double lr = 3e-4;
  double norm_old = 0, norm_new = 0, norm_folded = 0;
  auto ms = [&](const std::function<void()>& f) { return bench::median_ms(f, repeats, 1); };
  // The gradients are clipped each call (to norm 1, then by 1/(1 + 1e-6)): the scaling
  // pass runs every time.
  const double before_clip = ms([&] { norm_old = old_clip(params, 1.0); });
  const double before_step = ms([&] { old_step(opt, lr); });
  const double after_clip = ms([&] { norm_new = clip_grad_norm(params, 1.0); });
  const double after_step = ms([&] { opt.step(lr); });
  const double after_folded = ms([&] {
    norm_folded = grad_norm(params);
    opt.step(lr, clip_coefficient(norm_folded, 1.0));
  });
  std::printf("%s: %lld parameters in %zu tensors\n", label, (long long)count, ps.size());
  std::printf("  before: clip %8.2f ms  adamw %8.2f ms  total %8.2f ms   (norm %.9g)\n", before_clip, before_step,
              before_clip + before_step, norm_old);
  std::printf("  after:  clip %8.2f ms  adamw %8.2f ms  total %8.2f ms   (norm %.9g)\n", after_clip, after_step,
              after_clip + after_step, norm_new);
  std::printf("  after, clip folded into the step (grad_norm + step): %8.2f ms   speed-up of the total %.1fx / %.1fx\n",
              after_folded, (before_clip + before_step) / (after_clip + after_step),
              (before_clip + before_step) / after_folded);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool small_only = false;
  int repeats = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--small") {
      small_only = true;
    } else if (a == "--repeats" && i + 1 < argc) {
      repeats = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "bench_optim: unknown argument '%s' (expected --small, --repeats N)\n", a.c_str());
      return 2;
    }
  }
  if (repeats < 1) {
    std::fprintf(stderr, "bench_optim: --repeats must be at least 1\n");
    return 2;
  }
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  std::printf("# grad_norm + clip 1.0 + AdamW (0.9/0.95, decay 0.1), median of %d (small: %d) after 1 warm-up\n",
              repeats, repeats * 10);
  std::printf("# %s\n# %s, OMP_WAIT_POLICY=%s\n# load average at start: %s\n", bench::cpu_summary().c_str(),
              bench::threads_note().c_str(), wait_policy ? wait_policy : "(unset)", bench::load_average().c_str());
  run("small (2 layers, d_model 128, vocab 2048, 256 positions)", transformer(2048, 256, 128, 2), repeats * 10);
  if (!small_only) run("GPT-2 124M (12 layers, d_model 768, vocab 50257, 1024 positions)",
                       transformer(50257, 1024, 768, 12), repeats);
  std::printf("# load average at end: %s\n", bench::load_average().c_str());
  return 0;
}
