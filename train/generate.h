// Autoregressive generation through the recurrent forms: the prompt is fed one
// token at a time into the mixers' states (attention: its KV cache), then each
// new token is drawn from the last logits and fed back.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "layers/model.h"

namespace seqmix {

struct SampleOptions {
  int64_t max_new_tokens = 200;
  double temperature = 1.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // 0: the whole vocabulary
  uint64_t seed = 0;
};

// Calls on_token for every generated token as it is made; returns them all.
// prompt must not be empty.
std::vector<int32_t> generate(const LanguageModel& model, const std::vector<int32_t>& prompt, const SampleOptions& opt,
                              const std::function<void(int32_t)>& on_token = {});

// Picks the next token from logits (V) as SampleOptions says.
int32_t pick_token(const float* logits, int64_t V, const SampleOptions& opt, Generator& gen);

}  // namespace seqmix
