// The checkpoint reader on well-formed HDF5 files of any content.
//
// fuzz_checkpoint feeds raw bytes, which almost never get past the digest; a file
// edited with h5py and resealed (docs/checkpoints.md says how) does, and then only
// seqmix's own checks stand between its contents and the program. Here the input
// is a recipe for such a file, written through the HDF5 API: for each part of a
// checkpoint (the root attributes, /params, /optimizer, /tokenizer, /train) whether
// it is there, as what type, in what shape, with what values, plus objects seqmix
// does not know. Byte 0 of every choice is the part as seqmix writes it, so short
// inputs are valid checkpoints and mutations reach every check. The file gets a
// valid digest and is read in this process. Every input must end in a checkpoint
// that keeps the reader's promises (float32 tensors, finite values, moments that
// match /params) or in a CheckpointError naming the file.
#include <hdf5.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "train/checkpoint.h"
#include "train/checkpoint_digest.h"

using namespace seqmix;

namespace {

// Reads choices from the input; past its end every choice is 0.
class Recipe {
 public:
  Recipe(const uint8_t* data, size_t size) : p_(data), n_(size) {}
  uint8_t byte() { return i_ < n_ ? p_[i_++] : 0; }
  int choice(int n) { return byte() % n; }
  int64_t i64() {
    uint64_t v = 0;
    for (int k = 0; k < 8; ++k) v = v << 8 | byte();
    return static_cast<int64_t>(v);
  }
  float f32() {
    uint32_t bits = 0;
    for (int k = 0; k < 4; ++k) bits = bits << 8 | byte();
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  std::string text(size_t max_len) {
    std::string s(byte() % (max_len + 1), '\0');
    for (char& c : s) c = static_cast<char>(byte());
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
  size_t i_ = 0;
};

// Closes any HDF5 identifier (file, group, dataset, space, type, property list).
struct Id {
  hid_t v;
  explicit Id(hid_t id) : v(id) {}
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  ~Id() {
    if (v >= 0) H5Idec_ref(v);
  }
};

// New HDF5 objects, owned by the caller (wrap them in an Id).
hid_t new_vlen_utf8() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

hid_t new_space(const std::vector<hsize_t>& dims) {
  return dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
}

hsize_t count(const std::vector<hsize_t>& dims) {
  hsize_t n = 1;
  for (hsize_t d : dims) n *= d;
  return n;
}

// 0: one value (what seqmix writes); otherwise an array of 0 to 3 values, or a null dataspace.
std::vector<hsize_t> value_dims(Recipe& in, bool* null_space) {
  const int c = in.choice(6);
  *null_space = c == 5;
  if (c == 0 || c == 5) return {};
  return {static_cast<hsize_t>(c - 1)};
}

// A dataset or attribute holding integers, floats or strings, as the recipe says;
// `as_written` is the form seqmix writes. Failures of the HDF5 calls leave the part
// out, which is one more shape of file.
enum class Kind { i64, u64, f64, string };

void write_values(Recipe& in, hid_t parent, const std::string& name, Kind as_written, bool attribute, int64_t int_value,
                  const std::string& text_value) {
  const int form = in.choice(5);  // 0: as written; 1: int64; 2: float64; 3: vlen string; 4: fixed string
  const Kind kind = form == 0   ? as_written
                    : form == 1 ? Kind::i64
                    : form == 2 ? Kind::f64
                                : Kind::string;
  bool null_space = false;
  const std::vector<hsize_t> dims = value_dims(in, &null_space);
  Id space(null_space ? H5Screate(H5S_NULL) : new_space(dims));
  const hsize_t n = null_space ? 0 : count(dims);
  const bool fixed = form == 4;
  Id type(kind == Kind::i64   ? H5Tcopy(H5T_STD_I64LE)
          : kind == Kind::u64 ? H5Tcopy(H5T_STD_U64LE)
          : kind == Kind::f64 ? H5Tcopy(H5T_IEEE_F64LE)
          : fixed             ? H5Tcopy(H5T_C_S1)
                              : new_vlen_utf8());
  if (fixed) H5Tset_size(type.v, text_value.size() + 1);
  Id obj(attribute ? H5Acreate2(parent, name.c_str(), type.v, space.v, H5P_DEFAULT, H5P_DEFAULT)
                   : H5Dcreate2(parent, name.c_str(), type.v, space.v, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (obj.v < 0 || n == 0) return;
  std::vector<int64_t> ints(n);
  std::vector<double> floats(n);
  std::vector<std::string> texts(n);
  for (hsize_t i = 0; i < n; ++i) {
    ints[i] = form == 0 ? int_value : in.i64();
    floats[i] = form == 0 ? static_cast<double>(int_value) : static_cast<double>(in.f32());
    texts[i] = form == 0 ? text_value : in.text(16);
  }
  std::vector<const char*> ptrs(n);
  std::string fixed_bytes;
  for (hsize_t i = 0; i < n; ++i) {
    ptrs[i] = texts[i].c_str();
    std::string t = texts[i];
    t.resize(text_value.size() + 1, '\0');
    fixed_bytes += t;
  }
  const void* buf = kind == Kind::i64 || kind == Kind::u64 ? static_cast<const void*>(ints.data())
                    : kind == Kind::f64                   ? static_cast<const void*>(floats.data())
                    : fixed                               ? static_cast<const void*>(fixed_bytes.data())
                                                          : static_cast<const void*>(ptrs.data());
  if (attribute) H5Awrite(obj.v, type.v, buf);
  else H5Dwrite(obj.v, type.v, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

struct TensorSpec {
  std::string name;
  std::vector<hsize_t> dims;
};

// One tensor: float32 as seqmix writes it, or another type, byte order, layout or a
// shape that stores nothing.
void write_tensor(Recipe& in, hid_t group, const TensorSpec& spec) {
  const int type_choice = in.choice(6);  // 0: f32 LE; 1: f32 BE; 2: f64; 3: i32; 4: f16-sized float; 5: vlen string
  Id type(type_choice == 0   ? H5Tcopy(H5T_IEEE_F32LE)
          : type_choice == 1 ? H5Tcopy(H5T_IEEE_F32BE)
          : type_choice == 2 ? H5Tcopy(H5T_IEEE_F64LE)
          : type_choice == 3 ? H5Tcopy(H5T_STD_I32LE)
          : type_choice == 4 ? H5Tcopy(H5T_IEEE_F32LE)
                             : new_vlen_utf8());
  if (type_choice == 4) {  // an IEEE half: 16 bits, 5 of exponent
    H5Tset_fields(type.v, 15, 10, 5, 0, 10);
    H5Tset_precision(type.v, 16);
    H5Tset_size(type.v, 2);
    H5Tset_ebias(type.v, 15);
  }
  const int layout = in.choice(5);  // 0: one chunk + Fletcher-32; 1: contiguous; 2: deflate; 3: compact; 4: declared, never written
  std::vector<hsize_t> dims = spec.dims;
  if (layout == 4 && !dims.empty()) dims[0] = static_cast<hsize_t>(in.i64()) & ((hsize_t{1} << 40) - 1);
  Id space(new_space(dims));
  Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  const hsize_t n = count(dims);
  if (!dims.empty() && n > 0 && layout != 1 && layout != 3) {
    std::vector<hsize_t> chunk(dims);
    for (hsize_t& c : chunk) c = std::min<hsize_t>(c, 64);
    H5Pset_chunk(dcpl.v, static_cast<int>(chunk.size()), chunk.data());
    if (layout == 0) H5Pset_fletcher32(dcpl.v);
    if (layout == 2 && H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) H5Pset_deflate(dcpl.v, 1);
  }
  if (layout == 3) H5Pset_layout(dcpl.v, H5D_COMPACT);
  Id d(H5Dcreate2(group, spec.name.c_str(), type.v, space.v, H5P_DEFAULT, dcpl.v, H5P_DEFAULT));
  if (d.v < 0 || layout == 4 || n == 0 || type_choice == 5) return;
  std::vector<float> values(n);
  const int fill = in.choice(4);  // 0: small distinct values; 1: from the input (NaN, inf, ...); 2, 3: zeros
  for (hsize_t i = 0; i < n; ++i) values[i] = fill == 0 ? 0.01f * static_cast<float>(i) : fill == 1 ? in.f32() : 0.0f;
  H5Dwrite(d.v, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
}

std::vector<TensorSpec> tensor_specs(Recipe& in) {
  static const char* const names[] = {"embeddings.word_embeddings.weight", "norm_f.weight", "layers.0.mixer.Wqkv.weight"};
  std::vector<TensorSpec> specs;
  const int n = 1 + in.choice(3);
  for (int i = 0; i < n; ++i) {
    TensorSpec s;
    s.name = in.choice(4) == 3 ? in.text(12) : names[i];
    const int rank = in.choice(4) == 3 ? in.choice(4) : 1 + i % 2;  // 0: the usual rank; otherwise 0 to 3
    for (int r = 0; r < rank; ++r) s.dims.push_back(static_cast<hsize_t>(in.choice(7) == 6 ? 0 : 2 + r));
    specs.push_back(s);
  }
  return specs;
}

// A tensor group: as seqmix writes it, missing, a dataset in its place, or (for
// moments) one tensor fewer, renamed or reshaped.
void write_group(Recipe& in, hid_t parent, const char* name, std::vector<TensorSpec> specs) {
  const int form = in.choice(6);
  if (form == 1) return;
  if (form == 2) {
    Id s(H5Screate(H5S_SCALAR));
    Id d(H5Dcreate2(parent, name, H5T_STD_I64LE, s.v, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    return;
  }
  if (form == 3 && !specs.empty()) specs.pop_back();
  if (form == 4 && !specs.empty()) specs[0].name += "_renamed";
  if (form == 5 && !specs.empty()) specs[0].dims.push_back(3);
  Id g(H5Gcreate2(parent, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (g.v < 0) return;
  for (const TensorSpec& s : specs) write_tensor(in, g.v, s);
}

void write_file(Recipe& in, const std::string& path) {
  Id fcpl(H5Pcreate(H5P_FILE_CREATE));
  H5Pset_userblock(fcpl.v, kDigestBlockSize);  // room for the digest header
  Id fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (in.choice(2) == 0) H5Pset_libver_bounds(fapl.v, H5F_LIBVER_V110, H5F_LIBVER_LATEST);  // else h5py's default
  Id file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.v, fapl.v));
  if (file.v < 0) return;
  static const std::string config = "model: {vocab_size: 16, d_model: 4, n_layers: 1, mixer: {type: mamba}}\n";
  if (in.choice(8) != 1) write_values(in, file.v, "format", Kind::string, true, 0, in.choice(8) == 1 ? "seqmix2" : "seqmix");
  if (in.choice(8) != 1) write_values(in, file.v, "format_version", Kind::i64, true, in.choice(8) == 1 ? in.i64() : 1, "1");
  if (in.choice(8) != 1) write_values(in, file.v, "config", Kind::string, true, 0, in.choice(4) == 1 ? in.text(64) : config);
  const std::vector<TensorSpec> specs = tensor_specs(in);
  write_group(in, file.v, "params", specs);
  if (in.choice(8) != 1) {
    Id g(H5Gcreate2(file.v, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (g.v >= 0) {
      if (in.choice(8) != 1) write_values(in, g.v, "step", Kind::i64, false, in.choice(2) ? in.i64() : 3, "3");
      write_group(in, g.v, "m", specs);
      write_group(in, g.v, "v", specs);
    }
  }
  if (in.choice(4) == 1) {
    write_values(in, file.v, "tokenizer", Kind::string, false, 0, in.text(32));
    Id d(H5Dopen2(file.v, "tokenizer", H5P_DEFAULT));
    if (d.v >= 0 && in.choice(4) != 1) write_values(in, d.v, "kind", Kind::string, true, 0, in.choice(2) ? "char" : "byte");
  }
  if (in.choice(8) != 1) {
    Id g(H5Gcreate2(file.v, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    for (int i = 0, n = in.choice(4); g.v >= 0 && i < n; ++i) {
      const bool counter = in.choice(2) == 0;
      const std::string name = in.choice(4) == 3 ? in.text(12) : counter ? "step" : "best_valid_accuracy";
      write_values(in, g.v, name, counter ? Kind::u64 : Kind::f64, false, 7, "7");
    }
  }
  if (in.choice(4) == 1) {  // something seqmix does not know
    Id s(H5Screate(H5S_SCALAR));
    Id d(H5Dcreate2(file.v, in.text(12).c_str(), H5T_STD_I64LE, s.v, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  }
}

// The promises of read_checkpoint (train/checkpoint.h) for a file it accepts.
bool keeps_promises(const CheckpointData& c) {
  if (c.params.empty() || c.optimizer_step < 0) return false;
  for (const NamedTensors* ts : {&c.params, &c.adam_m, &c.adam_v})
    for (const auto& [name, t] : *ts) {
      if (t.dtype() != DType::f32) return false;
      for (int64_t i = 0; i < t.numel(); ++i)
        if (!std::isfinite(t.f32()[i])) return false;
    }
  for (const NamedTensors* ts : {&c.adam_m, &c.adam_v}) {
    if (ts->empty()) continue;
    if (ts->size() != c.params.size()) return false;
    for (size_t i = 0; i < ts->size(); ++i)
      if ((*ts)[i].first != c.params[i].first || (*ts)[i].second.shape() != c.params[i].second.shape()) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::err);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // refused HDF5 calls are part of the recipe
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = fuzz::scratch_path("checkpoint_content.h5");
  Recipe in(data, size);
  std::remove(path.c_str());
  write_file(in, path);
  try {
    seal_checkpoint_digest(path);
  } catch (const CheckpointError&) {
    return 0;  // HDF5 refused to create the file at all
  }
  try {
    if (!keeps_promises(read_checkpoint(path))) __builtin_trap();
  } catch (const CheckpointError& e) {
    if (std::string(e.what()).find(path) == std::string::npos) __builtin_trap();  // the message names the file
  }
  return 0;
}
