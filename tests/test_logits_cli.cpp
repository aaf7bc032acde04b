// `seqmix logits` as a user (or the PyTorch bridge) runs it: the logits it prints are
// the model's, float for float; the recurrent form agrees with the parallel one; the
// .npy file holds the same numbers; bad token input is refused with its position.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/tape.h"
#include "tests/support/command_testing.h"
#include "tests/support/file_testing.h"
#include "train/cmd_logits.h"
#include "train/model_io.h"

namespace fs = std::filesystem;
using namespace seqmix;

namespace {

struct Result {
  int code;
  std::string out, err;
};

Result run(const std::string& args, const fs::path& dir) {
  const std::string err_file = (dir / "stderr.txt").string();
  const std::string cmd = std::string(SEQMIX_BINARY) + " " + args + " 2>" + err_file;
  const seqmix::testing::CommandResult r = seqmix::testing::run_command(cmd);
  std::ifstream e(err_file);
  std::string err((std::istreambuf_iterator<char>(e)), std::istreambuf_iterator<char>());
  return {r.code, r.out, err};
}

fs::path temp_dir(const std::string& name) { return seqmix::testing::scratch_dir("logits", name); }

// A tiny GLA model with positions, trained a few steps, so that the chunked parallel
// form (64-token chunks) and the recurrent form are both exercised.
const char* kConfig = R"(
model:
  vocab_size: 48
  d_model: 16
  n_layers: 2
  max_position_embeddings: 100
  mixer: {type: gla, num_heads: 2, gate_low_rank_dim: 4}
data: {kind: recall, task: mqar, vocab_size: 48, seq_len: 16, num_kv_pairs: 2, num_train_examples: 64, num_test_examples: 16, seed: 3}
optimizer: {lr: 0.01}
training: {steps: 5, batch_size: 8, eval_interval: 5, eval_batches: 1, seed: 1}
logging: {log_interval: 5, level: warn}
)";

class LogitsCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(temp_dir("run"));
    std::ofstream(*dir_ / "c.yaml") << kConfig;
    Result r = run("train " + (*dir_ / "c.yaml").string() + " --out " + (*dir_ / "r").string(), *dir_);
    ASSERT_EQ(r.code, 0) << r.err;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string ckpt() { return (*dir_ / "r" / "checkpoint.h5").string(); }
  static std::string ids(int64_t n) {
    std::string s;
    for (int64_t i = 0; i < n; ++i) {
      if (i) s += ',';
      s += std::to_string((i * 7 + 3) % 48);
    }
    return s;
  }
  static std::vector<std::vector<float>> logits_of(const std::string& json_text) {
    auto j = nlohmann::json::parse(json_text);
    std::vector<std::vector<float>> rows;
    for (const auto& row : j["logits"]) {
      rows.emplace_back();
      for (const auto& v : row) rows.back().push_back(static_cast<float>(v.get<double>()));
    }
    return rows;
  }
  static fs::path* dir_;
};
fs::path* LogitsCli::dir_ = nullptr;

TEST_F(LogitsCli, PrintsTheModelsLogitsFloatForFloat) {
  Result r = run("logits " + ckpt() + " --tokens " + ids(70), *dir_);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto rows = logits_of(r.out);
  ASSERT_EQ(rows.size(), 70u);
  ASSERT_EQ(rows[0].size(), 48u);
  // The same model in this process: JSON printing loses nothing.
  LoadedModel lm = load_model(ckpt());
  std::vector<int32_t> tok;
  for (int64_t i = 0; i < 70; ++i) tok.push_back(static_cast<int32_t>((i * 7 + 3) % 48));
  NoGradGuard no_grad;
  Generator unused;
  Tensor want = lm.model->logits(Tensor::from_vector({1, 70}, tok), false, unused);
  for (int64_t t = 0; t < 70; ++t)
    for (int64_t v = 0; v < 48; ++v) ASSERT_EQ(rows[t][v], want.f32()[t * 48 + v]) << "position " << t << " token " << v;
}

