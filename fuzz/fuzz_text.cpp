// The text loader and tokenizers on arbitrary bytes. The first byte picks the
// tokenizer and seq_len; the rest is the file. Valid text must round-trip
// through encode and decode; anything else must end in a DataError.
#include <cstdint>
#include <string>
#include <string_view>

#include "core/random.h"
#include "data/errors.h"
#include "data/text.h"
#include "fuzz/fuzz_common.h"

using namespace seqmix;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  TextOptions opt;
  opt.tokenizer = (data[0] & 1) ? "byte" : "char";
  opt.seq_len = 1 + (data[0] >> 1) % 32;
  // A tokenizer from a vocabulary (as a checkpoint stores it).
  try {
    Tokenizer t = Tokenizer::from_vocabulary(opt.tokenizer, text);
    if (t.vocab_size() <= 0) __builtin_trap();
  } catch (const DataError&) {
  }
  // The file path of the loader: write, load, sample, evaluate.
  static const std::string path = fuzz::scratch_path("corpus.txt");
  fuzz::write_bytes(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  opt.path = path;
  try {
    TextCorpus c = TextCorpus::load(opt);
    const std::vector<int32_t> ids = c.tokenizer().encode(text);
    if (c.tokenizer().decode(ids) != text) __builtin_trap();
    Generator rng(1);
    std::vector<int32_t> in, lab;
    c.sample_batch(Split::train, 2, rng, in, lab);
    const int64_t windows = c.num_eval_windows(Split::test);
    if (c.eval_batch(Split::test, windows - 1, 4, in, lab) != 1) __builtin_trap();
    TextCorpus whole = TextCorpus::load(opt, &c.tokenizer(), true);
    if (whole.num_tokens(Split::test) != static_cast<int64_t>(ids.size())) __builtin_trap();
  } catch (const DataError&) {
  }
  return 0;
}
