// `seqmix logits` (train/cmd_logits.h): parse the token ids, run the model of the
// checkpoint in its parallel form (or one token at a time through the recurrent
// forms), print the logits.
#include "train/cmd_logits.h"

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "core/tape.h"
#include "train/model_io.h"

namespace seqmix {

std::vector<int32_t> parse_token_ids(const std::string& text, const std::string& where) {
  std::vector<int32_t> ids;
  int64_t line = 1;
  size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      if (c == '\n') ++line;
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && text[j] != ',' && text[j] != ' ' && text[j] != '\t' && text[j] != '\r' &&
           text[j] != '\n')
      ++j;
    const std::string item = text.substr(i, j - i);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || v < 0 || v > INT32_MAX)
      throw std::invalid_argument(where + (where == "--tokens" ? "" : ":" + std::to_string(line)) + ": item " +
                                  std::to_string(ids.size()) + " '" + item +
                                  "' is not a token id (a non-negative integer)");
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  return ids;
}

void write_npy_f32(const std::string& path, const float* data, int64_t rows, int64_t cols) {
  static_assert(std::endian::native == std::endian::little, "the .npy header below says little-endian");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
  // Magic (6) + version (2) + header length (2) + header, padded with spaces and a
  // final newline to a multiple of 64 bytes as NumPy writes it.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw std::runtime_error("--npy: cannot create '" + path + "'");
  const unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(header.size() & 0xff),
                                    static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<const char*>(prefix), sizeof prefix);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(sizeof(float) * rows * cols));
  f.close();
  if (!f) throw std::runtime_error("--npy: cannot write '" + path + "'");
}

int cmd_logits(const LogitsArgs& args, std::ostream& out) {
  const int sources = !args.tokens.empty() + !args.tokens_file.empty() + !args.text.empty();
  if (sources != 1) throw std::invalid_argument("give exactly one of --tokens, --tokens-file, --text");
  LoadedModel lm = load_model(args.checkpoint);
  const ModelOptions& mo = lm.config.model;
  std::vector<int32_t> ids;
  if (!args.tokens.empty()) {
    ids = parse_token_ids(args.tokens, "--tokens");
  } else if (!args.tokens_file.empty()) {
    std::ifstream f(args.tokens_file, std::ios::binary);
    if (!f) throw std::invalid_argument("--tokens-file: cannot open '" + args.tokens_file + "'");
    std::ostringstream s;
    s << f.rdbuf();
    ids = parse_token_ids(s.str(), args.tokens_file);
  } else {
    if (!lm.tokenizer)
      throw std::invalid_argument("--text: " + lm.path + " has no tokenizer (a recall-task model); give --tokens");
    ids = lm.tokenizer->encode(args.text);  // DataError names a character outside the vocabulary
  }
  if (ids.empty()) throw std::invalid_argument("the token sequence is empty");
  const int64_t L = static_cast<int64_t>(ids.size()), V = mo.vocab_size;
  for (int64_t i = 0; i < L; ++i)
    if (ids[i] >= V)
      throw std::invalid_argument("token " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                                  " is outside the model's vocabulary [0, " + std::to_string(V) + ")");
  if (mo.max_position_embeddings > 0 && L > mo.max_position_embeddings)
    throw std::invalid_argument(std::to_string(L) + " tokens are more than the model's max_position_embeddings = " +
                                std::to_string(mo.max_position_embeddings));

  NoGradGuard no_grad;
  Tensor logits;  // (L, V) float32
  if (args.recurrent) {
    logits = Tensor::empty({L, V});
    DecodeState state = lm.model->init_state(1);
    for (int64_t t = 0; t < L; ++t) {
      Tensor row = lm.model->step(state, Tensor::from_vector({1}, std::vector<int32_t>{ids[t]}));
      std::copy_n(row.f32(), V, logits.f32() + t * V);
    }
  } else {
    Generator unused;
    logits = lm.model->logits(Tensor::from_vector({1, L}, ids), false, unused);
  }

  nlohmann::ordered_json j;
  j["checkpoint"] = lm.path;
  j["step"] = lm.step;
  j["form"] = args.recurrent ? "recurrent" : "parallel";
  j["tokens"] = ids;
  j["vocab_size"] = V;
  if (!args.npy.empty()) {
    write_npy_f32(args.npy, logits.f32(), L, V);
    j["npy"] = args.npy;
  } else {
    // float -> double is exact, and the JSON writer prints the shortest decimal that
    // reads back to the same double, hence to the same float.
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    const float* p = logits.f32();
    for (int64_t t = 0; t < L; ++t) rows.push_back(std::vector<double>(p + t * V, p + (t + 1) * V));
    j["logits"] = std::move(rows);
  }
  out << j.dump() << std::endl;
  return 0;
}

}  // namespace seqmix
