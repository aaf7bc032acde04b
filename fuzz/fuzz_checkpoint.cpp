// The checkpoint reader on arbitrary bytes: the digest check, and for files
// without a digest, HDF5 parsing in a child process. Every input must end in a
// CheckpointData or a CheckpointError naming the file.
#include <spdlog/spdlog.h>

#include <cstdint>
#include <string>

#include "fuzz/fuzz_common.h"
#include "train/checkpoint.h"

using namespace seqmix;

// Files without a digest are warned about on every input: keep the output to the
// fuzzer's own lines.
// A file on which HDF5 hangs costs its whole time limit: 2 s here instead of 30 s
// keeps the run at a useful rate while still finding (and refusing) every hang.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::err);
  set_undigested_parse_base_seconds(2.0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz::scratch_path("checkpoint.h5");
  fuzz::write_bytes(path, data, size);
  try {
    read_checkpoint(path);
  } catch (const CheckpointError& e) {
    if (std::string(e.what()).find(path) == std::string::npos) __builtin_trap();  // the message names the file
  }
  return 0;
}
