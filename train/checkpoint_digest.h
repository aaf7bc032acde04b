// The whole-file digest that guards a checkpoint before HDF5 parses it.
//
// HDF5's metadata parser is not safe against damaged files (a zeroed block can
// make it free an invalid pointer), so no damaged file may reach it. A
// checkpoint is therefore written with a 512-byte HDF5 user block in front of
// the HDF5 data: HDF5 itself (and h5py, h5dump) skips it and finds the
// superblock at offset 512, and seqmix stores there, as plain text,
//
//   seqmix-checkpoint-digest 1
//   sha256 <64 hex digits of bytes [512, end of file)>
//   size <file size in bytes>
//
// padded with zero bytes. The reader checks size and digest before HDF5 opens
// the file. The same check by hand: `tail -c +513 checkpoint.h5 | sha256sum`.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace seqmix {

inline constexpr int64_t kDigestBlockSize = 512;  // an HDF5 user block: a power of two >= 512

// SHA-256 (FIPS 180-4), incremental.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  std::array<uint8_t, 32> finish();
  static std::string hex(const std::array<uint8_t, 32>& d);

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t buffered_ = 0;
  uint64_t total_ = 0;
};

// Computes the digest of bytes [kDigestBlockSize, end) of the file and writes the
// header into its first kDigestBlockSize bytes, then fsyncs. The file must have
// been created with a user block of kDigestBlockSize bytes. Throws
// CheckpointError naming the file and the OS error.
void seal_checkpoint_digest(const std::string& path);

enum class DigestStatus { verified, absent };

// verified: the header is present and size and digest match. absent: the file
// starts with the HDF5 signature (written by another tool, no user block).
// Throws CheckpointError naming the file and the problem otherwise (a changed
// byte, a truncated or extended file, a damaged header).
DigestStatus verify_checkpoint_digest(const std::string& path);

}  // namespace seqmix
