// The recall-task options as a user writes them: the input is the data: block of
// a config (YAML), parsed and validated, then the task is generated and batches
// are drawn. Any input must end in batches or a ConfigError / DataError.
#include <cstdint>
#include <string>

#include "data/errors.h"
#include "fuzz/fuzz_common.h"
#include "train/config.h"
#include "train/data_source.h"
#include "train/memory_estimate.h"

using namespace seqmix;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml = "model: {vocab_size: 256, d_model: 8, n_layers: 1}\n"
                           "training: {steps: 1, batch_size: 2}\nschedule: {warmup_steps: 0}\n" +
                           std::string(reinterpret_cast<const char*>(data), size);
  try {
    Config c = parse_config(yaml, "fuzz.yaml");
    if (c.data.kind != "recall") return 0;
    // Keep each run small: the recall generator allocates what the options ask.
    if (estimate_memory(c, true).data_bytes > fuzz::kFuzzMemoryBytes) return 0;
    auto src = make_data_source(c.data, c.training.batch_size, 1);
    Batch b = src->next_train_batch();
    if (b.inputs.numel() != c.training.batch_size * src->seq_len()) __builtin_trap();
    for (int64_t i = 0; i < b.inputs.numel(); ++i)
      if (b.inputs.i32()[i] < 0 || b.inputs.i32()[i] >= src->vocab_size()) __builtin_trap();
    if (src->num_eval_batches() > 0) src->eval_batch(src->num_eval_batches() - 1);
  } catch (const ConfigError&) {
  } catch (const DataError&) {
  }
  return 0;
}
