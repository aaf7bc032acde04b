// Training and evaluation windows over a flat array of token ids, shared by the
// data sources that read a token stream (text corpora, token files).
//
// Training: B windows of L+1 consecutive tokens, each starting uniformly in
// [0, n - L) as nanoGPT's get_batch: inputs are the first L tokens, labels the
// last L (every label is the next token of its input).
// Evaluation: window w has inputs [w*L, w*L + L) and labels shifted by one, so the
// windows do not overlap and every token after the first is predicted exactly
// once; the last window may be partial (missing inputs 0, labels -100, which a
// causal model ignores).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/random.h"
#include "core/ops.h"  // kIgnoreLabel

namespace seqmix {

template <class Token>
void sample_token_windows(const Token* tok, int64_t n, int64_t L, int64_t B, Generator& rng,
                          std::vector<int32_t>& inputs, std::vector<int32_t>& labels) {
  inputs.resize(static_cast<size_t>(B * L));
  labels.resize(static_cast<size_t>(B * L));
  for (int64_t b = 0; b < B; ++b) {
    const int64_t start = rng.randint(0, n - L);
    std::copy(tok + start, tok + start + L, inputs.data() + b * L);
    std::copy(tok + start + 1, tok + start + 1 + L, labels.data() + b * L);
  }
}

inline int64_t count_eval_windows(int64_t n, int64_t L) { return (n - 1 + L - 1) / L; }

// Fills windows [first, first + B) clipped to the window count; returns the rows filled.
template <class Token>
int64_t fill_eval_windows(const Token* tok, int64_t n, int64_t L, int64_t first, int64_t B,
                          std::vector<int32_t>& inputs, std::vector<int32_t>& labels) {
  const int64_t rows = std::max<int64_t>(0, std::min(B, count_eval_windows(n, L) - first));
  inputs.resize(static_cast<size_t>(rows * L));
  labels.resize(static_cast<size_t>(rows * L));
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t start = (first + r) * L;
    for (int64_t t = 0; t < L; ++t) {
      const int64_t idx = start + t;
      const bool real = idx + 1 < n;  // a position is real when it has a next token
      inputs[r * L + t] = real ? static_cast<int32_t>(tok[idx]) : 0;
      labels[r * L + t] = real ? static_cast<int32_t>(tok[idx + 1]) : kIgnoreLabel;
    }
  }
  return rows;
}

}  // namespace seqmix
