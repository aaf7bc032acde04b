// Plain option structs for the data sources (docs/tasks.md).
// train/config.* fills them from YAML; data/ never reads config files.
#pragma once

#include <cstdint>
#include <string>

namespace seqmix {

// A synthetic recall task. Fields a task does not use are ignored by it.
struct RecallTaskOptions {
  std::string task = "mqar";  // mqar | associative_recall | induction_heads | selective_copying
  int64_t vocab_size = 8192;
  int64_t seq_len = 64;
  int64_t num_kv_pairs = 4;        // mqar, associative_recall
  double power_a = 0.01;           // mqar
  bool random_non_queries = true;  // mqar
  int64_t num_tokens_to_copy = 16; // selective_copying: M data tokens
  int64_t num_train_examples = 100000;
  int64_t num_test_examples = 3000;
};

struct TextOptions {
  std::string path;              // any UTF-8 text file
  std::string tokenizer = "char";  // char | byte
  int64_t seq_len = 64;          // context length L (windows of L+1 tokens)
  double train_fraction = 0.9;
};

// Pre-tokenized uint16 files (data/token_file.h): separate train and validation files.
struct TokenFileOptions {
  std::string train_path;        // tokens for training
  std::string val_path;          // tokens for validation
  std::string format = "auto";   // auto | nanogpt | llmc
  int64_t vocab_size = 50304;    // every token id must be < vocab_size
  int64_t seq_len = 1024;        // context length L (windows of L+1 tokens)
};

struct DataOptions {
  std::string kind = "recall";  // recall | text | tokens
  RecallTaskOptions recall;
  TextOptions text;
  TokenFileOptions tokens;
  uint64_t seed = 0;  // data seed; train and test streams are derived from it disjointly

  // The context length of the chosen kind.
  int64_t seq_len() const {
    if (kind == "text") return text.seq_len;
    if (kind == "tokens") return tokens.seq_len;
    return recall.seq_len;
  }
};

}  // namespace seqmix
