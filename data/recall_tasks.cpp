// Synthetic recall tasks; the token conventions are documented in recall_tasks.h.
#include "data/recall_tasks.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <utility>

#include "data/errors.h"

namespace seqmix {

namespace {

std::string prefix_of(const RecallTaskOptions& o) { return "recall task '" + o.task + "': "; }

[[noreturn]] void fail(const RecallTaskOptions& o, const std::string& msg) {
  throw DataError(prefix_of(o) + msg);
}

// Per-thread scratch buffers, so that generating an example allocates nothing
// once a thread has seen the largest K and L.
struct Scratch {
  std::vector<int32_t> keys, values;
  std::vector<int64_t> slots;
  std::vector<std::pair<double, int64_t>> keyed;  // Efraimidis-Spirakis keys
  std::vector<int32_t> table;                      // open-addressing set of drawn tokens
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Draws k distinct tokens from [lo, hi) as a uniformly random ordered sample:
// uniform draws, a repeat is rejected. Given the tokens accepted so far, the
// next accepted one is uniform over the rest, so the sequence has the law of
// numpy's choice(range, k, replace=False). The order matters: keys and values
// are paired by position. Callers ensure k <= hi - lo; the worst case (k equal
// to the range) costs about k*ln(k) draws. The set of drawn tokens is a small
// hash table sized by k, not by the vocabulary.
void sample_distinct(int64_t lo, int64_t hi, int64_t k, Generator& rng, int32_t* out,
                     std::vector<int32_t>& table) {
  size_t cap = 64;
  while (cap < 2 * static_cast<size_t>(k)) cap *= 2;
  table.assign(cap, -1);
  const size_t mask = cap - 1;
  for (int64_t j = 0; j < k;) {
    const int32_t t = static_cast<int32_t>(rng.randint(lo, hi));
    size_t h = (static_cast<uint64_t>(t) * 0x9E3779B97F4A7C15ull) >> 32 & mask;
    bool repeat = false;
    while (table[h] != -1) {
      if (table[h] == t) {
        repeat = true;
        break;
      }
      h = (h + 1) & mask;
    }
    if (repeat) continue;
    table[h] = t;
    out[j++] = t;
  }
}

// Writes the MQAR layout without the random fill; the parts are trusted.
void write_mqar(int64_t seq_len, int64_t k, const int32_t* keys, const int32_t* values,
                const int64_t* slots, int32_t* inputs, int32_t* labels) {
  std::fill(inputs, inputs + seq_len, 0);
  std::fill(labels, labels + seq_len, kIgnoreLabel);
  for (int64_t j = 0; j < k; ++j) {
    inputs[2 * j] = keys[j];
    inputs[2 * j + 1] = values[j];
  }
  for (int64_t j = 0; j < k; ++j) {
    const int64_t pos = 2 * k + 2 * slots[j];
    inputs[pos] = keys[j];
    // Zoology writes the value as the label of the query's *next* position and
    // then shifts labels left by one, which lands it here: the query position
    // itself predicts the value (the value is never the next input token).
    labels[pos] = values[j];
  }
}

// power_a * (g+1)^(power_a-1) for the (L-2K)/2 slots; throws if not all finite
// and positive (a power_a far above 1 overflows).
std::vector<double> mqar_slot_weights(const RecallTaskOptions& o) {
  const int64_t space = (o.seq_len - 2 * o.num_kv_pairs) / 2;
  std::vector<double> w(static_cast<size_t>(space));
  for (int64_t g = 0; g < space; ++g) {
    w[g] = o.power_a * std::pow(static_cast<double>(g + 1), o.power_a - 1.0);
    if (!(w[g] > 0.0) || !std::isfinite(w[g])) {
      std::ostringstream s;
      s << "power_a = " << o.power_a << " gives the slot weight " << w[g] << " for slot " << g
        << " (seq_len = " << o.seq_len << ", num_kv_pairs = " << o.num_kv_pairs
        << "); weights must be positive and finite";
      fail(o, s.str());
    }
  }
  return w;
}

}  // namespace

const std::vector<std::string>& recall_task_names() {
  static const std::vector<std::string> names = {"mqar", "associative_recall", "induction_heads",
                                                 "selective_copying"};
  return names;
}

std::vector<RecallProblem> recall_task_problems(const RecallTaskOptions& o, const std::string& prefix) {
  std::vector<RecallProblem> out;
  auto n = [&](const char* key) { return prefix + key; };
  auto str = [](auto v) {
    std::ostringstream s;
    s << v;
    return s.str();
  };
  auto add = [&](std::vector<std::string> keys, const std::string& message) {
    for (std::string& k : keys) k = prefix + k;
    out.push_back({std::move(keys), message});
  };
  // Each returns false when the value is out of range, so that the cross-option rules
  // below run only on values that are individually sane.
  auto at_least = [&](const char* key, int64_t v, int64_t min) {
    if (v >= min) return true;
    add({key}, n(key) + " = " + str(v) + " is out of range: must be >= " + str(min));
    return false;
  };
  const int64_t V = o.vocab_size, L = o.seq_len, K = o.num_kv_pairs, M = o.num_tokens_to_copy;
  bool v_ok = at_least("vocab_size", V, 2);
  if (v_ok && V > std::numeric_limits<int32_t>::max()) {  // token ids are int32
    add({"vocab_size"}, n("vocab_size") + " = " + str(V) + " is out of range: must be < 2^31");
    v_ok = false;
  }
  const bool l_ok = at_least("seq_len", L, 1);
  at_least("num_train_examples", o.num_train_examples, 0);
  at_least("num_test_examples", o.num_test_examples, 0);

  if (o.task == "mqar") {
    const bool k_ok = at_least("num_kv_pairs", K, 1);
    bool layout_ok = v_ok && l_ok && k_ok;
    if (!(o.power_a > 0.0) || !std::isfinite(o.power_a)) {
      add({"power_a"}, n("power_a") + " = " + str(o.power_a) + " is out of range: must be > 0");
      layout_ok = false;
    }
    if (l_ok && L % 2 != 0) {
      add({"seq_len"}, n("seq_len") + " must be even for mqar (the query region is made of pairs), got " + str(L));
      layout_ok = false;
    }
    if (v_ok && l_ok && V <= L) {
      add({"vocab_size", "seq_len"}, "mqar needs " + n("vocab_size") + " > " + n("seq_len") +
                                         ", got vocab_size = " + str(V) + ", seq_len = " + str(L));
      layout_ok = false;
    }
    if (k_ok && l_ok && 4 * K > L) {
      add({"num_kv_pairs", "seq_len"},
          "mqar needs 4 * " + n("num_kv_pairs") + " <= " + n("seq_len") +
              " (2K tokens of pairs, then K queries in (seq_len - 2K) / 2 slots), got num_kv_pairs = " + str(K) +
              ", seq_len = " + str(L) + "; use num_kv_pairs <= " + str(L / 4));
      layout_ok = false;
    }
    // With V > L >= 4K and L even: V/2 - 1 >= L/2 - 1 >= 2K - 1 >= K keys and
    // V - V/2 >= 2K values are available, so no separate vocabulary rule.
    if (layout_ok) {
      try {
        mqar_slot_weights(o);  // a power_a far above 1 overflows a weight
      } catch (const DataError& e) {
        add({"power_a"}, n("power_a") + ": " + std::string(e.what()).substr(prefix_of(o).size()));
      }
    }
  } else if (o.task == "associative_recall") {
    if (at_least("num_kv_pairs", K, 1)) {
      if (l_ok && 2 * K + 1 > L)
        add({"num_kv_pairs", "seq_len"}, "associative_recall needs 2 * " + n("num_kv_pairs") + " + 1 <= " +
                                             n("seq_len") + " (the pairs, then the query), got num_kv_pairs = " +
                                             str(K) + ", seq_len = " + str(L));
      if (v_ok && V / 2 - 1 < K)
        add({"vocab_size", "num_kv_pairs"},
            "associative_recall draws distinct keys from [1, vocab_size / 2): " + n("vocab_size") + " = " + str(V) +
                " is too small for num_kv_pairs = " + str(K) + "; use vocab_size >= " + str(2 * (K + 1)));
    }
  } else if (o.task == "induction_heads") {
    if (l_ok && L < 3) add({"seq_len"}, n("seq_len") + " must be >= 3 for induction_heads, got " + str(L));
    if (v_ok && V < 3)
      add({"vocab_size"}, n("vocab_size") + " must be >= 3 for induction_heads (the special token and two "
                                            "ordinary ones), got " + str(V));
  } else if (o.task == "selective_copying") {
    if (at_least("num_tokens_to_copy", M, 1) && l_ok && 2 * M > L)
      add({"num_tokens_to_copy", "seq_len"},
          "selective_copying needs 2 * " + n("num_tokens_to_copy") + " <= " + n("seq_len") +
              " (the data tokens, then as many markers), got num_tokens_to_copy = " + str(M) + ", seq_len = " +
              str(L));
    if (v_ok && V < 3)
      add({"vocab_size"}, n("vocab_size") + " must be >= 3 for selective_copying (blank, marker and data "
                                            "tokens), got " + str(V));
  }
  return out;
}

void validate(const RecallTaskOptions& o) {
  const auto& names = recall_task_names();
  if (std::find(names.begin(), names.end(), o.task) == names.end()) {
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
    throw DataError("recall task: unknown task '" + o.task + "'; valid tasks are " + list);
  }
  const std::vector<RecallProblem> problems = recall_task_problems(o);
  if (problems.empty()) return;
  std::string text;
  for (const RecallProblem& p : problems) text += (text.empty() ? "" : "; ") + p.message;
  fail(o, text);
}

RecallTask::RecallTask(const RecallTaskOptions& options) : options_(options) {
  validate(options_);
  if (options_.task == "mqar") {
    kind_ = Kind::mqar;
    slot_weights_ = mqar_slot_weights(options_);
  } else if (options_.task == "associative_recall") {
    kind_ = Kind::associative_recall;
  } else if (options_.task == "induction_heads") {
    kind_ = Kind::induction_heads;
  } else {
    kind_ = Kind::selective_copying;
  }
}

void RecallTask::generate(Generator& rng, int32_t* inputs, int32_t* labels) const {
  switch (kind_) {
    case Kind::mqar: generate_mqar(rng, inputs, labels); break;
    case Kind::associative_recall: generate_associative_recall(rng, inputs, labels); break;
    case Kind::induction_heads: generate_induction_heads(rng, inputs, labels); break;
    case Kind::selective_copying: generate_selective_copying(rng, inputs, labels); break;
  }
}

void RecallTask::generate_mqar(Generator& rng, int32_t* inputs, int32_t* labels) const {
  const int64_t V = options_.vocab_size, L = options_.seq_len, K = options_.num_kv_pairs;
  Scratch& s = scratch();
  s.keys.resize(K);
  s.values.resize(K);
  s.slots.resize(K);
  sample_distinct(1, V / 2, K, rng, s.keys.data(), s.table);
  sample_distinct(V / 2, V, K, rng, s.values.data(), s.table);
  sample_weighted_without_replacement(slot_weights_, K, rng, s.slots.data());
  write_mqar(L, K, s.keys.data(), s.values.data(), s.slots.data(), inputs, labels);
  if (options_.random_non_queries) {
    // Only the query region can hold 0 here (keys >= 1, values >= V/2 >= 1).
    for (int64_t t = 2 * K; t < L; ++t)
      if (inputs[t] == 0) inputs[t] = static_cast<int32_t>(rng.randint(0, V));
  }
}

void RecallTask::generate_associative_recall(Generator& rng, int32_t* inputs,
                                             int32_t* labels) const {
  const int64_t V = options_.vocab_size, L = options_.seq_len, K = options_.num_kv_pairs;
  Scratch& s = scratch();
  s.keys.resize(K);
  s.values.resize(K);
  sample_distinct(1, V / 2, K, rng, s.keys.data(), s.table);
  sample_distinct(V / 2, V, K, rng, s.values.data(), s.table);
  std::fill(inputs, inputs + L, 0);
  std::fill(labels, labels + L, kIgnoreLabel);
  for (int64_t j = 0; j < K; ++j) {
    inputs[2 * j] = s.keys[j];
    inputs[2 * j + 1] = s.values[j];
  }
  const int64_t q = rng.randint(0, K);
  inputs[L - 1] = s.keys[q];
  labels[L - 1] = s.values[q];
}

void RecallTask::generate_induction_heads(Generator& rng, int32_t* inputs,
                                          int32_t* labels) const {
  const int64_t V = options_.vocab_size, L = options_.seq_len;
  const int32_t special = static_cast<int32_t>(V - 1);
  for (int64_t t = 0; t < L - 1; ++t) inputs[t] = static_cast<int32_t>(rng.randint(0, V - 1));
  std::fill(labels, labels + L, kIgnoreLabel);
  const int64_t p = rng.randint(0, L - 2);  // [0, L-3]: p+1 is an ordinary token
  inputs[p] = special;
  inputs[L - 1] = special;
  labels[L - 1] = inputs[p + 1];
}

void RecallTask::generate_selective_copying(Generator& rng, int32_t* inputs,
                                            int32_t* labels) const {
  const int64_t V = options_.vocab_size, L = options_.seq_len, M = options_.num_tokens_to_copy;
  const int64_t region = L - M;
  std::fill(inputs, inputs + region, 0);
  std::fill(labels, labels + L, kIgnoreLabel);
  // Selection sampling (Knuth's Algorithm S): position t is taken with
  // probability needed/remaining, which makes every M-subset of the region
  // equally likely and yields the positions in increasing order.
  int64_t needed = M, j = 0;
  for (int64_t t = 0; t < region && needed > 0; ++t) {
    if (rng.randint(0, region - t) < needed) {
      const int32_t tok = static_cast<int32_t>(rng.randint(1, V - 1));
      inputs[t] = tok;
      labels[region + j] = tok;
      ++j;
      --needed;
    }
  }
  for (int64_t t = region; t < L; ++t) inputs[t] = static_cast<int32_t>(V - 1);
}

void generate_example(const RecallTaskOptions& options, Generator& rng, int32_t* inputs,
                      int32_t* labels) {
  RecallTask(options).generate(rng, inputs, labels);
}

void mqar_layout(int64_t vocab_size, int64_t seq_len, std::span<const int32_t> keys,
                 std::span<const int32_t> values, std::span<const int64_t> slots, int32_t* inputs,
                 int32_t* labels) {
  const int64_t V = vocab_size, L = seq_len, K = static_cast<int64_t>(keys.size());
  std::ostringstream s;
  s << "mqar_layout: ";
  auto bad = [&](const std::string& what) { throw DataError(s.str() + what); };
  if (L < 2 || L % 2 != 0) bad("seq_len must be even and >= 2 (seq_len = " + std::to_string(L) + ")");
  if (static_cast<int64_t>(values.size()) != K || static_cast<int64_t>(slots.size()) != K)
    bad("keys, values and slots must have the same size (" + std::to_string(K) + ", " +
        std::to_string(values.size()) + ", " + std::to_string(slots.size()) + ")");
  if (4 * K > L)
    bad("4 * K must be <= seq_len (K = " + std::to_string(K) + ", seq_len = " + std::to_string(L) +
        ")");
  const int64_t space = (L - 2 * K) / 2;
  for (int64_t j = 0; j < K; ++j) {
    if (keys[j] < 1 || keys[j] >= V / 2)
      bad("key " + std::to_string(keys[j]) + " is outside [1, " + std::to_string(V / 2) + ")");
    if (values[j] < V / 2 || values[j] >= V)
      bad("value " + std::to_string(values[j]) + " is outside [" + std::to_string(V / 2) + ", " +
          std::to_string(V) + ")");
    if (slots[j] < 0 || slots[j] >= space)
      bad("slot " + std::to_string(slots[j]) + " is outside [0, " + std::to_string(space) + ")");
    for (int64_t i = 0; i < j; ++i) {
      if (keys[i] == keys[j]) bad("key " + std::to_string(keys[j]) + " appears twice");
      if (values[i] == values[j]) bad("value " + std::to_string(values[j]) + " appears twice");
      if (slots[i] == slots[j]) bad("slot " + std::to_string(slots[j]) + " appears twice");
    }
  }
  write_mqar(L, K, keys.data(), values.data(), slots.data(), inputs, labels);
}

void sample_weighted_without_replacement(std::span<const double> weights, int64_t k,
                                         Generator& rng, int64_t* out) {
  const int64_t n = static_cast<int64_t>(weights.size());
  if (k < 0 || k > n)
    throw DataError("sample_weighted_without_replacement: cannot draw " + std::to_string(k) +
                    " distinct indices out of " + std::to_string(n));
  auto& keyed = scratch().keyed;
  keyed.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    const double w = weights[i];
    if (!(w > 0.0) || !std::isfinite(w))
      throw DataError("sample_weighted_without_replacement: weight " + std::to_string(i) +
                      " is " + std::to_string(w) + "; weights must be positive and finite");
    // u in (0, 1] so that -log(u) is finite: E ~ Exp(1).
    const double u = static_cast<double>((rng.next_u64() >> 11) + 1) * 0x1.0p-53;
    keyed[i] = {-std::log(u) / w, i};
  }
  // Ties (probability ~2^-53 per pair) break by index, deterministically.
  std::partial_sort(keyed.begin(), keyed.begin() + k, keyed.end());
  for (int64_t j = 0; j < k; ++j) out[j] = keyed[j].second;
}

}  // namespace seqmix
