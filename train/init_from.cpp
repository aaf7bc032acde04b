#include "train/init_from.h"

#include <spdlog/spdlog.h>

#include "train/checkpoint.h"

namespace seqmix {

void init_weights_from(const std::string& checkpoint, const LanguageModel& model, const DataSource& data) {
  CheckpointData ck = read_checkpoint(checkpoint);
  if (ck.tokenizer) {
    const Tokenizer* tok = data.tokenizer();
    if (tok && (tok->kind() != ck.tokenizer->first || tok->vocabulary_utf8() != ck.tokenizer->second))
      throw CheckpointError(checkpoint + ": its tokenizer (" + ck.tokenizer->first + ") differs from the one of " +
                            "CONFIG's corpus (" + tok->kind() + ", " + std::to_string(tok->vocab_size()) +
                            " tokens): the token ids would mean other characters");
  }
  try {
    load_named(checkpoint, ck.params, model.named_parameters(), "params");
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string(e.what()) + " (--init-from needs the names and shapes of CONFIG's model)");
  }
  spdlog::info("initialised {} parameters from {} (fresh optimizer)", model.num_parameters(), checkpoint);
}

}  // namespace seqmix
