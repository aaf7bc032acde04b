// The pre-tokenized file loader (nanoGPT .bin, llm.c shards) on arbitrary bytes.
// The first byte picks the format, the vocabulary size and seq_len; the rest is
// the file, used as both train and validation file. Any input must end in a
// dataset whose ids are all below the vocabulary, or a DataError.
#include <cstdint>
#include <string>
#include <vector>

#include "core/random.h"
#include "data/errors.h"
#include "data/token_file.h"
#include "fuzz/fuzz_common.h"

using namespace seqmix;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const std::string path = fuzz::scratch_path("tokens.bin");
  fuzz::write_bytes(path, data + 1, size - 1);
  static const char* formats[] = {"auto", "nanogpt", "llmc", "auto"};
  TokenFileOptions opt;
  opt.train_path = opt.val_path = path;
  opt.format = formats[data[0] & 3];
  opt.vocab_size = (data[0] & 4) ? 50304 : 1 + (data[0] >> 3);
  opt.seq_len = 1 + (data[0] >> 4);
  try {
    TokenDataset ds = TokenDataset::open(opt);
    for (Split s : {Split::train, Split::test})
      for (int64_t i = 0; i < ds.num_tokens(s); ++i)
        if (ds.tokens(s)[i] >= opt.vocab_size) __builtin_trap();
    Generator rng(1);
    std::vector<int32_t> in, lab;
    ds.sample_batch(Split::train, 2, rng, in, lab);
    const int64_t w = ds.num_eval_windows(Split::test);
    if (ds.eval_batch(Split::test, w - 1, 3, in, lab) != 1) __builtin_trap();
  } catch (const DataError&) {
  }
  return 0;
}
