#include "train/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "core/tape.h"

namespace seqmix {

int32_t pick_token(const float* logits, int64_t V, const SampleOptions& opt, Generator& gen) {
  if (opt.temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  int64_t k = opt.top_k > 0 ? std::min(opt.top_k, V) : V;
  if (k < V)
    std::partial_sort(ids.begin(), ids.begin() + k, ids.end(),
                      [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  double mx = -INFINITY;
  for (int64_t i = 0; i < k; ++i) mx = std::max(mx, double(logits[ids[i]]));
  std::vector<double> p(k);
  double total = 0;
  for (int64_t i = 0; i < k; ++i) total += p[i] = std::exp((logits[ids[i]] - mx) / opt.temperature);
  double u = gen.uniform() * total;
  for (int64_t i = 0; i < k; ++i) {
    u -= p[i];
    if (u < 0) return ids[i];
  }
  return ids[k - 1];
}

std::vector<int32_t> generate(const LanguageModel& model, const std::vector<int32_t>& prompt, const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt is empty");
  NoGradGuard no_grad;
  const int64_t V = model.options().vocab_size;
  const int64_t max_pos = model.options().max_position_embeddings;
  if (max_pos > 0 && static_cast<int64_t>(prompt.size()) + opt.max_new_tokens > max_pos)
    throw std::invalid_argument("generate: prompt (" + std::to_string(prompt.size()) + ") + max_new_tokens (" +
                                std::to_string(opt.max_new_tokens) + ") exceeds max_position_embeddings = " +
                                std::to_string(max_pos));
  Generator gen(opt.seed);
  DecodeState state = model.init_state(1);
  Tensor logits;
  for (int32_t tok : prompt) logits = model.step(state, Tensor::from_vector({1}, std::vector<int32_t>{tok}));
  std::vector<int32_t> out;
  for (int64_t i = 0; i < opt.max_new_tokens; ++i) {
    Tensor l32 = logits.dtype() == DType::f32 ? logits : logits.to(DType::f32);
    const int32_t next = pick_token(l32.f32(), V, opt, gen);
    out.push_back(next);
    if (on_token) on_token(next);
    if (i + 1 < opt.max_new_tokens) logits = model.step(state, Tensor::from_vector({1}, std::vector<int32_t>{next}));
  }
  return out;
}

}  // namespace seqmix
