// What the training loop draws batches from: a pre-generated recall task (epochs
// over shuffled examples), a text corpus or pre-tokenized files (random windows). The position in the
// stream is a few integers, saved in checkpoints so that a resumed run draws the
// same batches as an uninterrupted one.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "data/options.h"
#include "data/text.h"

namespace seqmix {

struct Batch {
  Tensor inputs;  // int32 (B, L)
  Tensor labels;  // int32 (B, L), -100 where not scored
};

class DataSource {
 public:
  virtual ~DataSource() = default;
  virtual Batch next_train_batch() = 0;
  // Recall: full batches per epoch (the last partial batch is dropped); text: 0.
  virtual int64_t batches_per_epoch() const = 0;
  // Training batches drawn so far (recall) or windows sampled (text).
  virtual std::map<std::string, uint64_t> state() const = 0;
  virtual void set_state(const std::map<std::string, uint64_t>& s) = 0;
  // Deterministic evaluation batches (the recall test set, or validation windows).
  virtual int64_t num_eval_batches() const = 0;
  virtual Batch eval_batch(int64_t i) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int64_t seq_len() const = 0;
  virtual const Tokenizer* tokenizer() const { return nullptr; }
  // Human-readable description for the log.
  virtual std::string describe() const = 0;
};

// Rows [begin, end) of a batch (a copy): a rank's slice of the global batch.
Batch batch_rows(const Batch& b, int64_t begin, int64_t end);

// batch_size: the training and evaluation batch; eval_batches: text and tokens, the
// number of validation batches per evaluation (0 = the whole split).
// tokenizer: for text, encode with this one (e.g. from a checkpoint).
// whole_text: text only, evaluate on every token of the file (eval on a file the
// model was not trained on) instead of its last 10%; there is no training split.
std::unique_ptr<DataSource> make_data_source(const DataOptions& opt, int64_t batch_size, int64_t eval_batches,
                                             const Tokenizer* tokenizer = nullptr, bool whole_text = false);

}  // namespace seqmix
