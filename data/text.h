// Text corpora (docs/tasks.md#text-corpora): tokenizers and a corpus split into train and
// validation tokens, with random training windows and consecutive evaluation
// windows.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/random.h"
#include "data/options.h"
#include "data/split.h"

namespace seqmix {

// "char": one id per Unicode code point; the vocabulary is the sorted distinct
// code points of the corpus (nanoGPT's shakespeare_char), id = rank.
// "byte": the 256 byte values, id = byte.
class Tokenizer {
 public:
  // The tokenizer of a corpus (char: its distinct code points; byte: fixed).
  // Throws DataError for an unknown kind, or invalid UTF-8 / an empty text
  // for "char".
  static Tokenizer build(const std::string& kind, std::string_view corpus);
  // Rebuilds a tokenizer from kind and vocabulary_utf8() (e.g. from a
  // checkpoint). char: the vocabulary is the UTF-8 text of the code points,
  // which must be non-empty and strictly increasing; byte: it must be empty.
  static Tokenizer from_vocabulary(const std::string& kind, std::string_view vocabulary_utf8);

  const std::string& kind() const { return kind_; }
  int64_t vocab_size() const;

  // Throws DataError for invalid UTF-8 (char), naming the byte offset, or for a
  // character outside the vocabulary, naming it, its code point, its character
  // position and its byte offset.
  std::vector<int32_t> encode(std::string_view text) const;
  // char: UTF-8 of the code points; byte: the bytes themselves (which need
  // not form valid UTF-8 if the ids were sampled). Throws DataError for an id
  // outside [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids) const;

  // char: the vocabulary as UTF-8 text (the characters in id order); byte: "".
  std::string vocabulary_utf8() const;
  // char: the code points in id order; byte: empty.
  const std::vector<char32_t>& code_points() const { return code_points_; }

 private:
  Tokenizer() = default;
  std::string kind_;
  std::vector<char32_t> code_points_;  // sorted (char)
  std::vector<int32_t> dense_;         // code point -> id for code points < dense_.size(), else -1
};

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
// Returns the byte offset of the first invalid sequence, or npos if valid.
size_t utf8_invalid_offset(std::string_view text);
// Encodes one code point as UTF-8 and appends it.
void append_utf8(std::string& out, char32_t cp);

class TextCorpus {
 public:
  // Reads options.path; throws DataError naming the path and the problem for a
  // missing, unreadable, empty or non-UTF-8 file (with the byte offset), for
  // invalid options, and when a split is shorter than seq_len + 1 tokens.
  // With `tokenizer`, encodes with it (e.g. the one of a checkpoint) instead of
  // building one from the text.
  // With all_validation, every token is in the validation split (test) and the
  // train split is empty: for scoring a model on a file it was not trained on.
  static TextCorpus load(const TextOptions& options, const Tokenizer* tokenizer = nullptr,
                         bool all_validation = false);
  // The same from text in memory; `name` stands for the path in messages.
  static TextCorpus from_text(std::string_view text, const TextOptions& options,
                              const std::string& name = "<memory>",
                              const Tokenizer* tokenizer = nullptr, bool all_validation = false);

  const Tokenizer& tokenizer() const { return tokenizer_; }
  const TextOptions& options() const { return options_; }
  int64_t seq_len() const { return options_.seq_len; }
  // train: the first int(n * train_fraction) tokens (as nanoGPT's
  // int(n*0.9)); test: the rest (validation).
  int64_t num_tokens(Split split) const;
  const int32_t* tokens(Split split) const;  // (num_tokens(split))

  // B windows of L+1 consecutive tokens starting uniformly in
  // [0, num_tokens - L): inputs = the first L, labels = the last L (the next
  // token of each input). inputs, labels resized to (B, L) row-major. Draws B
  // numbers from rng.
  void sample_batch(Split split, int64_t B, Generator& rng, std::vector<int32_t>& inputs,
                    std::vector<int32_t>& labels) const;

  // Deterministic evaluation over a whole split. Window w has inputs tokens
  // [w*L, w*L + L) and labels tokens [w*L + 1, w*L + L + 1): the windows do
  // not overlap and predict every token after the first exactly once
  // (num_tokens - 1 targets). The last window may be partial: its missing
  // inputs are 0 and their labels -100, which, the models being causal, does
  // not change the loss at the real positions.
  int64_t num_eval_windows(Split split) const;
  // Fills windows [first, first + B) clipped to num_eval_windows, resizing
  // inputs and labels to (rows, L); returns rows (0 once past the end).
  int64_t eval_batch(Split split, int64_t first, int64_t B, std::vector<int32_t>& inputs,
                     std::vector<int32_t>& labels) const;

 private:
  TextCorpus(Tokenizer tokenizer, TextOptions options)
      : tokenizer_(std::move(tokenizer)), options_(std::move(options)) {}
  Tokenizer tokenizer_;
  TextOptions options_;
  std::vector<int32_t> tokens_;  // the whole corpus; train = [0, n_train_)
  int64_t n_train_ = 0;
};

}  // namespace seqmix
