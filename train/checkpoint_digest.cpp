// SHA-256 written from FIPS 180-4, and the digest header of checkpoints.
#include "train/checkpoint_digest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "train/checkpoint.h"

namespace seqmix {

namespace {

// The first 32 bits of the fractional parts of the cube roots of the first 64 primes.
constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

constexpr char kMagic[] = "seqmix-checkpoint-digest 1\n";
constexpr char kHdf5Signature[] = "\x89HDF\r\n\x1a\n";

std::string os_error(const std::string& path, const std::string& what) {
  return path + ": cannot " + what + " (" + std::strerror(errno) + ")";
}

// Closes a file descriptor on every path out.
struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Hashes bytes [from, end) of fd; returns the number of bytes hashed.
int64_t hash_from(const std::string& path, int fd, int64_t from, Sha256& sha) {
  std::vector<uint8_t> buf(1 << 20);
  int64_t off = from, total = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw CheckpointError(os_error(path, "read"));
    }
    if (n == 0) break;
    sha.update(buf.data(), static_cast<size_t>(n));
    off += n;
    total += n;
  }
  return total;
}

}  // namespace

Sha256::Sha256() : h_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19} {}

void Sha256::block(const uint8_t* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i)
    w[i] = uint32_t(p[4 * i]) << 24 | uint32_t(p[4 * i + 1]) << 16 | uint32_t(p[4 * i + 2]) << 8 | uint32_t(p[4 * i + 3]);
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const uint32_t ch = (e & f) ^ (~e & g);
    const uint32_t t1 = h + S1 + ch + kRound[i] + w[i];
    const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    const uint32_t t2 = S0 + maj;
    h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
  }
  h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
}

void Sha256::update(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  total_ += n;
  if (buffered_ > 0) {
    const size_t take = std::min(n, 64 - buffered_);
    std::memcpy(buf_ + buffered_, p, take);
    buffered_ += take, p += take, n -= take;
    if (buffered_ < 64) return;
    block(buf_);
    buffered_ = 0;
  }
  for (; n >= 64; p += 64, n -= 64) block(p);
  if (n > 0) std::memcpy(buf_, p, n);
  buffered_ = n;
}

std::array<uint8_t, 32> Sha256::finish() {
  // Padding: a 1 bit, zeros up to 56 mod 64 bytes, then the message length in bits (big-endian).
  const uint64_t bits = total_ * 8;
  const uint8_t one = 0x80, zero = 0;
  update(&one, 1);
  while (buffered_ != 56) update(&zero, 1);
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  update(len, 8);
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 8; ++i)
    for (int k = 0; k < 4; ++k) out[4 * i + k] = static_cast<uint8_t>(h_[i] >> (24 - 8 * k));
  return out;
}

std::string Sha256::hex(const std::array<uint8_t, 32>& d) {
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (uint8_t b : d) s += digits[b >> 4], s += digits[b & 15];
  return s;
}

void seal_checkpoint_digest(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDWR)};
  if (f.fd < 0) throw CheckpointError(os_error(path, "open for sealing"));
  Sha256 sha;
  const int64_t hashed = hash_from(path, f.fd, kDigestBlockSize, sha);
  std::string header = std::string(kMagic) + "sha256 " + Sha256::hex(sha.finish()) + "\nsize " +
                       std::to_string(hashed + kDigestBlockSize) + "\n";
  header.resize(kDigestBlockSize, '\0');
  if (::pwrite(f.fd, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size()))
    throw CheckpointError(os_error(path, "write the digest header"));
  if (::fsync(f.fd) != 0) throw CheckpointError(os_error(path, "fsync"));
}

DigestStatus verify_checkpoint_digest(const std::string& path) {
  Fd f{::open(path.c_str(), O_RDONLY)};
  if (f.fd < 0) throw CheckpointError(os_error(path, "open"));
  struct stat st;
  if (::fstat(f.fd, &st) != 0) throw CheckpointError(os_error(path, "stat"));
  char head[kDigestBlockSize] = {};
  const ssize_t got = ::pread(f.fd, head, sizeof head, 0);
  if (got < 0) throw CheckpointError(os_error(path, "read"));
  const std::string_view h(head, static_cast<size_t>(got));
  if (h.substr(0, 8) == std::string_view(kHdf5Signature, 8)) return DigestStatus::absent;
  const std::string_view magic(kMagic);
  if (h.substr(0, magic.size()) != magic) {
    // A seqmix checkpoint starts with the digest header, another tool's HDF5 file
    // with the HDF5 signature; anything else is either damaged or not a checkpoint.
    char at512[8] = {};
    if (::pread(f.fd, at512, 8, kDigestBlockSize) == 8 && std::memcmp(at512, kHdf5Signature, 8) == 0)
      throw CheckpointError(path + ": the digest header (bytes 0-511) is damaged");
    throw CheckpointError(path + ": not an HDF5 file, or truncated or corrupted (it starts with neither the "
                                 "seqmix digest header nor the HDF5 signature)");
  }
  // Parse "sha256 <hex>\nsize <n>\n" after the magic line.
  const std::string text(h.substr(magic.size(), h.find('\0', magic.size()) - magic.size()));
  std::string expect_hex;
  long long expect_size = -1;
  {
    const size_t a = text.find("sha256 "), nl = text.find('\n'), s = text.find("size ");
    if (a != 0 || nl != 71 || s != 72) throw CheckpointError(path + ": the digest header (bytes 0-511) is damaged");
    expect_hex = text.substr(7, 64);
    char* end = nullptr;
    expect_size = std::strtoll(text.c_str() + s + 5, &end, 10);
    if (end == text.c_str() + s + 5 || *end != '\n' || expect_size < kDigestBlockSize)
      throw CheckpointError(path + ": the digest header (bytes 0-511) is damaged");
  }
  {
    // The whole block must be exactly what seal_checkpoint_digest writes, padding included.
    std::string exact = std::string(kMagic) + "sha256 " + expect_hex + "\nsize " + std::to_string(expect_size) + "\n";
    exact.resize(kDigestBlockSize, '\0');
    if (h != std::string_view(exact)) throw CheckpointError(path + ": the digest header (bytes 0-511) is damaged");
  }
  if (static_cast<long long>(st.st_size) != expect_size)
    throw CheckpointError(path + ": the file is " + std::to_string(st.st_size) + " bytes but was written with " +
                          std::to_string(expect_size) + " (truncated or extended since it was written)");
  Sha256 sha;
  hash_from(path, f.fd, kDigestBlockSize, sha);
  const std::string actual = Sha256::hex(sha.finish());
  if (actual != expect_hex)
    throw CheckpointError(path + ": the file is damaged: its SHA-256 digest " + actual.substr(0, 16) +
                          "... differs from the one recorded when it was written (" + expect_hex.substr(0, 16) +
                          "...); some bytes changed since");
  return DigestStatus::verified;
}

}  // namespace seqmix
