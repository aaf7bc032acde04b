// The one exception type of data/: thrown for invalid task options, unreadable
// or malformed corpora and out-of-range requests. Messages name the option or
// file and the problem, so that the person reading them can fix it.
#pragma once

#include <stdexcept>
#include <string>

namespace seqmix {

struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace seqmix
