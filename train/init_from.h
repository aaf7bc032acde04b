// `seqmix train CONFIG --init-from CKPT`: start a run from the weights of another
// checkpoint (one written by seqmix, or by python/seqmix_torch's save()). Only the
// parameters are taken: the optimizer, the schedule and the data start fresh, as
// CONFIG says.
#pragma once

#include <string>

#include "layers/model.h"
#include "train/data_source.h"

namespace seqmix {

// Copies every parameter of the checkpoint into `model` (built from CONFIG). Throws
// CheckpointError naming the file and the tensor when a name of the model is missing
// from the checkpoint, a shape differs, or the checkpoint holds a tensor the model
// does not have; and when both the checkpoint and `data` carry a text tokenizer and
// the two differ (token ids would mean other characters).
// The model's tensors are handles: named_parameters() of a const model writes
// through to its weights, which is what a weights-only start needs.
void init_weights_from(const std::string& checkpoint, const LanguageModel& model, const DataSource& data);

}  // namespace seqmix
