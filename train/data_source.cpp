#include "train/data_source.h"

#include <algorithm>
#include <sstream>

#include "data/errors.h"
#include "data/recall_dataset.h"
#include "data/token_file.h"

namespace seqmix {

namespace {

Batch to_batch(int64_t rows, int64_t L, const std::vector<int32_t>& in, const std::vector<int32_t>& lab) {
  return Batch{Tensor::from_vector({rows, L}, in), Tensor::from_vector({rows, L}, lab)};
}

class RecallSource : public DataSource {
 public:
  RecallSource(const DataOptions& opt, int64_t batch)
      : opt_(opt),
        batch_(batch),
        train_(RecallDataset::from_options(opt, Split::train)),
        test_(RecallDataset::from_options(opt, Split::test)) {
    if (train_.size() < batch_)
      throw DataError("data.num_train_examples = " + std::to_string(train_.size()) +
                      " is smaller than training.batch_size = " + std::to_string(batch_));
  }

  Batch next_train_batch() override {
    const int64_t bpe = batches_per_epoch();
    const int64_t epoch = drawn_ / bpe, pos = drawn_ % bpe;
    if (epoch != perm_epoch_) {
      perm_ = epoch_permutation(opt_.seed, epoch, train_.size());
      perm_epoch_ = epoch;
    }
    std::vector<int64_t> idx(perm_.begin() + pos * batch_, perm_.begin() + (pos + 1) * batch_);
    std::vector<int32_t> in, lab;
    train_.gather(idx, in, lab);
    ++drawn_;
    return to_batch(batch_, train_.seq_len(), in, lab);
  }
  int64_t batches_per_epoch() const override { return train_.size() / batch_; }
  std::map<std::string, uint64_t> state() const override { return {{"data_batches_drawn", drawn_}}; }
  void set_state(const std::map<std::string, uint64_t>& s) override { drawn_ = static_cast<int64_t>(s.at("data_batches_drawn")); }
  int64_t num_eval_batches() const override { return (test_.size() + batch_ - 1) / batch_; }
  Batch eval_batch(int64_t i) const override {
    const int64_t first = i * batch_, rows = std::min(batch_, test_.size() - first);
    std::vector<int64_t> idx(rows);
    for (int64_t r = 0; r < rows; ++r) idx[r] = first + r;
    std::vector<int32_t> in, lab;
    test_.gather(idx, in, lab);
    return to_batch(rows, test_.seq_len(), in, lab);
  }
  int64_t vocab_size() const override { return train_.vocab_size(); }
  int64_t seq_len() const override { return train_.seq_len(); }
  std::string describe() const override {
    std::ostringstream os;
    os << opt_.recall.task << ": " << train_.size() << " train / " << test_.size() << " test examples, L="
       << train_.seq_len() << ", V=" << train_.vocab_size();
    if (opt_.recall.task == "mqar" || opt_.recall.task == "associative_recall") os << ", K=" << opt_.recall.num_kv_pairs;
    return os.str();
  }

 private:
  DataOptions opt_;
  int64_t batch_;
  RecallDataset train_, test_;
  int64_t drawn_ = 0;
  int64_t perm_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// A stream of tokens cut into windows (a text corpus, token files): training windows
// at random (the position in the stream is the RNG state), evaluation windows in order.
// Windows is TextCorpus or TokenDataset.
template <class Windows>
class WindowSource : public DataSource {
 public:
  WindowSource(Windows data, int64_t batch, int64_t eval_batches, uint64_t rng_seed)
      : batch_(batch), eval_batches_(eval_batches), data_(std::move(data)), rng_(rng_seed) {}

