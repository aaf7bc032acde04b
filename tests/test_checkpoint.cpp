// HDF5 checkpoints: round trip, atomic write, and refusal of every kind of bad
// file with a message naming the file and the problem.
#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <vector>

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

// ---- files crafted by hand ----
// The digest guards against damage, not against intent: anyone can edit a
// checkpoint with h5py and recompute the digest (docs/checkpoints.md says how). What
// lies behind it must then be checked by seqmix itself, without trusting shapes.

// Replaces the dataset at `where` with one of `dims` elements of `type` (contents
// from `values`, or none written when null), optionally with a dataset creation
// property list, then reseals the digest.
void replace_dataset(const std::string& path, const std::string& where, hid_t type, std::vector<hsize_t> dims,
                     const void* values, hid_t dcpl = H5P_DEFAULT) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  H5Ldelete(f, where.c_str(), H5P_DEFAULT);
  hid_t s = dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t d = H5Dcreate2(f, where.c_str(), type, s, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  ASSERT_GE(d, 0) << where;
  if (values) {
    ASSERT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), 0) << where;
  }
  H5Dclose(d);
  H5Sclose(s);
  H5Fclose(f);
  seal_checkpoint_digest(path);
}

void replace_root_attr(const std::string& path, const std::string& name, hid_t type, hsize_t n, const void* values) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  H5Adelete(f, name.c_str());
  hid_t s = H5Screate_simple(1, &n, nullptr);
  hid_t a = H5Acreate2(f, name.c_str(), type, s, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(H5Awrite(a, type, values), 0);
  H5Aclose(a);
  H5Sclose(s);
  H5Fclose(f);
  seal_checkpoint_digest(path);
}

hid_t vlen_utf8() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// HDF5 writes every stored element into the one-value buffer a scalar read passes
// it: an array in place of a scalar wrote past seqmix's buffers.
TEST_F(CheckpointTest, RefusesAnArrayWhereItExpectsOneValue) {
  const int64_t steps[4] = {1, 2, 3, 4};
  const uint64_t counters[3] = {5, 6, 7};
  const double accuracies[2] = {0.5, 0.25};
  const char* vocabularies[2] = {"ab", "cd"};
  const struct {
    std::string where;
    std::function<void(const std::string&)> edit;
    std::string expected;
  } cases[] = {
      {"/optimizer/step", [&](const std::string& p) { replace_dataset(p, "/optimizer/step", H5T_NATIVE_INT64, {4}, steps); },
       "/optimizer/step must hold one value, it holds 4"},
      {"/train/step", [&](const std::string& p) { replace_dataset(p, "/train/step", H5T_NATIVE_UINT64, {3}, counters); },
       "/train/step must hold one value, it holds 3"},
      {"/train/best_valid_accuracy",
       [&](const std::string& p) { replace_dataset(p, "/train/best_valid_accuracy", H5T_NATIVE_DOUBLE, {2}, accuracies); },
       "/train/best_valid_accuracy must hold one value, it holds 2"},
      {"/tokenizer",
       [&](const std::string& p) {
         hid_t t = vlen_utf8();
         replace_dataset(p, "/tokenizer", t, {2}, vocabularies);
         H5Tclose(t);
       },
       "/tokenizer must hold one value, it holds 2"},
      {"format_version", [&](const std::string& p) { replace_root_attr(p, "format_version", H5T_NATIVE_INT64, 3, steps); },
       "attribute 'format_version' must hold one value, it holds 3"},
      {"config",
       [&](const std::string& p) {
         hid_t t = vlen_utf8();
         replace_root_attr(p, "config", t, 2, vocabularies);
         H5Tclose(t);
       },
       "attribute 'config' must hold one value, it holds 2"},
  };
  for (const auto& c : cases) {
    write_checkpoint(path, sample_data());
    c.edit(path);
    const std::string msg = error_of([&] { read_checkpoint(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << c.where << ": " << msg;
    EXPECT_NE(msg.find(c.expected), std::string::npos) << c.where << ": " << msg;
  }
}

TEST_F(CheckpointTest, RefusesAStepThatIsNegativeOrNotAnInteger) {
  write_checkpoint(path, sample_data());
  const int64_t negative = -3;
  replace_dataset(path, "/optimizer/step", H5T_NATIVE_INT64, {}, &negative);
  std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("/optimizer/step is negative (-3)"), std::string::npos) << msg;

  write_checkpoint(path, sample_data());
  const double fractional = 2.5;
  replace_dataset(path, "/optimizer/step", H5T_NATIVE_DOUBLE, {}, &fractional);
  msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("/optimizer/step is not an integer"), std::string::npos) << msg;
}

// A dataset may declare a shape and store nothing (HDF5 reads its fill value): a
// file of a few kilobytes asked for 128 GiB.
TEST_F(CheckpointTest, RefusesAShapeTheFileDoesNotStore) {
  write_checkpoint(path, sample_data());
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const hsize_t chunk[2] = {1024, 1024};
  H5Pset_chunk(dcpl, 2, chunk);
  replace_dataset(path, "/params/norm_f.weight", H5T_IEEE_F32LE, {hsize_t{1} << 20, hsize_t{1} << 15}, nullptr, dcpl);
  H5Pclose(dcpl);
  EXPECT_LT(fs::file_size(path), 1u << 20);
  const std::string msg = error_of([&] { read_checkpoint(path); });
  EXPECT_NE(msg.find("/params/norm_f.weight has shape (1048576, 32768)"), std::string::npos) << msg;
  EXPECT_NE(msg.find("the file stores only 0 bytes of it"), std::string::npos) << msg;
}

// ... while compressed tensors (h5py's compression="gzip") store fewer bytes than
// their shape and still load.
TEST_F(CheckpointTest, LoadsCompressedTensors) {
  if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) <= 0) GTEST_SKIP() << "this HDF5 has no deflate filter";
  write_checkpoint(path, sample_data());
  std::vector<float> zeros(4096, 0.0f);
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  const hsize_t chunk[2] = {64, 64};
  H5Pset_chunk(dcpl, 2, chunk);
  H5Pset_deflate(dcpl, 6);
  for (const char* where : {"/params/norm_f.weight", "/optimizer/m/norm_f.weight", "/optimizer/v/norm_f.weight"})
    replace_dataset(path, where, H5T_IEEE_F32LE, {64, 64}, zeros.data(), dcpl);
  H5Pclose(dcpl);
  const CheckpointData d = read_checkpoint(path);
  ASSERT_EQ(d.params.size(), 2u);
  EXPECT_EQ(d.params[1].first, "norm_f.weight");
  EXPECT_EQ(d.params[1].second.shape(), (Shape{64, 64}));
  EXPECT_EQ(d.params[1].second.f32()[4095], 0.0f);
}

}  // namespace
