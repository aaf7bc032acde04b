// `seqmix logits`: the logits a checkpoint's model gives a token sequence, as JSON
// or .npy, so that other implementations (python/seqmix_torch) can be compared with
// seqmix number for number.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace seqmix {

struct LogitsArgs {
  std::string checkpoint;
  std::string tokens;       // "1,2,3" (commas and/or spaces)
  std::string tokens_file;  // the same format in a file
  std::string text;         // encoded with the checkpoint's tokenizer (text models)
  std::string npy;          // write the (L, V) float32 logits here instead of into the JSON
  bool recurrent = false;   // one token at a time through the recurrent forms
};

// Exactly one of tokens, tokens_file, text. Prints one JSON object: checkpoint, step,
// form, tokens, vocab_size and logits ((L, V) as nested arrays, each float printed
// so that it reads back to the same float32), or "npy" naming the file written.
int cmd_logits(const LogitsArgs& args, std::ostream& out);

// Token ids from "1, 2 3" (commas and/or whitespace). `where` names the source in
// messages ("--tokens" or a file name); errors give the line and the item.
std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& where);

// Writes a 2-D float32 array as a NumPy .npy file (format 1.0, little-endian, C order).
void write_npy_f32(const std::string& path, const float* data, int64_t rows, int64_t cols);

}  // namespace seqmix
