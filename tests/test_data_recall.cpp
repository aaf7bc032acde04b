// Recall tasks and datasets (docs/tasks.md): the MQAR layout of the documented
// worked example, the invariants of every task, determinism, train/test
// separation, the power-law slot distribution and the option checks.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/errors.h"
#include "data/recall_dataset.h"
#include "data/recall_tasks.h"
#include "tests/support/file_testing.h"

using namespace seqmix;

namespace {

using seqmix::testing::contains;

RecallTaskOptions mqar(int64_t V, int64_t L, int64_t K, bool random_fill = true,
                       double power_a = 0.01) {
  RecallTaskOptions o;
  o.task = "mqar";
  o.vocab_size = V;
  o.seq_len = L;
  o.num_kv_pairs = K;
  o.random_non_queries = random_fill;
  o.power_a = power_a;
  return o;
}

std::vector<int32_t> row(const int32_t* p, int64_t L) { return std::vector<int32_t>(p, p + L); }
std::vector<int32_t> vec(std::span<const int32_t> s) { return {s.begin(), s.end()}; }

// The message of the DataError that validate() throws, or "" if none.
std::string validation_error(const RecallTaskOptions& o) {
  try {
    validate(o);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

// Checks every MQAR invariant of one example; returns the slots queried.
std::vector<int64_t> check_mqar_example(const RecallTaskOptions& o, const int32_t* in,
                                        const int32_t* lab) {
  const int64_t V = o.vocab_size, L = o.seq_len, K = o.num_kv_pairs;
  std::map<int32_t, int32_t> value_of;
  std::set<int32_t> values;
  for (int64_t j = 0; j < K; ++j) {
    const int32_t k = in[2 * j], v = in[2 * j + 1];
    EXPECT_GE(k, 1);
    EXPECT_LT(k, V / 2);
    EXPECT_GE(v, V / 2);
    EXPECT_LT(v, V);
    EXPECT_TRUE(value_of.emplace(k, v).second) << "key " << k << " appears twice";
    EXPECT_TRUE(values.insert(v).second) << "value " << v << " appears twice";
    EXPECT_EQ(lab[2 * j], kIgnoreLabel);
    EXPECT_EQ(lab[2 * j + 1], kIgnoreLabel);
  }
  std::set<int32_t> queried;
  std::vector<int64_t> slots;
  for (int64_t t = 2 * K; t < L; ++t) {
    EXPECT_GE(in[t], 0);
    EXPECT_LT(in[t], V);
    if (lab[t] == kIgnoreLabel) {
      if (!o.random_non_queries) {
        EXPECT_EQ(in[t], 0) << "position " << t;
      }
      continue;
    }
    EXPECT_EQ((t - 2 * K) % 2, 0) << "label at odd offset, position " << t;
    auto it = value_of.find(in[t]);
    EXPECT_NE(it, value_of.end()) << "labelled position " << t << " holds a non-key " << in[t];
    if (it != value_of.end()) {
      EXPECT_EQ(lab[t], it->second) << "position " << t;
    }
    EXPECT_TRUE(queried.insert(in[t]).second) << "key " << in[t] << " queried twice";
    slots.push_back((t - 2 * K) / 2);
  }
  EXPECT_EQ(static_cast<int64_t>(queried.size()), K) << "each key is queried exactly once";
  return slots;
}

}  // namespace

// ------------------------------------------------------------------ MQAR

TEST(Mqar, SpecWorkedExample) {
  // V=12, K=2, L=16: keys 2, 4 with values 8, 7; key 4 in slot 1 (position
  // 2K + 2 = 6), key 2 in slot 4 (position 12).
  const std::vector<int32_t> keys = {2, 4}, values = {8, 7};
  const std::vector<int64_t> slots = {4, 1};
  std::vector<int32_t> in(16), lab(16);
  mqar_layout(12, 16, keys, values, slots, in.data(), lab.data());
  EXPECT_EQ(in, (std::vector<int32_t>{2, 8, 4, 7, 0, 0, 4, 0, 0, 0, 0, 0, 2, 0, 0, 0}));
  std::vector<int32_t> expected(16, -100);
  expected[6] = 7;
  expected[12] = 8;
  EXPECT_EQ(lab, expected);
}

TEST(Mqar, LayoutRejectsInvalidParts) {
  std::vector<int32_t> in(16), lab(16);
  const std::vector<int64_t> slots = {4, 1};
  // key 6 is not below V/2 = 6
  EXPECT_THROW(mqar_layout(12, 16, std::vector<int32_t>{2, 6}, std::vector<int32_t>{8, 7}, slots,
                           in.data(), lab.data()),
               DataError);
  // repeated value
  EXPECT_THROW(mqar_layout(12, 16, std::vector<int32_t>{2, 4}, std::vector<int32_t>{8, 8}, slots,
                           in.data(), lab.data()),
               DataError);
  // slot 6 outside [0, (16-4)/2 = 6)
  EXPECT_THROW(mqar_layout(12, 16, std::vector<int32_t>{2, 4}, std::vector<int32_t>{8, 7},
                           std::vector<int64_t>{6, 1}, in.data(), lab.data()),
               DataError);
}

TEST(Mqar, SmallExamplesWithoutFillMatchTheWorkedExampleShape) {
  // The worked example's V = 12 breaks the rule V > L (as Zoology's own
  // docstring example does); sampled examples use the smallest valid V.
  const RecallTaskOptions o = mqar(17, 16, 2, /*random_fill=*/false);
  const RecallDataset ds(o, 500, 7, Split::train);
  for (int64_t i = 0; i < ds.size(); ++i) check_mqar_example(o, ds.inputs(i), ds.labels(i));
}

TEST(Mqar, InvariantsWithAndWithoutRandomFill) {
  for (bool fill : {false, true}) {
    for (auto [L, K] : {std::pair<int64_t, int64_t>{64, 8}, {64, 16}, {256, 4}, {30, 1}}) {
      const RecallTaskOptions o = mqar(8192, L, K, fill);
      const RecallDataset ds(o, 300, 11, Split::train);
      int64_t labelled = 0;
      for (int64_t i = 0; i < ds.size(); ++i) {
        check_mqar_example(o, ds.inputs(i), ds.labels(i));
        for (int64_t t = 0; t < L; ++t) labelled += ds.labels(i)[t] != kIgnoreLabel;
      }
      EXPECT_EQ(labelled, 300 * K);
      EXPECT_EQ(ds.num_labelled(), 300 * K);
      if (HasFailure()) return;
    }
  }
}

TEST(Mqar, RandomFillCoversTheVocabularyAndLeavesFewZeros) {
  const RecallTaskOptions o = mqar(64, 62, 4, true);  // small V so that every token shows up
  const RecallDataset ds(o, 2000, 3, Split::train);
  std::vector<int64_t> count(64, 0);
  for (int64_t i = 0; i < ds.size(); ++i)
    for (int64_t t = 8; t < 62; ++t)
      if (ds.labels(i)[t] == kIgnoreLabel) ++count[ds.inputs(i)[t]];
  for (int v = 0; v < 64; ++v) EXPECT_GT(count[v], 0) << "fill token " << v << " never drawn";
  // Uniform in [0, V): token 0 is about 1/64 of the filled positions.
  int64_t total = 0;
  for (auto c : count) total += c;
  EXPECT_NEAR(static_cast<double>(count[0]) / total, 1.0 / 64, 0.005);
}

TEST(Mqar, SameSeedSameDataAndThreadCountDoesNotMatter) {
  const RecallTaskOptions o = mqar(8192, 128, 8);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const RecallDataset a(o, 1000, 42, Split::train);
  omp_set_num_threads(2);
  const RecallDataset b(o, 1000, 42, Split::train);
  omp_set_num_threads(saved);
  const RecallDataset c(o, 1000, 42, Split::train);
  EXPECT_EQ(vec(a.all_inputs()), vec(b.all_inputs()));
  EXPECT_EQ(vec(a.all_labels()), vec(b.all_labels()));
  EXPECT_EQ(vec(a.all_inputs()), vec(c.all_inputs()));
  // A larger set extends a smaller one: example i depends only on its stream.
  const RecallDataset small(o, 100, 42, Split::train);
  for (int64_t i = 0; i < 100; ++i) EXPECT_EQ(row(small.inputs(i), 128), row(a.inputs(i), 128));
  // A different seed gives different data.
  const RecallDataset d(o, 1000, 43, Split::train);
  EXPECT_NE(vec(a.all_inputs()), vec(d.all_inputs()));
}

TEST(Mqar, TrainAndTestAreDisjoint) {
  const RecallTaskOptions o = mqar(8192, 64, 4);
  const RecallDataset train(o, 3000, 0, Split::train);
  const RecallDataset test(o, 500, 0, Split::test);
  std::set<std::vector<int32_t>> seen;
  for (int64_t i = 0; i < train.size(); ++i) seen.insert(row(train.inputs(i), 64));
  for (int64_t i = 0; i < test.size(); ++i)
    EXPECT_EQ(seen.count(row(test.inputs(i), 64)), 0u) << "test example " << i << " is in train";
  // Also without the random fill, where a collision would need the same keys,
  // values and slots: the key/value context alone almost never repeats.
  const RecallTaskOptions nofill = mqar(8192, 64, 4, false);
  const RecallDataset tr2(nofill, 3000, 0, Split::train), te2(nofill, 500, 0, Split::test);
  std::set<std::vector<int32_t>> seen2;
  for (int64_t i = 0; i < tr2.size(); ++i) seen2.insert(row(tr2.inputs(i), 64));
  for (int64_t i = 0; i < te2.size(); ++i) EXPECT_EQ(seen2.count(row(te2.inputs(i), 64)), 0u);
  EXPECT_NE(RecallDataset::example_stream(Split::train, 5),
            RecallDataset::example_stream(Split::test, 5));
}

TEST(Mqar, SlotsAreSkewedTowardEarlySlotsForSmallPowerA) {
  // L=256, K=4: 124 slots. With power_a = 0.01, p(g) ~ (g+1)^-0.99: slot 0
  // has about 17% of one draw's mass, slot 123 about 0.2%.
  const int64_t L = 256, K = 4, space = (L - 2 * K) / 2;
  const int64_t N = 20000;
  auto histogram = [&](double power_a) {
    const RecallTaskOptions o = mqar(8192, L, K, true, power_a);
    const RecallDataset ds(o, N, 5, Split::train);
    std::vector<int64_t> h(space, 0);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t t = 2 * K; t < L; ++t)
        if (ds.labels(i)[t] != kIgnoreLabel) ++h[(t - 2 * K) / 2];
    return h;
  };
  const auto skew = histogram(0.01);
  const auto flat = histogram(1.0);
  // Every example queries K distinct slots.
  for (int64_t g = 0; g < space; ++g) EXPECT_LE(skew[g], N);
  // Early slots are chosen far more often than late ones...
  int64_t first10 = 0, last10 = 0;
  for (int64_t g = 0; g < 10; ++g) first10 += skew[g];
  for (int64_t g = space - 10; g < space; ++g) last10 += skew[g];
  EXPECT_GT(skew[0], skew[5]);
  EXPECT_GT(skew[5], skew[50]);
  EXPECT_GT(first10, 5 * last10);
  // ...slot 0 is in most examples (inclusion probability ~0.6 for K=4)...
  EXPECT_GT(skew[0], N / 2);
  // ...while power_a = 1 is uniform: each slot in K/space of the examples.
  const double expect = static_cast<double>(N) * K / space;
  for (int64_t g = 0; g < space; ++g)
    EXPECT_NEAR(flat[g], expect, 6 * std::sqrt(expect)) << "slot " << g;
}

TEST(WeightedSampling, MatchesSequentialDrawsWithRenormalisation) {
  // Ordered pairs (i, j) from weights w without replacement have probability
  // w_i/W * w_j/(W - w_i), as numpy's choice(4, 2, replace=False, p=w/W).
  const std::vector<double> w = {1.0, 2.0, 3.0, 4.0};
  const double W = 10.0;
  const int64_t N = 200000;
  std::map<std::pair<int64_t, int64_t>, int64_t> count;
  Generator rng(123);
  int64_t out[2];
  for (int64_t n = 0; n < N; ++n) {
    sample_weighted_without_replacement(w, 2, rng, out);
    ASSERT_NE(out[0], out[1]);
    ++count[{out[0], out[1]}];
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      if (i == j) continue;
      const double p = w[i] / W * w[j] / (W - w[i]);
      const double sd = std::sqrt(N * p * (1 - p));
      const int64_t c = count[std::make_pair(int64_t{i}, int64_t{j})];
      EXPECT_NEAR(c, N * p, 5 * sd) << "pair " << i << "," << j;
    }
  // k = n gives a permutation.
  int64_t all[4];
  sample_weighted_without_replacement(w, 4, rng, all);
  std::vector<int64_t> sorted(all, all + 4);
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_THROW(sample_weighted_without_replacement(w, 5, rng, all), DataError);
}

TEST(Mqar, GenerateExampleEqualsRecallTask) {
  const RecallTaskOptions o = mqar(1000, 64, 8);
  Generator r1(9), r2(9);
  std::vector<int32_t> i1(64), l1(64), i2(64), l2(64);
  generate_example(o, r1, i1.data(), l1.data());
  RecallTask(o).generate(r2, i2.data(), l2.data());
  EXPECT_EQ(i1, i2);
  EXPECT_EQ(l1, l2);
  EXPECT_EQ(r1.counter(), r2.counter());
}

// A study-sized dataset (100,000 examples of L=256, generated in parallel) has every example
// and every label. Its speed is not asserted here (a timed test flakes on a shared machine);
// it is a fraction of a second of CPU, printed for the reader.
TEST(Mqar, HundredThousandExamplesOfLength256) {
  const RecallTaskOptions o = mqar(8192, 256, 16);
  const std::clock_t c0 = std::clock();
  const RecallDataset ds(o, 100000, 0, Split::train);
  const double cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  std::printf("100000 MQAR examples (L=256, K=16): %.3f s CPU, %d threads\n", cpu, omp_get_max_threads());
  EXPECT_EQ(ds.size(), 100000);
  EXPECT_EQ(ds.num_labelled(), 100000 * 16);
}

// ------------------------------------------------------------------ validation

TEST(Validation, MqarMessagesNameTheOptionAndValues) {
  std::string m = validation_error(mqar(64, 64, 4));
  EXPECT_TRUE(contains(m, "vocab_size") && contains(m, "seq_len") && contains(m, "64")) << m;
  m = validation_error(mqar(50, 64, 4));
  EXPECT_TRUE(contains(m, "vocab_size = 50")) << m;
  m = validation_error(mqar(8192, 64, 17));
  EXPECT_TRUE(contains(m, "num_kv_pairs = 17") && contains(m, "seq_len = 64")) << m;
  m = validation_error(mqar(8192, 63, 4));
  EXPECT_TRUE(contains(m, "seq_len must be even") && contains(m, "63")) << m;
  m = validation_error(mqar(8192, 64, 0));
  EXPECT_TRUE(contains(m, "num_kv_pairs")) << m;
  m = validation_error(mqar(8192, 64, 4, true, 0.0));
  EXPECT_TRUE(contains(m, "power_a")) << m;
  EXPECT_TRUE(contains(m, "mqar")) << m;
  EXPECT_EQ(validation_error(mqar(8192, 64, 16)), "");  // 4K = L is allowed
  EXPECT_EQ(validation_error(mqar(65, 64, 16)), "");    // V = L + 1 is allowed
  EXPECT_THROW(RecallDataset(mqar(64, 64, 4), 10, 0, Split::train), DataError);
}

TEST(Validation, UnknownTaskListsTheValidOnes) {
  RecallTaskOptions o;
  o.task = "mqr";
  const std::string m = validation_error(o);
  for (const auto& name : recall_task_names()) EXPECT_TRUE(contains(m, name)) << m;
  EXPECT_TRUE(contains(m, "'mqr'")) << m;
}

TEST(Validation, OtherTasks) {
  RecallTaskOptions o;
  o.task = "associative_recall";
  o.vocab_size = 100;
  o.seq_len = 8;
  o.num_kv_pairs = 4;  // 2K+1 = 9 > 8
  EXPECT_TRUE(contains(validation_error(o), "2 * num_kv_pairs + 1")) << validation_error(o);
  o.seq_len = 9;
  EXPECT_EQ(validation_error(o), "");
  o.vocab_size = 9;  // keys [1, 4): 3 < 4
  EXPECT_TRUE(contains(validation_error(o), "vocab_size = 9")) << validation_error(o);
  o.vocab_size = 10;  // keys [1, 5): 4
  EXPECT_EQ(validation_error(o), "");

  o = RecallTaskOptions{};
  o.task = "induction_heads";
  o.seq_len = 2;
  EXPECT_TRUE(contains(validation_error(o), "seq_len must be >= 3")) << validation_error(o);
  o.seq_len = 3;
  o.vocab_size = 2;
  EXPECT_TRUE(contains(validation_error(o), "vocab_size")) << validation_error(o);
  o.vocab_size = 3;
  EXPECT_EQ(validation_error(o), "");

  o = RecallTaskOptions{};
  o.task = "selective_copying";
  o.seq_len = 31;
  o.num_tokens_to_copy = 16;
  EXPECT_TRUE(contains(validation_error(o), "num_tokens_to_copy = 16")) << validation_error(o);
  o.seq_len = 32;
  EXPECT_EQ(validation_error(o), "");
  o.vocab_size = 2;
  EXPECT_TRUE(contains(validation_error(o), "vocab_size")) << validation_error(o);
  o.vocab_size = 3;
  o.num_tokens_to_copy = 0;
  EXPECT_TRUE(contains(validation_error(o), "num_tokens_to_copy")) << validation_error(o);
}

// ------------------------------------------------------------------ other tasks

TEST(AssociativeRecall, Invariants) {
  RecallTaskOptions o;
  o.task = "associative_recall";
  o.vocab_size = 100;
  o.seq_len = 24;
  o.num_kv_pairs = 5;
  const int64_t V = 100, L = 24, K = 5;
  const RecallDataset ds(o, 2000, 1, Split::train);
  std::vector<int64_t> which(K, 0);
  for (int64_t i = 0; i < ds.size(); ++i) {
    const int32_t* in = ds.inputs(i);
    const int32_t* lab = ds.labels(i);
    std::map<int32_t, int32_t> value_of;
    std::set<int32_t> values;
    for (int64_t j = 0; j < K; ++j) {
      ASSERT_GE(in[2 * j], 1);
      ASSERT_LT(in[2 * j], V / 2);
      ASSERT_GE(in[2 * j + 1], V / 2);
      ASSERT_LT(in[2 * j + 1], V);
      ASSERT_TRUE(value_of.emplace(in[2 * j], in[2 * j + 1]).second);
      ASSERT_TRUE(values.insert(in[2 * j + 1]).second);
    }
    for (int64_t t = 2 * K; t < L - 1; ++t) ASSERT_EQ(in[t], 0);
    for (int64_t t = 0; t < L - 1; ++t) ASSERT_EQ(lab[t], kIgnoreLabel);
    ASSERT_EQ(value_of.count(in[L - 1]), 1u) << "the query is one of the keys";
    ASSERT_EQ(lab[L - 1], value_of[in[L - 1]]);
    for (int64_t j = 0; j < K; ++j) which[j] += in[2 * j] == in[L - 1];
  }
  for (int64_t j = 0; j < K; ++j) EXPECT_NEAR(which[j], 2000 / K, 80) << "pair " << j;
}

TEST(InductionHeads, Invariants) {
  RecallTaskOptions o;
  o.task = "induction_heads";
  o.vocab_size = 20;
  o.seq_len = 32;
  const int32_t s = 19;
  const RecallDataset ds(o, 3000, 2, Split::train);
  std::set<int64_t> first_positions;
  for (int64_t i = 0; i < ds.size(); ++i) {
    const int32_t* in = ds.inputs(i);
    const int32_t* lab = ds.labels(i);
    std::vector<int64_t> at;
    for (int64_t t = 0; t < 32; ++t) {
      ASSERT_GE(in[t], 0);
      ASSERT_LT(in[t], 20);
      if (in[t] == s) at.push_back(t);
    }
    ASSERT_EQ(at.size(), 2u) << "the special token appears exactly twice";
    ASSERT_EQ(at[1], 31);
    ASSERT_LE(at[0], 29);
    for (int64_t t = 0; t < 31; ++t) ASSERT_EQ(lab[t], kIgnoreLabel);
    ASSERT_EQ(lab[31], in[at[0] + 1]);
    first_positions.insert(at[0]);
  }
  EXPECT_EQ(first_positions.size(), 30u) << "the first special token takes every position 0..29";
}

TEST(SelectiveCopying, Invariants) {
  RecallTaskOptions o;
  o.task = "selective_copying";
  o.vocab_size = 10;
  o.seq_len = 32;
  o.num_tokens_to_copy = 8;
  const int64_t L = 32, M = 8;
  const RecallDataset ds(o, 3000, 4, Split::train);
  std::vector<int64_t> used(L - M, 0);
  for (int64_t i = 0; i < ds.size(); ++i) {
    const int32_t* in = ds.inputs(i);
    const int32_t* lab = ds.labels(i);
    std::vector<int32_t> data;
    for (int64_t t = 0; t < L - M; ++t) {
      ASSERT_EQ(lab[t], kIgnoreLabel);
      ASSERT_NE(in[t], 9) << "no marker in the data region";
      ASSERT_GE(in[t], 0);
      if (in[t] != 0) {
        data.push_back(in[t]);
        ++used[t];
      }
    }
    ASSERT_EQ(static_cast<int64_t>(data.size()), M);
    for (int64_t j = 0; j < M; ++j) {
      ASSERT_EQ(in[L - M + j], 9);
      ASSERT_EQ(lab[L - M + j], data[j]) << "marker " << j << " is labelled with data token " << j;
    }
  }
  // Data positions are uniform over the region: each used in M/(L-M) of the examples.
  const double expect = 3000.0 * M / (L - M);
  for (int64_t t = 0; t < L - M; ++t) EXPECT_NEAR(used[t], expect, 6 * std::sqrt(expect));
}

// ------------------------------------------------------------------ dataset access

TEST(RecallDataset, GatherAndRangeChecks) {
  const RecallTaskOptions o = mqar(8192, 32, 4);
  const RecallDataset ds(o, 50, 0, Split::test);
  EXPECT_EQ(ds.size(), 50);
  EXPECT_EQ(ds.seq_len(), 32);
  std::vector<int32_t> in, lab;
  ds.gather({7, 3, 7, 49}, in, lab);
  ASSERT_EQ(in.size(), 4u * 32);
  ASSERT_EQ(lab.size(), 4u * 32);
  const int64_t idx[] = {7, 3, 7, 49};
  for (int b = 0; b < 4; ++b) {
    EXPECT_EQ(std::vector<int32_t>(in.begin() + b * 32, in.begin() + (b + 1) * 32),
              row(ds.inputs(idx[b]), 32));
    EXPECT_EQ(std::vector<int32_t>(lab.begin() + b * 32, lab.begin() + (b + 1) * 32),
              row(ds.labels(idx[b]), 32));
  }
  EXPECT_THROW(ds.gather({0, 50}, in, lab), DataError);
  EXPECT_THROW(ds.inputs(-1), DataError);
  EXPECT_THROW(RecallDataset(o, -1, 0, Split::train), DataError);
}

TEST(RecallDataset, FromOptionsUsesTheSplitSizes) {
  DataOptions d;
  d.recall = mqar(8192, 32, 4);
  d.recall.num_train_examples = 30;
  d.recall.num_test_examples = 10;
  d.seed = 99;
  const RecallDataset train = RecallDataset::from_options(d, Split::train);
  const RecallDataset test = RecallDataset::from_options(d, Split::test);
  EXPECT_EQ(train.size(), 30);
  EXPECT_EQ(test.size(), 10);
  EXPECT_EQ(vec(train.all_inputs()), vec(RecallDataset(d.recall, 30, 99, Split::train).all_inputs()));
}

TEST(EpochPermutation, IsADeterministicPermutationThatChangesPerEpoch) {
  const auto p0 = epoch_permutation(1, 0, 1000);
  std::vector<int64_t> sorted = p0;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(p0, epoch_permutation(1, 0, 1000));
  EXPECT_NE(p0, epoch_permutation(1, 1, 1000));
  EXPECT_NE(p0, epoch_permutation(2, 0, 1000));
  // Fisher-Yates is uniform: element 0 lands in each half about equally often.
  int64_t first_half = 0;
  for (int64_t e = 0; e < 2000; ++e) {
    const auto p = epoch_permutation(3, e, 10);
    first_half += std::find(p.begin(), p.end(), 0) - p.begin() < 5;
  }
  EXPECT_NEAR(first_half, 1000, 150);
  EXPECT_TRUE(epoch_permutation(1, 0, 0).empty());
}
