// Damaged checkpoints never reach HDF5's parser unchecked: the SHA-256 digest
// written at save time refuses every changed byte (including scalars HDF5 keeps
// no checksum for), files written by other tools (h5py) still load, and a
// damaged one of those cannot crash seqmix.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <vector>

#include "train/checkpoint.h"
#include "train/checkpoint_digest.h"

using namespace seqmix;
namespace fs = std::filesystem;

namespace {

std::string sha256_hex(const std::string& s) {
  Sha256 h;
  h.update(s.data(), s.size());
  return Sha256::hex(h.finish());
}

TEST(Sha256, MatchesTheFipsTestVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  // One million 'a', fed in uneven pieces: the buffering across update() calls.
  Sha256 h;
  const std::string piece(997, 'a');
  int64_t left = 1000000;
  for (size_t k = 1; left > 0; k = k % 97 + 1) {
    const int64_t n = std::min<int64_t>(left, static_cast<int64_t>(k * 10 % piece.size() + 1));
    h.update(piece.data(), static_cast<size_t>(n));
    left -= n;
  }
  EXPECT_EQ(Sha256::hex(h.finish()), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

Tensor filled(const Shape& s, float start) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = start + 0.25f * static_cast<float>(i % 101);
  return t;
}

// Shaped like a small trained run: many named tensors (a group B-tree and heap),
// moments, a tokenizer and the /train scalars.
CheckpointData model_like() {
  CheckpointData d;
  d.config_yaml = "model:\n  d_model: 32\n  n_layers: 4\n";
  for (int layer = 0; layer < 4; ++layer)
    for (const char* n : {"mixer.Wqkv.weight", "mixer.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight",
                          "norm1.weight", "norm2.weight"}) {
      const std::string name = "layers." + std::to_string(layer) + "." + n;
      const Shape s = std::string(n).find("norm") != std::string::npos ? Shape{32} : Shape{32, 24};
      d.params.emplace_back(name, filled(s, float(layer)));
      d.adam_m.emplace_back(name, filled(s, 0.5f));
      d.adam_v.emplace_back(name, filled(s, 0.25f));
    }
  std::sort(d.params.begin(), d.params.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::sort(d.adam_m.begin(), d.adam_m.end(), [](auto& a, auto& b) { return a.first < b.first; });
  std::sort(d.adam_v.begin(), d.adam_v.end(), [](auto& a, auto& b) { return a.first < b.first; });
  d.optimizer_step = 40;
  d.tokenizer = std::make_pair(std::string("char"), std::string("\n !,.?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"));
  d.train_u64 = {{"step", 40}, {"data_batches_drawn", 40}, {"dropout_rng_seed", 7}, {"dropout_rng_counter", 1234}};
  d.train_f64 = {{"best_valid_accuracy", 0.5}, {"elapsed_s", 12.5}};
  return d;
}

class Integrity : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("seqmix_integrity_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    path = (dir / "checkpoint.h5").string();
  }
  void TearDown() override { fs::remove_all(dir); }

  static std::string slurp(const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static void dump(const std::string& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }
  // The outcome of reading a file: "" when it loads, else the CheckpointError.
  static std::string outcome(const std::string& p) {
    try {
      read_checkpoint(p);
    } catch (const CheckpointError& e) {
      return e.what();
    }
    return "";
  }
  // File offset of a contiguous dataset's bytes (H5Dget_offset is relative to the
  // HDF5 base address, which the digest's user block moves to 512).
  int64_t offset_of(const std::string& p, const std::string& dataset) {
    hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, dataset.c_str(), H5P_DEFAULT);
    const haddr_t off = H5Dget_offset(d);
    H5Dclose(d);
    H5Fclose(f);
    EXPECT_NE(off, HADDR_UNDEF) << dataset;
    return static_cast<int64_t>(off) + kDigestBlockSize;
  }
  static bool have_h5py() { return std::system("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1") == 0; }

  fs::path dir;
  std::string path;
};

TEST_F(Integrity, TheDigestIsTheSha256OfTheHdf5Bytes) {
  write_checkpoint(path, model_like());
  const std::string bytes = slurp(path);
  ASSERT_GT(bytes.size(), size_t(kDigestBlockSize));
  const std::string digest = sha256_hex(bytes.substr(kDigestBlockSize));
  EXPECT_EQ(bytes.substr(0, 27), "seqmix-checkpoint-digest 1\n");
  EXPECT_NE(bytes.substr(0, kDigestBlockSize).find("sha256 " + digest + "\nsize " + std::to_string(bytes.size()) + "\n"),
            std::string::npos);
  EXPECT_EQ(verify_checkpoint_digest(path), DigestStatus::verified);
}

// The audit's crash: a zeroed block in a checkpoint crashed HDF5 (SIGSEGV). Every
// block zeroed in turn, and 300 random byte changes, must each be refused with
// the path; none may load, none may crash.
TEST_F(Integrity, EveryDamagedCopyIsRefusedWithoutReachingHdf5) {
  write_checkpoint(path, model_like());
  const std::string good = slurp(path);
  const std::string bad = (dir / "bad.h5").string();
  int refused = 0, tried = 0;
  for (size_t at = 0; at < good.size(); at += 512) {
    std::string b = good;
    bool changed = false;
    for (size_t i = at; i < std::min(good.size(), at + 512); ++i) changed |= b[i] != 0, b[i] = 0;
    if (!changed) continue;  // a block of zeros already: zeroing it changes nothing
    dump(bad, b);
    const std::string msg = outcome(bad);
    ++tried;
    refused += !msg.empty();
    EXPECT_NE(msg.find(bad), std::string::npos) << "block at " << at << ": '" << msg << "'";
  }
  std::mt19937_64 rng(11);
  for (int k = 0; k < 300; ++k) {
    std::string b = good;
    const size_t at = rng() % good.size();
    b[at] = static_cast<char>(b[at] ^ (1 + rng() % 255));
    dump(bad, b);
    const std::string msg = outcome(bad);
    ++tried;
    refused += !msg.empty();
    EXPECT_NE(msg.find(bad), std::string::npos) << "byte " << at << ": '" << msg << "'";
  }
  EXPECT_EQ(refused, tried);
}

// Scalars have no HDF5 checksum: a flipped bit in /optimizer/step, a /train value
// or the tokenizer's heap id used to load silently.
TEST_F(Integrity, BitFlipsInScalarsAreRefused) {
  write_checkpoint(path, model_like());
  const std::string good = slurp(path);
  for (const char* ds : {"/optimizer/step", "/train/data_batches_drawn", "/train/step", "/train/best_valid_accuracy",
                         "/train/dropout_rng_counter", "/tokenizer"}) {
    const int64_t off = offset_of(path, ds);
    for (int bit : {0, 3, 7}) {
      std::string b = good;
      b[static_cast<size_t>(off)] = static_cast<char>(b[static_cast<size_t>(off)] ^ (1 << bit));
      const std::string bad = (dir / "flip.h5").string();
      dump(bad, b);
      const std::string msg = outcome(bad);
      EXPECT_NE(msg.find("SHA-256 digest"), std::string::npos) << ds << " bit " << bit << ": '" << msg << "'";
    }
  }
}

TEST_F(Integrity, TruncatedOrExtendedFilesNameTheSizes) {
  write_checkpoint(path, model_like());
  const auto size = fs::file_size(path);
  fs::resize_file(path, size - 100);
  std::string msg = outcome(path);
  EXPECT_NE(msg.find("truncated or extended"), std::string::npos) << msg;
  write_checkpoint(path, model_like());
  { std::ofstream(path, std::ios::app | std::ios::binary) << "trailing"; }
  msg = outcome(path);
  EXPECT_NE(msg.find("truncated or extended"), std::string::npos) << msg;
}

// h5py reads what seqmix writes (HDF5 skips the digest's user block), and a file
// h5py writes (no digest) loads with a warning.
TEST_F(Integrity, H5pyReadsCheckpointsAndItsCopiesLoad) {
  if (!have_h5py()) GTEST_SKIP() << "python3-h5py is not installed";
  const CheckpointData d = model_like();
  write_checkpoint(path, d);
  const std::string copy = (dir / "copy.h5").string();
  const std::string script = (dir / "seqmix_h5py_copy.py").string();
  std::ofstream(script) << "import sys, h5py\n"
                           "src = h5py.File(sys.argv[1], 'r')\n"
                           "assert src['optimizer/step'][()] == 40\n"
                           "assert abs(float(src['params/layers.1.norm1.weight'][3]) - 1.75) < 1e-6\n"
                           "with h5py.File(sys.argv[2], 'w') as dst:\n"
                           "    for k, v in src.attrs.items(): dst.attrs[k] = v\n"
                           "    for k in src: src.copy(src[k], dst, name=k)\n";
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script + " " + path + " " + copy).c_str()), 0);
  EXPECT_EQ(verify_checkpoint_digest(copy), DigestStatus::absent);
  CheckpointData r = read_checkpoint(copy);
  EXPECT_EQ(r.optimizer_step, 40);
  ASSERT_EQ(r.params.size(), d.params.size());
  EXPECT_EQ(r.params[5].second.to_f32_vector(), d.params[5].second.to_f32_vector());
  EXPECT_EQ(r.train_u64.at("data_batches_drawn"), 40u);
  ASSERT_TRUE(r.tokenizer.has_value());
  EXPECT_EQ(r.tokenizer->second, d.tokenizer->second);

  // Damaged copies without a digest are parsed in a child process first: whatever
  // HDF5 does with them, this process survives and gets an answer.
  const std::string good = slurp(copy);
  const std::string bad = (dir / "bad.h5").string();
  for (size_t at = 0; at < good.size(); at += 1024) {
    std::string b = good;
    std::fill(b.begin() + at, b.begin() + std::min(good.size(), at + 1024), '\0');
    dump(bad, b);
    const std::string msg = outcome(bad);
    if (!msg.empty()) {
      EXPECT_NE(msg.find(bad), std::string::npos) << msg;
    }
  }
}

