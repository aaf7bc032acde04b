#include "data/text.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <fstream>
#include <sstream>

#include "data/errors.h"
#include "data/recall_tasks.h"  // kIgnoreLabel
#include "data/token_windows.h"

namespace seqmix {

namespace {

// Decodes the code point at s[i] and advances i; returns false (i unchanged)
// for an invalid sequence. Strict: the lead byte fixes the length, every
// continuation byte is 10xxxxxx, and the value must need that length (no
// overlong forms), not be a UTF-16 surrogate, and not exceed U+10FFFF.
bool decode_utf8(std::string_view s, size_t& i, char32_t& cp) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) {
    cp = b0;
    ++i;
    return true;
  }
  int len;
  char32_t min;
  if ((b0 & 0xE0) == 0xC0) {
    len = 2, min = 0x80, cp = b0 & 0x1F;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3, min = 0x800, cp = b0 & 0x0F;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4, min = 0x10000, cp = b0 & 0x07;
  } else {
    return false;  // a continuation byte or 0xF8..0xFF as a lead byte
  }
  if (i + len > s.size()) return false;  // truncated at the end of the text
  for (int k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  i += len;
  return true;
}

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02X", b);
  return buf;
}

// "'a' (U+0061)" for a printable character, "U+000A" otherwise.
std::string describe_code_point(char32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "U+%04X", static_cast<unsigned>(cp));
  if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0)) return buf;
  std::string s = "'";
  append_utf8(s, cp);
  return s + "' (" + buf + ")";
}

std::string invalid_utf8_message(std::string_view text, size_t off) {
  return "not valid UTF-8: invalid byte " + hex_byte(static_cast<unsigned char>(text[off])) +
         " at byte offset " + std::to_string(off);
}

void check_kind(const std::string& kind, const char* where) {
  if (kind != "char" && kind != "byte")
    throw DataError(std::string(where) + ": unknown tokenizer '" + kind +
                    "'; valid tokenizers are char, byte");
}

constexpr char32_t kDenseLimit = 0x10000;  // code points below this are looked up in a table

}  // namespace

