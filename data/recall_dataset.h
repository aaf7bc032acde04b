// A pre-generated set of recall-task examples (docs/tasks.md), and shuffled
// epochs over it.
//
// Example i of a split is generated from its own stream,
//   Generator(seed).fork(split_id(split) * 2^40 + i)      (train 0, test 1),
// so the data are a pure function of (options, seed, split, i): independent of
// the thread count and of num_examples (a larger set extends a smaller one),
// and train and test never share a stream.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "data/options.h"
#include "data/recall_tasks.h"
#include "data/split.h"

namespace seqmix {

class RecallDataset {
 public:
  // Validates the options (DataError) and generates num_examples examples in
  // parallel with OpenMP. num_examples must be in [0, 2^40).
  RecallDataset(const RecallTaskOptions& options, int64_t num_examples, uint64_t seed, Split split);

  // The train set (options.recall.num_train_examples) or the test set
  // (num_test_examples) of data.recall with seed data.seed.
  static RecallDataset from_options(const DataOptions& data, Split split);

  // The stream of example i: split_id * 2^40 + i.
  static uint64_t example_stream(Split split, int64_t i);

  int64_t size() const { return num_examples_; }
  int64_t seq_len() const { return options_.seq_len; }
  int64_t vocab_size() const { return options_.vocab_size; }
  Split split() const { return split_; }
  uint64_t seed() const { return seed_; }
  const RecallTaskOptions& options() const { return options_; }

  // Row i: (L). Throws DataError for i outside [0, size()).
  const int32_t* inputs(int64_t i) const;
  const int32_t* labels(int64_t i) const;
  // All examples: (size(), L) row-major.
  std::span<const int32_t> all_inputs() const { return {inputs_.get(), total()}; }
  std::span<const int32_t> all_labels() const { return {labels_.get(), total()}; }
  // Labels that are scored (!= -100) over the whole set: the denominator of accuracy.
  int64_t num_labelled() const { return num_labelled_; }

  // Copies the rows `indices` into inputs_out and labels_out, resized to
  // (B, L) row-major with B = indices.size(). Throws DataError for an index
  // outside [0, size()).
  void gather(const std::vector<int64_t>& indices, std::vector<int32_t>& inputs_out,
              std::vector<int32_t>& labels_out) const;

 private:
  RecallTaskOptions options_;
  int64_t num_examples_ = 0;
  uint64_t seed_ = 0;
  Split split_ = Split::train;
  int64_t num_labelled_ = 0;
  // Immutable once generated, so copies of a dataset share them.
  std::shared_ptr<int32_t> inputs_;  // (N, L)
  std::shared_ptr<int32_t> labels_;  // (N, L)

  size_t total() const {
    return static_cast<size_t>(num_examples_) * static_cast<size_t>(options_.seq_len);
  }
};

// A permutation of [0, n) for one epoch: Fisher-Yates driven by a stream that
// depends only on (seed, epoch), so resuming at an epoch reproduces its order.
std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

}  // namespace seqmix