  Batch next_train_batch() override {
    std::vector<int32_t> in, lab;
    data_.sample_batch(Split::train, batch_, rng_, in, lab);
    return to_batch(batch_, data_.seq_len(), in, lab);
  }
  int64_t batches_per_epoch() const override { return 0; }
  std::map<std::string, uint64_t> state() const override {
    return {{"data_rng_seed", rng_.seed()}, {"data_rng_counter", rng_.counter()}};
  }
  void set_state(const std::map<std::string, uint64_t>& s) override {
    rng_.set_state(s.at("data_rng_seed"), s.at("data_rng_counter"));
  }
  // The first eval_batches * B validation windows (all of them when eval_batches
  // is 0): the same windows at every evaluation, so the curve is comparable.
  int64_t num_eval_batches() const override {
    const int64_t all = (data_.num_eval_windows(Split::test) + batch_ - 1) / batch_;
    return eval_batches_ > 0 ? std::min(all, eval_batches_) : all;
  }
  Batch eval_batch(int64_t i) const override {
    std::vector<int32_t> in, lab;
    const int64_t rows = data_.eval_batch(Split::test, i * batch_, batch_, in, lab);
    return to_batch(rows, data_.seq_len(), in, lab);
  }
  int64_t seq_len() const override { return data_.seq_len(); }

 protected:
  int64_t batch_, eval_batches_;
  Windows data_;
  Generator rng_;
};

class TextSource : public WindowSource<TextCorpus> {
 public:
  TextSource(const DataOptions& opt, int64_t batch, int64_t eval_batches, const Tokenizer* tok, bool whole)
      : WindowSource(TextCorpus::load(opt.text, tok, whole), batch, eval_batches, hash_counter(opt.seed, 0x7e47)),
        whole_(whole) {}

  Batch next_train_batch() override {
    if (whole_) throw DataError("text corpus '" + data_.options().path + "' was loaded for evaluation only");
    return WindowSource::next_train_batch();
  }
  int64_t vocab_size() const override { return data_.tokenizer().vocab_size(); }
  const Tokenizer* tokenizer() const override { return &data_.tokenizer(); }
  std::string describe() const override {
    std::ostringstream os;
    os << "text " << data_.options().path << ": " << data_.tokenizer().kind() << " tokenizer, V=" << vocab_size();
    if (whole_) os << ", all " << data_.num_tokens(Split::test) << " tokens evaluated, L=" << seq_len();
    else
      os << ", " << data_.num_tokens(Split::train) << " train / " << data_.num_tokens(Split::test)
         << " validation tokens, L=" << seq_len();
    return os.str();
  }

 private:
  bool whole_;
};

// ---- Pre-tokenized files (data.kind: tokens) ----------------------------------------

class TokenSource : public WindowSource<TokenDataset> {
 public:
  TokenSource(const DataOptions& opt, int64_t batch, int64_t eval_batches)
      : WindowSource(TokenDataset::open(opt.tokens), batch, eval_batches, hash_counter(opt.seed, 0x70c5)) {}

  int64_t vocab_size() const override { return data_.options().vocab_size; }
  std::string describe() const override {
    std::ostringstream os;
    os << "tokens " << data_.options().train_path << " (" << data_.num_tokens(Split::train) << " tokens) / "
       << data_.options().val_path << " (" << data_.num_tokens(Split::test) << " tokens), V=" << vocab_size()
       << ", L=" << seq_len();
    return os.str();
  }
};

}  // namespace

Batch batch_rows(const Batch& b, int64_t begin, int64_t end) {
  const int64_t L = b.inputs.size(1);
  const auto rows = [&](const Tensor& t) {
    const int32_t* p = t.i32();
    return std::vector<int32_t>(p + begin * L, p + end * L);
  };
  return to_batch(end - begin, L, rows(b.inputs), rows(b.labels));
}

std::unique_ptr<DataSource> make_data_source(const DataOptions& opt, int64_t batch_size, int64_t eval_batches,
                                             const Tokenizer* tokenizer, bool whole_text) {
  if (opt.kind == "tokens") return std::make_unique<TokenSource>(opt, batch_size, eval_batches);
  if (opt.kind == "recall") return std::make_unique<RecallSource>(opt, batch_size);
  if (opt.kind == "text") return std::make_unique<TextSource>(opt, batch_size, eval_batches, tokenizer, whole_text);
  throw DataError("data.kind '" + opt.kind + "' is not one of recall, text, tokens");
}

}  // namespace seqmix