TEST_F(LogitsCli, RecurrentFormAgreesAndNpyHoldsTheSameNumbers) {
  Result par = run("logits " + ckpt() + " --tokens " + ids(70), *dir_);
  Result rec = run("logits " + ckpt() + " --recurrent --tokens " + ids(70), *dir_);
  ASSERT_EQ(par.code, 0) << par.err;
  ASSERT_EQ(rec.code, 0) << rec.err;
  EXPECT_EQ(nlohmann::json::parse(rec.out)["form"], "recurrent");
  const auto a = logits_of(par.out), b = logits_of(rec.out);
  float scale = 0, err = 0;
  for (size_t t = 0; t < a.size(); ++t)
    for (size_t v = 0; v < a[t].size(); ++v) {
      scale = std::max(scale, std::abs(a[t][v]));
      err = std::max(err, std::abs(a[t][v] - b[t][v]));
    }
  EXPECT_LE(err, 1e-5f * scale);

  const fs::path npy = *dir_ / "l.npy";
  Result n = run("logits " + ckpt() + " --tokens-file " + (*dir_ / "ids.txt").string() + " --npy " + npy.string(),
                 *dir_);
  EXPECT_NE(n.code, 0);  // no such file yet: refused
  std::string file_ids = ids(35);
  file_ids[file_ids.find(',')] = '\n';  // a second line
  std::ofstream(*dir_ / "ids.txt") << file_ids;
  n = run("logits " + ckpt() + " --tokens-file " + (*dir_ / "ids.txt").string() + " --npy " + npy.string(), *dir_);
  ASSERT_EQ(n.code, 0) << n.err;
  EXPECT_EQ(nlohmann::json::parse(n.out).count("logits"), 0u);
  std::ifstream f(npy, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t hlen = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + hlen) % 64, 0u);
  EXPECT_NE(bytes.find("'shape': (35, 48)"), std::string::npos);
  ASSERT_EQ(bytes.size(), 10 + hlen + 4 * 35 * 48);
  const float* data = reinterpret_cast<const float*>(bytes.data() + 10 + hlen);
  for (size_t t = 0; t < 35; ++t)
    for (size_t v = 0; v < 48; ++v) ASSERT_EQ(data[t * 48 + v], a[t][v]);  // same prefix, causal model
}

TEST_F(LogitsCli, BadInputIsRefusedWithItsPosition) {
  Result r = run("logits " + ckpt() + " --tokens 1,2,48", *dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("token 48 at position 2 is outside the model's vocabulary [0, 48)"), std::string::npos) << r.err;
  r = run("logits " + ckpt() + " --tokens " + ids(101), *dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("101 tokens are more than the model's max_position_embeddings = 100"), std::string::npos)
      << r.err;
  r = run("logits " + ckpt() + " --text abc", *dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("has no tokenizer"), std::string::npos) << r.err;
  r = run("logits " + ckpt() + " --tokens 1 --text abc", *dir_);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("exactly one of"), std::string::npos) << r.err;
}

TEST(ParseTokenIds, CommasWhitespaceAndErrorsWithLineAndItem) {
  EXPECT_EQ(parse_token_ids("1, 2 3\n4,,5\t6", "--tokens"), (std::vector<int32_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(parse_token_ids(" \n ,", "--tokens").empty());
  try {
    parse_token_ids("1,x", "--tokens");
    FAIL() << "accepted 'x'";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "--tokens: item 1 'x' is not a token id (a non-negative integer)");
  }
  try {
    parse_token_ids("1 2\n3 -4", "ids.txt");
    FAIL() << "accepted -4";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "ids.txt:2: item 3 '-4' is not a token id (a non-negative integer)");
  }
  EXPECT_THROW(parse_token_ids("99999999999", "--tokens"), std::invalid_argument);
}

}  // namespace