size_t utf8_invalid_offset(std::string_view text) {
  size_t i = 0;
  char32_t cp;
  while (i < text.size()) {
    // ASCII fast path: most corpora are mostly ASCII.
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    if (!decode_utf8(text, i, cp)) return i;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// ---------------------------------------------------------------- Tokenizer

Tokenizer Tokenizer::build(const std::string& kind, std::string_view corpus) {
  check_kind(kind, "tokenizer");
  Tokenizer t;
  t.kind_ = kind;
  if (kind == "byte") return t;
  // Distinct code points: a bitmap keeps this linear in the corpus size. It
  // grows to the largest code point seen, 64 code points a word, and is read a
  // set bit at a time: a whole-Unicode table (1.1M entries) cost more than
  // tokenizing a short text.
  std::vector<uint64_t> seen(2, 0);  // ASCII
  size_t i = 0;
  char32_t cp;
  while (i < corpus.size()) {
    if (!decode_utf8(corpus, i, cp))
      throw DataError("tokenizer (char): the text is " + invalid_utf8_message(corpus, i));
    const size_t word = cp / 64;
    if (word >= seen.size()) seen.resize(std::max(word + 1, 2 * seen.size()), 0);
    seen[word] |= uint64_t{1} << (cp % 64);
  }
  std::string vocab;
  for (size_t w = 0; w < seen.size(); ++w)
    for (uint64_t bits = seen[w]; bits != 0; bits &= bits - 1)
      append_utf8(vocab, static_cast<char32_t>(64 * w + std::countr_zero(bits)));
  if (vocab.empty()) throw DataError("tokenizer (char): the text is empty, so is the vocabulary");
  return from_vocabulary(kind, vocab);
}

Tokenizer Tokenizer::from_vocabulary(const std::string& kind, std::string_view vocabulary_utf8) {
  check_kind(kind, "tokenizer");
  Tokenizer t;
  t.kind_ = kind;
  if (kind == "byte") {
    if (!vocabulary_utf8.empty())
      throw DataError("tokenizer (byte): the vocabulary must be empty (the 256 bytes are "
                      "implicit), got " +
                      std::to_string(vocabulary_utf8.size()) + " bytes");
    return t;
  }
  size_t i = 0;
  char32_t cp;
  while (i < vocabulary_utf8.size()) {
    if (!decode_utf8(vocabulary_utf8, i, cp))
      throw DataError("tokenizer (char): the vocabulary is " +
                      invalid_utf8_message(vocabulary_utf8, i));
    if (!t.code_points_.empty() && cp <= t.code_points_.back())
      throw DataError("tokenizer (char): the vocabulary must list distinct characters in "
                      "increasing code point order; " +
                      describe_code_point(cp) + " at character " +
                      std::to_string(t.code_points_.size()) + " follows " +
                      describe_code_point(t.code_points_.back()));
    t.code_points_.push_back(cp);
  }
  if (t.code_points_.empty()) throw DataError("tokenizer (char): the vocabulary is empty");
  const char32_t dense = std::min<char32_t>(t.code_points_.back() + 1, kDenseLimit);
  t.dense_.assign(dense, -1);
  for (size_t id = 0; id < t.code_points_.size(); ++id)
    if (t.code_points_[id] < dense) t.dense_[t.code_points_[id]] = static_cast<int32_t>(id);
  return t;
}

int64_t Tokenizer::vocab_size() const {
  return kind_ == "byte" ? 256 : static_cast<int64_t>(code_points_.size());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  if (kind_ == "byte") {
    ids.resize(text.size());
    for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
    return ids;
  }
  ids.reserve(text.size());
  size_t i = 0;
  char32_t cp;
  while (i < text.size()) {
    const size_t at = i;
    if (!decode_utf8(text, i, cp))
      throw DataError("tokenizer (char): the text is " + invalid_utf8_message(text, at));
    int32_t id = -1;
    if (cp < dense_.size()) {
      id = dense_[cp];
    } else if (cp >= kDenseLimit) {
      auto it = std::lower_bound(code_points_.begin(), code_points_.end(), cp);
      if (it != code_points_.end() && *it == cp) id = static_cast<int32_t>(it - code_points_.begin());
    }
    if (id < 0)
      throw DataError("tokenizer (char): character " + describe_code_point(cp) +
                      " at character position " + std::to_string(ids.size()) + " (byte offset " +
                      std::to_string(at) + ") is not in the vocabulary of " +
                      std::to_string(code_points_.size()) + " characters");
    ids.push_back(id);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  const int64_t V = vocab_size();
  out.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= V)
      throw DataError("tokenizer (" + kind_ + "): id " + std::to_string(ids[i]) + " at position " +
                      std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) +
                      ")");
    if (kind_ == "byte")
      out += static_cast<char>(static_cast<unsigned char>(ids[i]));
    else
      append_utf8(out, code_points_[ids[i]]);
  }
  return out;
}

std::string Tokenizer::vocabulary_utf8() const {
  std::string out;
  for (char32_t cp : code_points_) append_utf8(out, cp);
  return out;
}

// ---------------------------------------------------------------- TextCorpus

TextCorpus TextCorpus::load(const TextOptions& options, const Tokenizer* tokenizer, bool all_validation) {
  namespace fs = std::filesystem;
  const std::string where = "text corpus '" + options.path + "'";
  if (options.path.empty()) throw DataError("text corpus: no path given (text option path)");
  std::error_code ec;
  const fs::file_status st = fs::status(options.path, ec);
  if (!fs::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
      throw DataError(where + ": cannot be accessed (" + ec.message() + ")");
    throw DataError(where + ": file not found");
  }
  if (fs::is_directory(st)) throw DataError(where + ": is a directory, not a file");
  std::ifstream in(options.path, std::ios::binary);
  if (!in) throw DataError(where + ": cannot be opened for reading (" + std::strerror(errno) + ")");
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad()) throw DataError(where + ": read error (" + std::strerror(errno) + ")");
  return from_text(buf.str(), options, options.path, tokenizer, all_validation);
}

