#include "data/recall_dataset.h"

#include <omp.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>
#include <utility>

#include "core/random.h"
#include "data/errors.h"

namespace seqmix {

namespace {
constexpr int64_t kMaxExamples = int64_t{1} << 40;

// Uninitialised storage for n tokens. The generation loop is the first to
// touch it, in parallel, so the page faults (about 3 ms per MB in the VMs
// this was measured on: 0.7 s for 100000 x 256 inputs and labels) are shared
// by the threads and not paid a second time by a zero fill. Buffers of 2 MB
// and more are 2 MB aligned and ask for transparent huge pages: one fault
// per 2 MB instead of per 4 KB where the kernel allows it (measured 0.1-0.4 s
// instead of 0.9-1.2 s for 100 MB under load).
std::shared_ptr<int32_t> allocate_tokens(size_t n) {
  constexpr size_t kHuge = size_t{1} << 21;
  size_t bytes = std::max<size_t>(n, 1) * sizeof(int32_t);
  void* p = nullptr;
  if (bytes >= kHuge) {
    bytes = (bytes + kHuge - 1) / kHuge * kHuge;
    p = std::aligned_alloc(kHuge, bytes);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p) madvise(p, bytes, MADV_HUGEPAGE);  // a hint; failure is harmless
#endif
  } else {
    p = std::malloc(bytes);
  }
  if (!p) throw std::bad_alloc();
  return std::shared_ptr<int32_t>(static_cast<int32_t*>(p), [](int32_t* q) { std::free(q); });
}
}  // namespace

uint64_t RecallDataset::example_stream(Split split, int64_t i) {
  return (split_id(split) << 40) + static_cast<uint64_t>(i);
}

RecallDataset::RecallDataset(const RecallTaskOptions& options, int64_t num_examples,
                             uint64_t seed, Split split)
    : options_(options), num_examples_(num_examples), seed_(seed), split_(split) {
  if (num_examples < 0 || num_examples >= kMaxExamples)
    throw DataError("recall dataset (" + std::string(split_name(split)) +
                    "): num_examples must be in [0, 2^40) (num_examples = " +
                    std::to_string(num_examples) + ")");
  const RecallTask task(options_);  // validates
  const int64_t L = options_.seq_len;
  inputs_ = allocate_tokens(total());
  labels_ = allocate_tokens(total());
  int32_t* const inputs = inputs_.get();
  int32_t* const labels = labels_.get();
  const Generator root(seed);
  int64_t labelled = 0;
  // Examples are independent streams: any schedule gives the same data.
#pragma omp parallel for schedule(static) reduction(+ : labelled)
  for (int64_t i = 0; i < num_examples; ++i) {
    Generator rng = root.fork(example_stream(split, i));
    const size_t off = static_cast<size_t>(i) * static_cast<size_t>(L);
    task.generate(rng, inputs + off, labels + off);
    for (int64_t t = 0; t < L; ++t) labelled += labels[off + t] != kIgnoreLabel;
  }
  num_labelled_ = labelled;
}

RecallDataset RecallDataset::from_options(const DataOptions& data, Split split) {
  const int64_t n = split == Split::train ? data.recall.num_train_examples
                                          : data.recall.num_test_examples;
  return RecallDataset(data.recall, n, data.seed, split);
}

const int32_t* RecallDataset::inputs(int64_t i) const {
  if (i < 0 || i >= num_examples_)
    throw DataError("recall dataset (" + std::string(split_name(split_)) + "): example " +
                    std::to_string(i) + " is outside [0, " + std::to_string(num_examples_) + ")");
  return inputs_.get() + static_cast<size_t>(i) * static_cast<size_t>(options_.seq_len);
}

const int32_t* RecallDataset::labels(int64_t i) const {
  if (i < 0 || i >= num_examples_)
    throw DataError("recall dataset (" + std::string(split_name(split_)) + "): example " +
                    std::to_string(i) + " is outside [0, " + std::to_string(num_examples_) + ")");
  return labels_.get() + static_cast<size_t>(i) * static_cast<size_t>(options_.seq_len);
}

void RecallDataset::gather(const std::vector<int64_t>& indices, std::vector<int32_t>& inputs_out,
                           std::vector<int32_t>& labels_out) const {
  const size_t L = static_cast<size_t>(options_.seq_len);
  inputs_out.resize(indices.size() * L);
  labels_out.resize(indices.size() * L);
  for (size_t b = 0; b < indices.size(); ++b) {
    const int32_t* in = inputs(indices[b]);  // range-checked
    const int32_t* lab = labels(indices[b]);
    std::copy(in, in + L, inputs_out.data() + b * L);
    std::copy(lab, lab + L, labels_out.data() + b * L);
  }
}

std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  if (n < 0) throw DataError("epoch_permutation: n must be >= 0 (n = " + std::to_string(n) + ")");
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  // A stream family of its own (seed mixed with a constant), apart from the
  // example streams of RecallDataset, which fork Generator(seed) directly.
  Generator rng = Generator(seed ^ 0xE90C4E9A5F1B2D37ull).fork(static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng.randint(0, i + 1)]);
  return p;
}

}  // namespace seqmix
