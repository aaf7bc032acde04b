#include "train/batch_threads.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <string>

#include "core/tape.h"
#include "train/distributed.h"

namespace seqmix {

BatchThreads::BatchThreads(const LanguageModel& model, int threads) : threads_(threads) {
  if (threads < 2) throw std::invalid_argument("BatchThreads: needs at least 2 threads, got " + std::to_string(threads));
  const Parameters mine = model.parameters();
  for (int t = 1; t < threads; ++t) {
    // The replica's own initial values are dropped at once: it reads the model's.
    Generator unused(0);
    const LayerInit init{&unused, model.options().n_layers, model.dtype()};
    auto replica = std::make_unique<LanguageModel>(model.options(), init);
    const Parameters theirs = replica->parameters();
    if (theirs.size() != mine.size())
      throw std::logic_error("BatchThreads: a replica has " + std::to_string(theirs.size()) + " parameters, the model " +
                             std::to_string(mine.size()));
    for (size_t i = 0; i < mine.size(); ++i) {
      if (theirs[i].name != mine[i].name)
        throw std::logic_error("BatchThreads: parameter " + std::to_string(i) + " is " + mine[i].name +
                               " in the model and " + theirs[i].name + " in a replica");
      Tensor p = theirs[i].tensor;
      p.share_values_of(mine[i].tensor);
    }
    replicas_.push_back(std::move(replica));
  }
}

BatchStepResult BatchThreads::step(LanguageModel& model, const Batch& b, Generator& dropout_gen) {
  const int64_t rows = b.inputs.size(0);
  if (rows % threads_ != 0)
    throw std::invalid_argument("batch-parallel step: " + std::to_string(rows) + " rows do not divide among " +
                                std::to_string(threads_) + " threads");
  struct Part {
    double loss = 0;
    int64_t labelled = 0, correct = 0;
    std::exception_ptr error;
  };
  std::vector<Part> parts(static_cast<size_t>(threads_));
  Generator after = dropout_gen;
#pragma omp parallel num_threads(threads_)
  {
    const int t = omp_get_thread_num();
    Part& part = parts[static_cast<size_t>(t)];
    try {
      LanguageModel& m = t == 0 ? model : *replicas_[static_cast<size_t>(t - 1)];
      const RowRange slice = slice_rows(rows, t, threads_);
      const Batch mine = batch_rows(b, slice.begin, slice.end);
      Generator gen = dropout_gen;
      gen.set_batch_slice(static_cast<uint64_t>(t), static_cast<uint64_t>(threads_));
      LossResult r = m.loss(mine.inputs, mine.labels, true, gen);
      part.loss = r.loss.item();
      part.labelled = r.labelled;
      part.correct = r.correct;
      // A slice without labelled positions contributes no gradient (its mean is 0/0).
      if (r.labelled > 0)
        backward(r.loss);
      else
        tape().clear();
      if (t == 0) after = gen;  // every slice's generator moved past the whole batch
    } catch (...) {
      part.error = std::current_exception();
      tape().clear();
    }
  }
  for (const Part& p : parts)
    if (p.error) std::rethrow_exception(p.error);
  after.set_batch_slice(0, 1);
  dropout_gen = after;

  BatchStepResult res;
  double loss_sum = 0;
  for (const Part& p : parts) {
    loss_sum += p.labelled ? p.loss * static_cast<double>(p.labelled) : 0.0;
    res.labelled += p.labelled;
    res.correct += p.correct;
  }
  res.loss = res.labelled ? loss_sum / static_cast<double>(res.labelled) : 0.0;
  std::vector<float> weight;
  for (const Part& p : parts)
    weight.push_back(res.labelled ? static_cast<float>(static_cast<double>(p.labelled) / res.labelled) : 0.0f);
  combine_gradients(model, weight);
  return res;
}

void BatchThreads::combine_gradients(LanguageModel& model, const std::vector<float>& weight) {
  const Parameters mine = model.parameters();
  std::vector<Parameters> theirs;
  for (const auto& r : replicas_) theirs.push_back(r->parameters());
  // Pieces of at most kPiece floats of every gradient, one parallel loop over all.
  constexpr int64_t kPiece = 16384;
  struct Piece {
    float* out;
    std::vector<const float*> in;  // per thread; null: no gradient from that slice
    int64_t n;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < mine.size(); ++i) {
    std::vector<Tensor> g{mine[i].tensor.grad()};
    bool any = g[0].defined();
    for (const Parameters& ps : theirs) {
      g.push_back(ps[i].tensor.grad());
      any = any || g.back().defined();
    }
    if (!any) continue;
    if (mine[i].tensor.dtype() != DType::f32)
      throw std::invalid_argument("batch-parallel steps train in float32; " + mine[i].name + " is not");
    float* out = mine[i].tensor.grad_buffer().f32();  // zeros if slice 0 had none
    const int64_t n = mine[i].tensor.numel();
    for (int64_t at = 0; at < n; at += kPiece) {
      Piece p{out + at, {}, std::min(kPiece, n - at)};
      for (size_t t = 0; t < g.size(); ++t) p.in.push_back(t == 0 ? out + at : g[t].defined() ? g[t].f32() + at : nullptr);
      pieces.push_back(std::move(p));
    }
  }
#pragma omp parallel for schedule(static) num_threads(threads_)
  for (size_t k = 0; k < pieces.size(); ++k) {
    const Piece& p = pieces[k];
    const float w0 = weight[0];
    for (int64_t j = 0; j < p.n; ++j) p.out[j] = w0 * p.in[0][j];
    for (size_t t = 1; t < p.in.size(); ++t) {
      if (!p.in[t]) continue;
      const float w = weight[t], *g = p.in[t];
#pragma omp simd
      for (int64_t j = 0; j < p.n; ++j) p.out[j] += w * g[j];
    }
  }
  for (const Parameters& ps : theirs)
    for (const Parameter& p : ps) p.tensor.zero_grad();
}

// Measured (bench/threads_per_config.sh, two threads, bench/RESULTS.md): batch-parallel
// steps are as fast as op-parallel ones or faster (by up to 15%) on every shipped
// config of d_model <= 256, the MQAR, text and Zoology ones. GPT-2 124M (d_model 768)
// stays op-parallel: its GEMMs are large enough to split well, and a replica would add
// 0.5 GB of gradient per thread.
bool batch_parallel_pays(const ModelOptions& model, int64_t batch_size, int threads) {
  if (threads < 2 || batch_size % threads != 0) return false;
  return model.d_model <= 256;
}

bool batch_parallel_chosen(const std::string& parallel, const ModelOptions& model, int64_t batch_size, int threads) {
  return parallel == "batch" || (parallel == "auto" && batch_parallel_pays(model, batch_size, threads));
}

}  // namespace seqmix
