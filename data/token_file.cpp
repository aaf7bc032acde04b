#include "data/token_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "data/errors.h"
#include "data/token_windows.h"

namespace seqmix {

namespace {

constexpr size_t kHeaderBytes = kLlmcHeaderInts * sizeof(int32_t);

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw DataError("token file '" + path + "': " + problem);
}

std::string os_error() { return std::strerror(errno); }

// The first token id >= vocab_size, or -1. The max pass vectorises; the search for
// the position runs only for a bad file.
int64_t first_out_of_vocab(const uint16_t* tok, int64_t n, int64_t vocab_size) {
  uint16_t hi = 0;
  for (int64_t i = 0; i < n; ++i) hi = std::max(hi, tok[i]);
  if (hi < vocab_size) return -1;
  for (int64_t i = 0; i < n; ++i)
    if (tok[i] >= vocab_size) return i;
  return -1;
}

}  // namespace

TokenFile TokenFile::open(const std::string& path, const std::string& format, int64_t vocab_size) {
  if (format != "auto" && format != "nanogpt" && format != "llmc")
    throw DataError("data.format '" + format + "' is not one of auto, nanogpt, llmc");
  if (vocab_size < 1 || vocab_size > 65536)
    throw DataError("data.vocab_size " + std::to_string(vocab_size) +
                    " must be in [1, 65536]: token files hold uint16 ids");
  TokenFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: " + os_error());
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string err = os_error();
    ::close(fd);
    fail(path, "cannot stat: " + err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  if (bytes == 0) {
    ::close(fd);
    fail(path, "the file is empty");
  }
  void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const std::string map_err = map == MAP_FAILED ? os_error() : "";
  ::close(fd);  // the mapping keeps the file open
  if (map == MAP_FAILED) fail(path, "cannot map: " + map_err);
  f.map_ = map;
  f.map_bytes_ = bytes;

  const auto* head = static_cast<const int32_t*>(map);
  const bool has_magic = bytes >= sizeof(int32_t) && head[0] == kLlmcMagic;
  f.format_ = format == "auto" ? (has_magic && bytes >= kHeaderBytes ? "llmc" : "nanogpt") : format;

  size_t offset = 0;
  if (f.format_ == "llmc") {
    if (bytes < kHeaderBytes)
      fail(path, std::to_string(bytes) + " bytes: truncated header (an llm.c token file starts with a " +
                     std::to_string(kHeaderBytes) + "-byte header)");
    if (head[0] != kLlmcMagic)
      fail(path, "byte offset 0: magic number " + std::to_string(head[0]) + ", expected " +
                     std::to_string(kLlmcMagic) + " (llm.c token file)");
    if (head[1] != 1)
      fail(path, "byte offset 4: version " + std::to_string(head[1]) +
                     ", only version 1 (uint16 tokens) is supported");
    const int64_t declared = head[2];
    if (declared <= 0) fail(path, "byte offset 8: token count " + std::to_string(declared) + " must be > 0");
    const size_t expected = kHeaderBytes + static_cast<size_t>(declared) * sizeof(uint16_t);
    if (bytes != expected)
      fail(path, "the header declares " + std::to_string(declared) + " tokens (" + std::to_string(expected) +
                     " bytes) but the file has " + std::to_string(bytes) + " bytes" +
                     (bytes < expected ? " (truncated)" : ""));
    offset = kHeaderBytes;
  } else if (bytes % sizeof(uint16_t) != 0) {
    fail(path, std::to_string(bytes) + " bytes is an odd count: a nanoGPT token file is raw uint16 ids (2 bytes each)" +
                   std::string(has_magic ? "; it starts with llm.c's magic number but is shorter than its header" : ""));
  }
  f.tokens_ = reinterpret_cast<const uint16_t*>(static_cast<const char*>(map) + offset);
  f.num_tokens_ = static_cast<int64_t>((bytes - offset) / sizeof(uint16_t));
  const int64_t bad = first_out_of_vocab(f.tokens_, f.num_tokens_, vocab_size);
  if (bad >= 0)
    fail(path, "byte offset " + std::to_string(offset + static_cast<size_t>(bad) * sizeof(uint16_t)) +
                   " (token " + std::to_string(bad) + "): id " + std::to_string(f.tokens_[bad]) +
                   " is >= data.vocab_size " + std::to_string(vocab_size));
  return f;
}

TokenFile::TokenFile(TokenFile&& other) noexcept { *this = std::move(other); }

TokenFile& TokenFile::operator=(TokenFile&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    format_ = std::move(other.format_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    num_tokens_ = std::exchange(other.num_tokens_, 0);
  }
  return *this;
}

TokenFile::~TokenFile() { release(); }

void TokenFile::release() {
  if (map_) ::munmap(map_, map_bytes_);
  map_ = nullptr;
}

void write_token_file(const std::string& path, const std::string& format, const std::vector<int64_t>& tokens) {
  if (format != "nanogpt" && format != "llmc")
    throw DataError("write_token_file: format '" + format + "' is not one of nanogpt, llmc");
  std::vector<uint16_t> ids(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > 65535)
      throw DataError("write_token_file: token " + std::to_string(i) + " = " + std::to_string(tokens[i]) +
                      " does not fit in uint16");
    ids[i] = static_cast<uint16_t>(tokens[i]);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw DataError("token file '" + path + "': cannot write: " + os_error());
  if (format == "llmc") {
    int32_t header[kLlmcHeaderInts] = {};
    header[0] = kLlmcMagic;
    header[1] = 1;
    header[2] = static_cast<int32_t>(tokens.size());
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
  }
  out.write(reinterpret_cast<const char*>(ids.data()), static_cast<std::streamsize>(ids.size() * sizeof(uint16_t)));
  if (!out.flush()) throw DataError("token file '" + path + "': cannot write: " + os_error());
}

TokenDataset TokenDataset::open(const TokenFileOptions& options) {
  if (options.train_path.empty()) throw DataError("data.train_path is required for data.kind: tokens");
  if (options.val_path.empty()) throw DataError("data.val_path is required for data.kind: tokens");
  if (options.seq_len < 1) throw DataError("data.seq_len must be >= 1 (got " + std::to_string(options.seq_len) + ")");
  TokenFile train = TokenFile::open(options.train_path, options.format, options.vocab_size);
  TokenFile val = TokenFile::open(options.val_path, options.format, options.vocab_size);
  for (const TokenFile* f : {&train, &val})
    if (f->size() < options.seq_len + 1)
      fail(f->path(), std::to_string(f->size()) + " tokens, fewer than data.seq_len + 1 = " +
                          std::to_string(options.seq_len + 1) + " (one window)");
  return TokenDataset(options, std::move(train), std::move(val));
}

void TokenDataset::sample_batch(Split split, int64_t B, Generator& rng, std::vector<int32_t>& inputs,
                                std::vector<int32_t>& labels) const {
  if (B < 0) throw DataError("token dataset: batch size must be >= 0 (B = " + std::to_string(B) + ")");
  sample_token_windows(tokens(split), num_tokens(split), options_.seq_len, B, rng, inputs, labels);
}

int64_t TokenDataset::num_eval_windows(Split split) const {
  return count_eval_windows(num_tokens(split), options_.seq_len);
}

int64_t TokenDataset::eval_batch(Split split, int64_t first, int64_t B, std::vector<int32_t>& inputs,
                                 std::vector<int32_t>& labels) const {
  if (first < 0 || B < 0)
    throw DataError("token dataset: eval_batch needs first >= 0 and B >= 0 (first = " + std::to_string(first) +
                    ", B = " + std::to_string(B) + ")");
  return fill_eval_windows(tokens(split), num_tokens(split), options_.seq_len, first, B, inputs, labels);
}

}  // namespace seqmix