TEST_F(Integrity, AFailedWriteNamesTheOsErrorRemovesTheTemporaryAndKeepsTheOldFile) {
  write_checkpoint(path, model_like());
  const std::string before = slurp(path);
  // /dev/full: every write fails with ENOSPC, as on a full disk.
  fs::create_symlink("/dev/full", path + ".tmp");
  CheckpointData d = model_like();
  d.optimizer_step = 41;
  std::string msg;
  try {
    write_checkpoint(path, d);
  } catch (const CheckpointError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("No space left on device"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(fs::symlink_status(path + ".tmp"))) << "the partial file was left behind";
  EXPECT_EQ(slurp(path), before);
  EXPECT_EQ(read_checkpoint(path).optimizer_step, 40);
}

// Found by fuzz_checkpoint: an h5py-written (undigested) file on which HDF5 loops
// forever. The child process that parses it first is stopped after its time limit.
TEST_F(Integrity, AnUndigestedFileOnWhichHdf5HangsIsRefused) {
  const std::string p = std::string(SEQMIX_SOURCE_DIR) + "/tests/data/fuzz_checkpoint_hang.h5";
  ASSERT_TRUE(fs::exists(p));
  set_undigested_parse_base_seconds(2.0);  // the default 30 s is for real files, not a test
  const auto start = std::chrono::steady_clock::now();
  const std::string msg = outcome(p);
  set_undigested_parse_base_seconds(30.0);
  EXPECT_NE(msg.find("did not finish reading it within 2 s"), std::string::npos) << msg;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
}

// A diverged run's NaN weights used to be written and then accepted by info and eval.
TEST_F(Integrity, NonFiniteCheckpointsAreNeitherWrittenNorRead) {
  CheckpointData d = model_like();
  d.adam_v[3].second.f32()[5] = std::numeric_limits<float>::infinity();
  try {
    write_checkpoint(path, d);
    ADD_FAILURE() << "a checkpoint with an infinite moment was written";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("/optimizer/v/" + d.adam_v[3].first + "[5]"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(path));
  // A file written by another tool (or an older seqmix) with NaN parameters is refused.
  write_checkpoint(path, model_like());
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  hid_t ds = H5Dopen2(f, "/params/layers.0.norm1.weight", H5P_DEFAULT);
  std::vector<float> v(32, std::numeric_limits<float>::quiet_NaN());
  H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
  H5Dclose(ds);
  H5Fclose(f);
  seal_checkpoint_digest(path);
  const std::string msg = outcome(path);
  EXPECT_NE(msg.find("non-finite values"), std::string::npos) << msg;
  EXPECT_NE(msg.find("/params/layers.0.norm1.weight[0]"), std::string::npos) << msg;
}

}  // namespace
