// HDF5 checkpoints: round trip, atomic write, and refusal of every kind of bad
// file with a message naming the file and the problem.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "train/checkpoint.h"
#include "train/checkpoint_digest.h"

using namespace seqmix;
namespace fs = std::filesystem;

namespace {

Tensor filled(const Shape& s, float start) {
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); ++i) t.f32()[i] = start + 0.5f * static_cast<float>(i);
  return t;
}

CheckpointData sample_data() {
  CheckpointData d;
  d.config_yaml = "model:\n  d_model: 4\n";
  d.params = {{"embeddings.word_embeddings.weight", filled({3, 4}, 1)}, {"norm_f.weight", filled({4}, -2)}};
  d.optimizer_step = 17;
  d.adam_m = {{"embeddings.word_embeddings.weight", filled({3, 4}, 0.1f)}, {"norm_f.weight", filled({4}, 0.2f)}};
  d.adam_v = {{"embeddings.word_embeddings.weight", filled({3, 4}, 0.3f)}, {"norm_f.weight", filled({4}, 0.4f)}};
  d.tokenizer = std::make_pair(std::string("char"), std::string("\n !abcé"));
  d.train_u64 = {{"step", 17}, {"dropout_rng_counter", 123456789012345ull}};
  d.train_f64 = {{"best_valid_accuracy", 0.75}};
  return d;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("seqmix_ckpt_" + std::to_string(::getpid()) + "_" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    path = (dir / "checkpoint.h5").string();
  }
  void TearDown() override { fs::remove_all(dir); }

  // Runs f and returns the CheckpointError message ("" if none was thrown).
  template <class F>
  std::string error_of(F f) {
    try {
      f();
    } catch (const CheckpointError& e) {
      return e.what();
    }
    return "";
  }

  void set_attr(const std::string& name, int64_t value) {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t a = H5Aopen(f, name.c_str(), H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &value);
    H5Aclose(a);
    H5Fclose(f);
    seal_checkpoint_digest(path);  // the edit is deliberate: test what lies behind the digest
  }

  fs::path dir;
  std::string path;
};

TEST_F(CheckpointTest, RoundTripKeepsEverything) {
  CheckpointData d = sample_data();
  write_checkpoint(path, d);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  CheckpointData r = read_checkpoint(path);
  EXPECT_EQ(r.config_yaml, d.config_yaml);
  EXPECT_EQ(r.optimizer_step, 17);
  ASSERT_EQ(r.params.size(), 2u);
  // Stored by name (sorted): embeddings... then norm_f...
  EXPECT_EQ(r.params[0].first, "embeddings.word_embeddings.weight");
  EXPECT_EQ(r.params[0].second.shape(), (Shape{3, 4}));
  EXPECT_EQ(r.params[0].second.to_f32_vector(), d.params[0].second.to_f32_vector());
  EXPECT_EQ(r.adam_v[1].second.to_f32_vector(), d.adam_v[1].second.to_f32_vector());
  ASSERT_TRUE(r.tokenizer.has_value());
  EXPECT_EQ(r.tokenizer->first, "char");
  EXPECT_EQ(r.tokenizer->second, "\n !abcé");
  EXPECT_EQ(r.train_u64.at("dropout_rng_counter"), 123456789012345ull);
  EXPECT_DOUBLE_EQ(r.train_f64.at("best_valid_accuracy"), 0.75);
}

