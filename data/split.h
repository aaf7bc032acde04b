// Which part of a data source: `train`, or `test` (the held-out examples of a
// recall task, the validation tokens of a text corpus).
#pragma once

#include <cstdint>

namespace seqmix {

enum class Split { train, test };

inline const char* split_name(Split s) { return s == Split::train ? "train" : "test"; }
inline uint64_t split_id(Split s) { return s == Split::train ? 0 : 1; }

}  // namespace seqmix
