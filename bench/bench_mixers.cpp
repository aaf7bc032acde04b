// Mixer benchmarks (issue 3), one run so that ratios are comparable:
//  1. forward+backward of one layer of each mixer at B=8, L=1024, D=256;
//  2. a full training step (forward, backward, AdamW) of the 2-layer MQAR model
//     at B=64, L=256, D=128, V=8192 for each mixer;
//  3. decode tokens/s of one layer (batch 1, D=256) after contexts of 1k and 8k
//     tokens: flat for the fixed-state mixers, falling for attention's KV cache.
//   OMP_NUM_THREADS=2 ./build/bench_mixers [--quick]
#include <cstdio>
#include <cstring>
#include <map>

#include "bench/bench_common.h"
#include "core/ops.h"
#include "core/tape.h"
#include "data/recall_dataset.h"
#include "layers/mixer_factory.h"
#include "layers/mixer_registry.h"
#include "layers/model.h"
#include "optim/adamw.h"

using namespace seqmix;

namespace {

// Every registered mixer at its defaults, except the attentions' head count (the documented
// default of one head is not what anyone runs at D = 256).
MixerOptions mixer_options(const std::string& type) {
  MixerOptions m;
  m.type = type;
  m.attention.num_heads = 4;
  m.linear_attention.num_heads = 4;
  return m;
}

Tensor random_tensor(const Shape& s, Generator& g) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = float(g.uniform(-1, 1));
  return t;
}

void layer_benchmark(bool quick) {
  const int64_t B = 8, L = 1024, D = 256;
  std::printf("\n## One layer, forward+backward, B=%lld L=%lld D=%lld\n", (long long)B, (long long)L, (long long)D);
  std::printf("%-18s %10s %10s %12s\n", "mixer", "fwd ms", "fwd+bwd ms", "tokens/s");
  for (const std::string& name : mixer_names()) {
    const char* type = name.c_str();
    Generator g(1);
    auto mixer = make_mixer(mixer_options(type), D, LayerInit{&g, 2, DType::f32});
    Tensor x = random_tensor({B, L, D}, g);
    x.set_requires_grad(true);
    Generator drop(0);
    const int reps = quick ? 2 : 5;
    const double fwd = bench::median_ms(
        [&] {
          NoGradGuard ng;
          mixer->forward(x, true, drop);
        },
        reps);
    const double both = bench::median_ms(
        [&] {
          Tensor y = mixer->forward(x, true, drop);
          backward(sum(y));
          x.zero_grad();
          NamedTensors ps;
          mixer->named_parameters("", ps);
          for (auto& [n, p] : ps) p.zero_grad();
        },
        reps);
    std::printf("%-18s %10.1f %10.1f %12.0f\n", type, fwd, both, B * L / (both / 1e3));
  }
}

void train_step_benchmark(bool quick) {
  const int64_t B = 64, L = 256, D = 128, V = 8192;
  std::printf("\n## Training step of the 2-layer MQAR model, B=%lld L=%lld D=%lld V=%lld (K=16)\n", (long long)B,
              (long long)L, (long long)D, (long long)V);
  std::printf("%-18s %10s %12s\n", "mixer", "step ms", "tokens/s");
  RecallTaskOptions task;
  task.vocab_size = V;
  task.seq_len = L;
  task.num_kv_pairs = 16;
  RecallDataset data(task, B, 7, Split::train);
  std::vector<int64_t> idx(B);
  for (int64_t i = 0; i < B; ++i) idx[i] = i;
  std::vector<int32_t> in, lab;
  data.gather(idx, in, lab);
  Tensor tokens = Tensor::from_vector({B, L}, in), labels = Tensor::from_vector({B, L}, lab);
  for (const std::string& name : mixer_names()) {
    const char* type = name.c_str();
    ModelOptions mo;
    mo.vocab_size = V;
    mo.d_model = D;
    mo.n_layers = 2;
    mo.mixer = mixer_options(type);
    mo.mixer.attention.num_heads = 1;
    mo.max_position_embeddings = std::string(type) == "attention" ? L : 0;
    Generator g(3);
    LanguageModel model(mo, LayerInit{&g, 2, DType::f32});
    Adam opt(model.parameters(), AdamOptions{true, 0.9, 0.999, 1e-8, 0.1});
    NamedTensors params = model.named_parameters();
    Generator drop(0);
    const double ms = bench::median_ms(
        [&] {
          LossResult r = model.loss(tokens, labels, true, drop);
          backward(r.loss);
          clip_grad_norm(params, 1.0);
          opt.step(1e-3);
          opt.zero_grad();
        },
        quick ? 2 : 5);
    std::printf("%-18s %10.1f %12.0f\n", type, ms, B * L / (ms / 1e3));
  }
}

void decode_benchmark(bool quick) {
  const int64_t D = 256;
  std::printf("\n## Decoding one layer, batch 1, D=%lld: tokens/s after a context of n tokens\n", (long long)D);
  std::printf("%-18s %12s %12s %14s %14s\n", "mixer", "ctx 1k tok/s", "ctx 8k tok/s", "state 1k", "state 8k");
  for (const std::string& name : mixer_names()) {
    const char* type = name.c_str();
    Generator g(5);
    auto mixer = make_mixer(mixer_options(type), D, LayerInit{&g, 2, DType::f32});
    auto state = mixer->init_state(1);
    Tensor x = random_tensor({1, D}, g);
    std::map<int64_t, double> rate;
    int64_t t = 0;
    const int steps = quick ? 20 : 200;
    for (int64_t ctx : {1024, 8192}) {
      for (; t < ctx; ++t) mixer->step(*state, x);  // fill the state (KV cache) to the context length
      const auto a = std::chrono::steady_clock::now();
      for (int i = 0; i < steps; ++i) mixer->step(*state, x);
      t += steps;
      rate[ctx] = steps / std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count();
    }
    std::printf("%-18s %12.0f %12.0f %14lld %14lld\n", type, rate[1024], rate[8192],
                (long long)mixer->state_size(1024), (long long)mixer->state_size(8192));
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    else {
      std::fprintf(stderr, "usage: bench_mixers [--quick] [--only layers|train|decode]\n");
      return 2;
    }
  }
  std::printf("# seqmix mixer benchmarks; %s\n", bench::threads_note().c_str());
  if (only.empty() || only == "layers") layer_benchmark(quick);
  if (only.empty() || only == "train") train_step_benchmark(quick);
  if (only.empty() || only == "decode") decode_benchmark(quick);
  return 0;
}
