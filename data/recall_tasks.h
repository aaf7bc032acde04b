// Synthetic recall tasks (docs/tasks.md): one example at a time.
//
// An example is L input tokens and L labels; a label is either the token the
// model must predict at that position or kIgnoreLabel (-100, not scored).
// All randomness comes from the Generator passed in (one forked stream per
// example in RecallDataset), so an example is a pure function of its stream.
//
// Token conventions, V = vocab_size, L = seq_len:
//
// mqar (docs/tasks.md#mqar, Zoology `multiquery_ar`), K = num_kv_pairs:
//   keys: K distinct tokens from [1, V/2); values: K distinct from [V/2, V);
//   token 0 is filler. Positions [0, 2K) hold `k1 v1 ... kK vK`. The query
//   region [2K, L) has space = (L-2K)/2 slots; K distinct slots g_j are drawn
//   without replacement with p(g) proportional to power_a*(g+1)^(power_a-1)
//   and key k_j goes to position 2K + 2*g_j, labelled v_j. With
//   random_non_queries every other token of the query region (all zeros until
//   then) becomes uniform in [0, V), so it may collide with a key or value, as
//   in Zoology.
//
// associative_recall (H3), K = num_kv_pairs:
//   keys/values drawn as in mqar (distinct keys from [1, V/2), distinct values
//   from [V/2, V)); positions [0, 2K) hold `k1 v1 ... kK vK`; positions
//   [2K, L-1) are filler 0; position L-1 holds one key k_j chosen uniformly
//   among the K; its label is v_j. Requires 2K+1 <= L and K+1 <= V/2.
//
// induction_heads (H3, Mamba): special token s = V-1; every other position is
//   uniform in [0, V-1) (never s). The first s is at p uniform in [0, L-3]
//   (so its successor at p+1 <= L-2 is an ordinary token), the second at L-1;
//   the label of position L-1 is inputs[p+1]. Requires L >= 3 and V >= 3.
//
// selective_copying (Mamba; S4 `torch_copying_data(variable=True)`),
//   M = num_tokens_to_copy: blank (noise) = 0, marker = V-1, data tokens uniform
//   in [1, V-1) drawn independently (repeats allowed). The data region
//   [0, L-M) holds the M data tokens at M distinct uniformly chosen positions
//   (kept in increasing order), blanks elsewhere; positions [L-M, L) are
//   markers, and the label of marker j is data token j. Requires M >= 1,
//   2M <= L and V >= 3.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/ops.h"  // kIgnoreLabel, the label of unscored positions
#include "core/random.h"
#include "data/options.h"

namespace seqmix {

// The valid values of RecallTaskOptions::task.
const std::vector<std::string>& recall_task_names();

// One problem of a task's options: the options it concerns (prefix + name) and a message
// that names them and their values.
struct RecallProblem {
  std::vector<std::string> keys;
  std::string message;
};

// Every rule of the recall options, in one place: the requirements above, vocab_size in
// [2, 2^31), seq_len >= 1, example counts >= 0. Options are named prefix + name ("data."
// in a config file). options.task must be one of recall_task_names().
std::vector<RecallProblem> recall_task_problems(const RecallTaskOptions& options,
                                                const std::string& prefix = "");

// Throws DataError naming the task, the options and their values when
// recall_task_problems finds any, or when the task name is unknown (listing the valid ones).
void validate(const RecallTaskOptions& options);

// A task with its options validated once and its tables (the MQAR slot
// weights) precomputed, for generating many examples. Thread-safe: generate()
// may be called concurrently with different Generators.
class RecallTask {
 public:
  explicit RecallTask(const RecallTaskOptions& options);

  const RecallTaskOptions& options() const { return options_; }
  int64_t seq_len() const { return options_.seq_len; }

  // inputs: (L), labels: (L). Draws only from rng.
  void generate(Generator& rng, int32_t* inputs, int32_t* labels) const;

 private:
  void generate_mqar(Generator& rng, int32_t* inputs, int32_t* labels) const;
  void generate_associative_recall(Generator& rng, int32_t* inputs, int32_t* labels) const;
  void generate_induction_heads(Generator& rng, int32_t* inputs, int32_t* labels) const;
  void generate_selective_copying(Generator& rng, int32_t* inputs, int32_t* labels) const;

  enum class Kind { mqar, associative_recall, induction_heads, selective_copying };
  RecallTaskOptions options_;
  Kind kind_ = Kind::mqar;
  std::vector<double> slot_weights_;  // mqar: power_a*(g+1)^(power_a-1), g in [0, space)
};

// One example of options.task; validates the options on every call, so use
// RecallTask to generate many. inputs: (L), labels: (L).
void generate_example(const RecallTaskOptions& options, Generator& rng, int32_t* inputs,
                      int32_t* labels);

// The MQAR layout from explicit parts, without the random fill: keys[j] at
// 2j, values[j] at 2j+1, keys[j] again at 2K + 2*slots[j] labelled values[j],
// every other input 0 and every other label -100. K = keys.size(). Throws
// DataError unless the parts are valid (L even, sizes equal, keys distinct in
// [1, V/2), values distinct in [V/2, V), slots distinct in [0, (L-2K)/2)).
// inputs: (L), labels: (L).
void mqar_layout(int64_t vocab_size, int64_t seq_len, std::span<const int32_t> keys,
                 std::span<const int32_t> values, std::span<const int64_t> slots, int32_t* inputs,
                 int32_t* labels);

// Draws k distinct indices of [0, n = weights.size()) without replacement,
// each draw proportional to the weights of the indices not yet drawn (what
// numpy's choice(n, k, replace=False, p=w/sum(w)) samples), written to out in
// draw order. Method: Efraimidis-Spirakis exponential keys. Index i gets the
// key E_i / w_i with E_i ~ Exp(1) independent; the k smallest keys, in
// increasing order, have exactly the law of sequential draws with
// renormalisation (the first arrival of independent exponential clocks with
// rates w_i is i with probability w_i / sum w, and by memorylessness the rest
// race afresh). Uses n draws of rng. weights: (n), all > 0 and finite;
// out: (k), k <= n.
void sample_weighted_without_replacement(std::span<const double> weights, int64_t k,
                                         Generator& rng, int64_t* out);

}  // namespace seqmix
