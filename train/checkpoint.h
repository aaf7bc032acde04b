// HDF5 checkpoints (docs/checkpoints.md).
//
//   /                    attributes: format = "seqmix", format_version = 1 (int),
//                        config = the resolved configuration as YAML text
//   /params/<name>       float32, PyTorch shapes (names as docs/model.md, docs/mixers.md; the dots stay
//                        in the dataset name, e.g. /params/layers.0.mixer.Wqkv.weight)
//   /optimizer/step      int64 scalar
//   /optimizer/m/<name>, /optimizer/v/<name>   Adam moments
//   /tokenizer           text tasks: attributes kind and vocabulary (UTF-8)
//   /train/<key>         uint64/int64/float64 scalars for exact resumption
//
// Writing goes to "<path>.tmp" in the same directory, flushed and fsync'ed, then
// renamed over <path>: a crash at any moment leaves either the old or the new
// checkpoint, never a broken one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>

#include "core/tensor.h"
#include "layers/module.h"

namespace seqmix {

inline constexpr int64_t kCheckpointFormatVersion = 1;

// what() names the file and the problem.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CheckpointData {
  std::string config_yaml;
  NamedTensors params;         // float32
  int64_t optimizer_step = 0;
  NamedTensors adam_m, adam_v; // float32, same names and shapes as params (may be empty)
  std::optional<std::pair<std::string, std::string>> tokenizer;  // (kind, vocabulary utf8)
  std::map<std::string, uint64_t> train_u64;  // RNG states, data cursor, step, ...
  std::map<std::string, double> train_f64;    // best accuracy, elapsed time, ...
};

// Atomic write (temporary file, fsync, rename). Throws CheckpointError.
void write_checkpoint(const std::string& path, const CheckpointData& data);

// Reads and validates structure: format, format_version (a newer one is refused),
// the config attribute, every group, dataset dtypes (float32 params) and that m and v
// match params in names and shapes. A truncated or corrupted file, or one that is not
// HDF5, is refused with CheckpointError naming the file and the problem.
CheckpointData read_checkpoint(const std::string& path);

// A file without a digest is parsed first in a child process, which may take
// base_seconds + 1 s per 50 MB before the file is refused as damaged (HDF5 can loop
// forever on one). 30 s by default, generous for any real file; the tests and the
// fuzz target lower it, so that each such file costs them seconds, not half a minute.
void set_undigested_parse_base_seconds(double base_seconds);

// Copies checkpoint tensors into existing tensors by name: every expected name must be
// present with the expected shape, and no extra names may be present. Throws
// CheckpointError naming the file, the tensor and the shapes.
void load_named(const std::string& path, const NamedTensors& stored, const NamedTensors& into,
                const std::string& what);

}  // namespace seqmix