TextCorpus TextCorpus::from_text(std::string_view text, const TextOptions& options,
                                 const std::string& name, const Tokenizer* tokenizer,
                                 bool all_validation) {
  const std::string where = "text corpus '" + name + "'";
  check_kind(options.tokenizer, (where + ": text option tokenizer").c_str());
  if (options.seq_len < 1)
    throw DataError(where + ": text option seq_len must be >= 1 (seq_len = " +
                    std::to_string(options.seq_len) + ")");
  if (!(options.train_fraction > 0.0 && options.train_fraction < 1.0))
    throw DataError(where + ": text option train_fraction must be in (0, 1) (train_fraction = " +
                    std::to_string(options.train_fraction) + ")");
  if (text.empty()) throw DataError(where + ": the file is empty");
  if (const size_t bad = utf8_invalid_offset(text); bad != std::string_view::npos)
    throw DataError(where + ": " + invalid_utf8_message(text, bad));
  if (tokenizer && tokenizer->kind() != options.tokenizer)
    throw DataError(where + ": the given tokenizer is '" + tokenizer->kind() +
                    "' but text option tokenizer is '" + options.tokenizer + "'");

  TextCorpus c(tokenizer ? *tokenizer : Tokenizer::build(options.tokenizer, text), options);
  try {
    c.tokens_ = c.tokenizer_.encode(text);
  } catch (const DataError& e) {
    throw DataError(where + ": " + e.what());
  }
  const int64_t n = static_cast<int64_t>(c.tokens_.size());
  // nanoGPT: n_train = int(n * 0.9), the same double arithmetic.
  c.n_train_ = all_validation ? 0 : static_cast<int64_t>(static_cast<double>(n) * options.train_fraction);
  // seq_len + 1 cannot overflow: seq_len is checked against the token count first.
  if (options.seq_len >= n)
    throw DataError(where + ": the text has " + std::to_string(n) + " tokens, fewer than seq_len + 1 = " +
                    (options.seq_len == INT64_MAX ? std::string("2^63") : std::to_string(options.seq_len + 1)));
  const int64_t need = options.seq_len + 1;
  for (Split s : {Split::train, Split::test}) {
    if (all_validation && s == Split::train) continue;
    if (c.num_tokens(s) < need)
      throw DataError(where + ": the " + (s == Split::train ? "train" : "validation") +
                      " split has " + std::to_string(c.num_tokens(s)) +
                      " tokens, fewer than seq_len + 1 = " + std::to_string(need) + " (" +
                      std::to_string(n) + " tokens, train_fraction = " +
                      std::to_string(options.train_fraction) + ")");
  }
  return c;
}

int64_t TextCorpus::num_tokens(Split split) const {
  return split == Split::train ? n_train_ : static_cast<int64_t>(tokens_.size()) - n_train_;
}

const int32_t* TextCorpus::tokens(Split split) const {
  return tokens_.data() + (split == Split::train ? 0 : n_train_);
}

void TextCorpus::sample_batch(Split split, int64_t B, Generator& rng, std::vector<int32_t>& inputs,
                              std::vector<int32_t>& labels) const {
  if (B < 0) throw DataError("text corpus: batch size must be >= 0 (B = " + std::to_string(B) + ")");
  sample_token_windows(tokens(split), num_tokens(split), options_.seq_len, B, rng, inputs, labels);
}

int64_t TextCorpus::num_eval_windows(Split split) const {
  return count_eval_windows(num_tokens(split), options_.seq_len);
}

int64_t TextCorpus::eval_batch(Split split, int64_t first, int64_t B, std::vector<int32_t>& inputs,
                               std::vector<int32_t>& labels) const {
  if (first < 0 || B < 0)
    throw DataError("text corpus: eval_batch needs first >= 0 and B >= 0 (first = " +
                    std::to_string(first) + ", B = " + std::to_string(B) + ")");
  return fill_eval_windows(tokens(split), num_tokens(split), options_.seq_len, first, B, inputs, labels);
}

}  // namespace seqmix
