// Pre-tokenized datasets, read by memory map: what GPT-2-sized models train on.
//
// Two on-disk formats of little-endian uint16 token ids are read:
// - nanoGPT's train.bin / val.bin: the raw tokens, nothing else;
// - llm.c's .bin shards: a header of 256 int32 (magic 20240520, version 1, the token
//   count), then the tokens.
// `format: auto` takes a file whose first int32 is llm.c's magic number (and that is
// at least a header long) as llm.c's, any other as nanoGPT's.
// Every token id is checked against the vocabulary when the file is opened, so a bad
// file is refused with its path and the byte offset of the problem, not half-way
// through a run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/options.h"  // TokenFileOptions
#include "data/split.h"

namespace seqmix {

inline constexpr int32_t kLlmcMagic = 20240520;
inline constexpr int64_t kLlmcHeaderInts = 256;

// One read-only memory-mapped token file. Move-only; unmaps on destruction.
class TokenFile {
 public:
  // Throws DataError naming the path (and the byte offset where one applies) for a
  // missing or unreadable file, an empty one, an odd byte count, a bad llm.c header
  // (short, wrong magic, unsupported version, token count disagreeing with the size),
  // or a token id >= vocab_size.
  static TokenFile open(const std::string& path, const std::string& format, int64_t vocab_size);

  TokenFile(TokenFile&& other) noexcept;
  TokenFile& operator=(TokenFile&& other) noexcept;
  TokenFile(const TokenFile&) = delete;
  TokenFile& operator=(const TokenFile&) = delete;
  ~TokenFile();

  const std::string& path() const { return path_; }
  const std::string& format() const { return format_; }  // nanogpt | llmc, as detected
  const uint16_t* tokens() const { return tokens_; }     // (size())
  int64_t size() const { return num_tokens_; }

 private:
  TokenFile() = default;
  void release();
  std::string path_;
  std::string format_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const uint16_t* tokens_ = nullptr;
  int64_t num_tokens_ = 0;
};

// Writes tokens as a file of the given format (nanogpt or llmc): for tests and for
// users converting data. Throws DataError if the file cannot be written or an id
// does not fit in uint16.
void write_token_file(const std::string& path, const std::string& format,
                      const std::vector<int64_t>& tokens);

// The train and validation files of a tokens dataset, with the same windows as a
// text corpus (data/token_windows.h).
class TokenDataset {
 public:
  // Throws DataError for bad options (naming the key), for a bad file (TokenFile::open),
  // or for a file with fewer than seq_len + 1 tokens.
  static TokenDataset open(const TokenFileOptions& options);

  const TokenFileOptions& options() const { return options_; }
  int64_t seq_len() const { return options_.seq_len; }
  int64_t num_tokens(Split split) const { return file(split).size(); }
  const uint16_t* tokens(Split split) const { return file(split).tokens(); }

  // B random windows (inputs, labels resized to (B, L)); draws B numbers from rng.
  void sample_batch(Split split, int64_t B, Generator& rng, std::vector<int32_t>& inputs,
                    std::vector<int32_t>& labels) const;
  int64_t num_eval_windows(Split split) const;
  int64_t eval_batch(Split split, int64_t first, int64_t B, std::vector<int32_t>& inputs,
                     std::vector<int32_t>& labels) const;

 private:
  TokenDataset(TokenFileOptions options, TokenFile train, TokenFile val)
      : options_(std::move(options)), train_(std::move(train)), val_(std::move(val)) {}
  const TokenFile& file(Split split) const { return split == Split::train ? train_ : val_; }
  TokenFileOptions options_;
  TokenFile train_;
  TokenFile val_;
};

}  // namespace seqmix