TEST_F(CheckpointTest, OverwriteIsAtomicAndReplacesTheOldFile) {
  write_checkpoint(path, sample_data());
  CheckpointData d2 = sample_data();
  d2.optimizer_step = 99;
  write_checkpoint(path, d2);
  EXPECT_EQ(read_checkpoint(path).optimizer_step, 99);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST_F(CheckpointTest, LoadNamedChecksNamesAndShapes) {
  write_checkpoint(path, sample_data());
  CheckpointData r = read_checkpoint(path);
  Tensor emb = Tensor::zeros({3, 4}), norm = Tensor::zeros({4});
  load_named(path, r.params, {{"embeddings.word_embeddings.weight", emb}, {"norm_f.weight", norm}}, "params");
  EXPECT_FLOAT_EQ(norm.f32()[1], -1.5f);

  Tensor wrong = Tensor::zeros({5});
  std::string msg = error_of([&] {
    load_named(path, r.params, {{"embeddings.word_embeddings.weight", emb}, {"norm_f.weight", wrong}}, "params");
  });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("norm_f.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(4)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(5)"), std::string::npos) << msg;

  Tensor extra = Tensor::zeros({2});
  msg = error_of([&] {
    load_named(path, r.params,
               {{"embeddings.word_embeddings.weight", emb}, {"norm_f.weight", norm}, {"lm_head.weight", extra}},
               "params");
  });
  EXPECT_NE(msg.find("lm_head.weight is missing"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RefusesAnotherFormat) {
  write_checkpoint(path, sample_data());
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Adelete(f, "format");
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, 7);
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, t, "pytorch");
  H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
  H5Fclose(f);
  seal_checkpoint_digest(path);
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("format is 'pytorch'"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RefusesANewerVersion) {
  write_checkpoint(path, sample_data());
  set_attr("format_version", 2);
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("format_version 2 is newer"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RefusesAMissingTensorGroupOrMoment) {
  write_checkpoint(path, sample_data());
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Ldelete(f, "/optimizer/m/norm_f.weight", H5P_DEFAULT);
  H5Fclose(f);
  seal_checkpoint_digest(path);
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("optimizer moments do not match"), std::string::npos) << msg;

  write_checkpoint(path, sample_data());
  f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  H5Ldelete(f, "/params", H5P_DEFAULT);
  H5Fclose(f);
  seal_checkpoint_digest(path);
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("/params is missing"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RefusesTruncatedFiles) {
  write_checkpoint(path, sample_data());
  const auto size = fs::file_size(path);
  for (double frac : {0.0, 0.1, 0.5, 0.9, 0.99}) {
    const std::string cut = (dir / "cut.h5").string();
    fs::copy_file(path, cut, fs::copy_options::overwrite_existing);
    fs::resize_file(cut, static_cast<uintmax_t>(size * frac));
    std::string msg = error_of([&] { read_checkpoint(cut); });
    EXPECT_NE(msg.find(cut), std::string::npos) << "cut at " << frac << ": '" << msg << "'";
  }
}

TEST_F(CheckpointTest, RefusesCorruptedTensorData) {
  CheckpointData d = sample_data();
  d.params[0].second = filled({64, 64}, 3);  // a distinctive block to find in the file
  d.adam_m[0].second = filled({64, 64}, 0);
  d.adam_v[0].second = filled({64, 64}, 0);
  write_checkpoint(path, d);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const float marker = d.params[0].second.f32()[100];
  std::string pattern(reinterpret_cast<const char*>(&marker), 4);
  const size_t pos = bytes.find(pattern);
  ASSERT_NE(pos, std::string::npos);
  bytes[pos] ^= 0x5a;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("SHA-256 digest"), std::string::npos) << msg;
  // Behind the digest, HDF5's Fletcher-32 checksum still catches it.
  seal_checkpoint_digest(path);
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("corrupted"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, RefusesFilesThatAreNotHdf5) {
  { std::ofstream(path) << "model:\n  d_model: 4\n"; }
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("not an HDF5 file"), std::string::npos) << msg;
  { std::ofstream(path, std::ios::trunc); }
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("empty"), std::string::npos) << msg;
  msg = error_of([&] { read_checkpoint((dir / "absent.h5").string()); });
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
}

TEST_F(CheckpointTest, ReadableByH5dump) {
  if (std::system("command -v h5dump >/dev/null 2>&1") != 0) GTEST_SKIP() << "h5dump is not installed";
  write_checkpoint(path, sample_data());
  const std::string out = (dir / "dump.txt").string();
  ASSERT_EQ(std::system(("h5dump -H '" + path + "' > '" + out + "' 2>&1").c_str()), 0);
  std::ifstream in(out);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find("norm_f.weight"), std::string::npos);
  EXPECT_NE(text.find("format_version"), std::string::npos);
}

}  // namespace
