// Batch-parallel training steps on the threads of one process (training.parallel:
// batch, docs/model.md#threads). Each of T threads runs the forward and backward of
// its slice of the batch's rows with every op on that one thread, on a replica of
// the model that reads the same weights and accumulates its own gradient; the
// gradients are then combined into the model's. For a small model (an MQAR run, a
// tiny text model) this is faster than splitting every op over the threads, as the
// ops are small: each pays a fork and join, and a GEMM of a few thousand rows split
// in two runs below the speed of one of a few thousand rows.
//
// The step computes what a whole-batch step computes, as data-parallel ranks do
// (train/distributed.h): the loss is the mean over the whole batch's labelled
// positions (slice t's mean weighs labelled_t / labelled, and so does its gradient),
// and dropout draws each row's masks as the whole batch would
// (Generator::set_batch_slice). The sums are taken per slice and added in slice
// order, so the results are bit-identical from run to run for a fixed thread
// count, not across thread counts or against the op-parallel step.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/random.h"
#include "layers/model.h"
#include "train/data_source.h"

namespace seqmix {

struct BatchStepResult {
  double loss = 0;        // mean over the batch's labelled positions
  int64_t labelled = 0;   // over the whole batch
  int64_t correct = 0;
};

class BatchThreads {
 public:
  // threads >= 2 replicas of `model`'s structure (threads - 1 of them new) whose
  // parameters read `model`'s values.
  BatchThreads(const LanguageModel& model, int threads);
  int threads() const { return threads_; }

  // Forward and backward of batch b, whose rows divide by threads(): afterwards
  // model's gradients are those of the whole batch's mean loss. dropout_gen
  // advances past the whole batch.
  BatchStepResult step(LanguageModel& model, const Batch& b, Generator& dropout_gen);

 private:
  // grad(model) = sum_t weight[t] grad(replica t), replica 0 being model itself.
  void combine_gradients(LanguageModel& model, const std::vector<float>& weight);

  int threads_;
  std::vector<std::unique_ptr<LanguageModel>> replicas_;  // threads - 1
};

// Whether training.parallel: auto chooses batch-parallel steps for this model and
// batch on `threads` threads (the rule and its measurements: batch_threads.cpp).
bool batch_parallel_pays(const ModelOptions& model, int64_t batch_size, int threads);

// training.parallel resolved: batch, or auto where batch_parallel_pays. For one process;
// the trainer refuses batch on MPI ranks and keeps auto op-parallel there.
bool batch_parallel_chosen(const std::string& parallel, const ModelOptions& model, int64_t batch_size, int threads);

}  // namespace seqmix
