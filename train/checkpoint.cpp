// HDF5 checkpoint reading and writing through the HDF5 C API.
//
// Integrity: every file seqmix writes carries a SHA-256 digest of its HDF5 bytes
// in an HDF5 user block (train/checkpoint_digest.h), checked before HDF5 parses
// anything, because HDF5's parser can crash on damaged metadata. A file without
// the digest (written by h5py, say) is first parsed in a child process, so that
// a crash there becomes a refusal. Inside, metadata carries HDF5's own checksums
// (newest format bounds) and tensors the Fletcher-32 filter. Any HDF5 tool (h5py,
// h5dump) reads the files: HDF5 skips the user block.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <hdf5.h>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <vector>

#include "train/checkpoint_digest.h"
#include "train/memory_estimate.h"

// Set by libFuzzer in fuzz builds; absent (null) otherwise.
extern "C" void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

namespace seqmix {

namespace {

// Owns one HDF5 handle and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  ~Handle() {
    if (id_ >= 0 && close_) close_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  hid_t release() {
    hid_t i = id_;
    id_ = -1;
    return i;
  }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

void quiet_hdf5() {
  static bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // errors become CheckpointError, not stderr noise
    return true;
  }();
  (void)done;
}

// The OS error behind a failed HDF5 call (HDF5 leaves errno from the failed
// system call): "No space left on device" says more than "cannot write".
std::string os_reason() {
  return errno != 0 ? std::string(" (") + std::strerror(errno) + ")" : std::string();
}

struct Writer {
  std::string path;  // the final path, for messages
  void check(herr_t status, const std::string& what) const {
    if (status < 0) throw CheckpointError(path + ": cannot write " + what + os_reason());
  }
  Handle check(hid_t id, herr_t (*close)(hid_t), const std::string& what) const {
    if (id < 0) throw CheckpointError(path + ": cannot write " + what + os_reason());
    return Handle(id, close);
  }
};

Handle make_group(const Writer& w, hid_t parent, const std::string& name) {
  return w.check(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, "group " + name);
}

Handle utf8_string_type() {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return Handle(t, H5Tclose);
}

void write_string_attr(const Writer& w, hid_t obj, const std::string& name, const std::string& value) {
  Handle type = utf8_string_type();
  Handle space = w.check(H5Screate(H5S_SCALAR), H5Sclose, "attribute " + name);
  Handle attr = w.check(H5Acreate2(obj, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                        "attribute " + name);
  const char* p = value.c_str();
  w.check(H5Awrite(attr.get(), type.get(), &p), "attribute " + name);
}

void write_int_attr(const Writer& w, hid_t obj, const std::string& name, int64_t value) {
  Handle space = w.check(H5Screate(H5S_SCALAR), H5Sclose, "attribute " + name);
  Handle attr = w.check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
                        "attribute " + name);
  w.check(H5Awrite(attr.get(), H5T_NATIVE_INT64, &value), "attribute " + name);
}

template <class T>
void write_scalar(const Writer& w, hid_t group, const std::string& name, hid_t file_type, hid_t mem_type, T value) {
  Handle space = w.check(H5Screate(H5S_SCALAR), H5Sclose, name);
  Handle d = w.check(H5Dcreate2(group, name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                     H5Dclose, name);
  w.check(H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, &value), name);
}

void write_tensor(const Writer& w, hid_t group, const std::string& name, const Tensor& t) {
  if (t.dtype() != DType::f32) throw CheckpointError(w.path + ": tensor " + name + " is not float32");
  std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
  Handle space = w.check(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple((int)dims.size(), dims.data(), nullptr),
                         H5Sclose, name);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!dims.empty() && t.numel() > 0) {
    // One chunk per tensor: the checksum filter needs a chunked layout.
    w.check(H5Pset_chunk(dcpl.get(), (int)dims.size(), dims.data()), name);
    w.check(H5Pset_fletcher32(dcpl.get()), name);
  }
  Handle d = w.check(H5Dcreate2(group, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                     H5Dclose, "dataset " + name);
  if (t.numel() > 0) w.check(H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.f32()), name);
}

void fsync_path(const std::string& p, bool directory) {
  int fd = ::open(p.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// The first non-finite value of a group of tensors, as "/group/name[index]", or "".
std::string first_non_finite(const NamedTensors& ts, const std::string& group) {
  for (const auto& [name, t] : ts) {
    const float* p = t.f32();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
      if (!std::isfinite(p[i])) return group + "/" + name + "[" + std::to_string(i) + "] = " + std::to_string(p[i]);
  }
  return "";
}

// ---- reading ----

struct Reader {
  std::string path;
  [[noreturn]] void fail(const std::string& problem) const { throw CheckpointError(path + ": " + problem); }
};

std::vector<std::string> member_names(const Reader& r, hid_t group, const std::string& gname) {
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0) r.fail("cannot list group " + gname + " (the file is damaged)");
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) r.fail("cannot list group " + gname + " (the file is damaged)");
    std::string name(static_cast<size_t>(len), '\0');
    H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size() + 1, H5P_DEFAULT);
    names.push_back(name);
  }
  return names;
}

Handle open_group(const Reader& r, hid_t parent, const std::string& name, bool required = true) {
  if (H5Lexists(parent, name.c_str(), H5P_DEFAULT) <= 0) {
    if (required) r.fail("group /" + name + " is missing");
    return Handle();
  }
  hid_t g = H5Gopen2(parent, name.c_str(), H5P_DEFAULT);
  if (g < 0) r.fail("/" + name + " is not a group");
  return Handle(g, H5Gclose);
}

// A read of one value hands HDF5 a buffer for one value, and HDF5 writes every
// element the file declares into it: a file holding an array where seqmix expects a
// scalar (made with h5py, say) would write past the buffer. So the count is checked
// first.
void require_one_value(const Reader& r, hid_t space, const std::string& what) {
  const hssize_t n = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
  if (n < 0) r.fail(what + " has an unreadable shape (the file is damaged)");
  if (n != 1) r.fail(what + " must hold one value, it holds " + std::to_string(n));
}

Handle open_attr(const Reader& r, hid_t obj, const std::string& name) {
  if (H5Aexists(obj, name.c_str()) <= 0) r.fail("attribute '" + name + "' is missing");
  Handle attr(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.ok()) r.fail("attribute '" + name + "' is unreadable (the file is damaged)");
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  require_one_value(r, space.get(), "attribute '" + name + "'");
  return attr;
}

std::string read_string_attr(const Reader& r, hid_t obj, const std::string& name) {
  Handle attr = open_attr(r, obj, name);
  Handle ftype(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(ftype.get()) != H5T_STRING) r.fail("attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    Handle mtype = utf8_string_type();
    char* p = nullptr;
    if (H5Aread(attr.get(), mtype.get(), &p) < 0 || !p) r.fail("cannot read attribute '" + name + "'");
    std::string s(p);
    H5free_memory(p);
    return s;
  }
  size_t n = H5Tget_size(ftype.get());
  std::string s(n, '\0');
  if (H5Aread(attr.get(), ftype.get(), s.data()) < 0) r.fail("cannot read attribute '" + name + "'");
  s.resize(s.find('\0') == std::string::npos ? n : s.find('\0'));
  return s;
}

int64_t read_int_attr(const Reader& r, hid_t obj, const std::string& name) {
  Handle attr = open_attr(r, obj, name);
  Handle ftype(H5Aget_type(attr.get()), H5Tclose);
  if (H5Tget_class(ftype.get()) != H5T_INTEGER) r.fail("attribute '" + name + "' is not an integer");
  int64_t v = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_INT64, &v) < 0) r.fail("cannot read attribute '" + name + "'");
  return v;
}

// A dataset can declare any shape and store nothing (HDF5 reads its fill value where
// no data was written), so a file of a few kilobytes could make seqmix allocate
// terabytes. Unfiltered or checksummed data must be stored in full; compressed data
// (an h5py file written with gzip, say) can be smaller than its shape, so there the
// shape is only held against the machine's memory.
void check_stored_bytes(const Reader& r, hid_t dataset, const std::string& where, const Shape& shape) {
  const int64_t numel = shape_numel(shape);
  const long double bytes = 4.0L * static_cast<long double>(numel);
  Handle dcpl(H5Dget_create_plist(dataset), H5Pclose);
  const int nfilters = dcpl.ok() ? H5Pget_nfilters(dcpl.get()) : -1;
  if (nfilters < 0) r.fail(where + " has unreadable storage properties (the file is damaged)");
  bool compressed = false;
  for (int i = 0; i < nfilters; ++i) {
    unsigned flags = 0, filter_config = 0;
    size_t n_values = 0;
    if (H5Pget_filter2(dcpl.get(), static_cast<unsigned>(i), &flags, &n_values, nullptr, 0, nullptr, &filter_config) !=
        H5Z_FILTER_FLETCHER32)
      compressed = true;
  }
  if (compressed) {
    const long double machine = machine_memory_bytes();
    if (machine > 0 && bytes > machine)
      r.fail(where + " has shape " + shape_str(shape) + ": needs " + format_gib(bytes) + " GiB, this machine has " +
             format_gib(machine) + " GiB");
    return;
  }
  const hsize_t stored = H5Dget_storage_size(dataset);
  if (static_cast<long double>(stored) < bytes)
    r.fail(where + " has shape " + shape_str(shape) + " (" + std::to_string(numel) + " float32 values) but the file stores only " +
           std::to_string(stored) + " bytes of it");
}

Tensor read_tensor(const Reader& r, hid_t group, const std::string& gname, const std::string& name) {
  const std::string where = gname + "/" + name;
  Handle d(H5Dopen2(group, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.ok()) r.fail(where + " is not a dataset");
  Handle ftype(H5Dget_type(d.get()), H5Tclose);
  if (H5Tget_class(ftype.get()) != H5T_FLOAT || H5Tget_size(ftype.get()) != 4)
    r.fail(where + " is not float32");
  Handle space(H5Dget_space(d.get()), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) r.fail(where + " has an unreadable shape (the file is damaged)");
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) r.fail(where + " holds no data (a null dataspace)");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  for (hsize_t n : dims)
    if (n > static_cast<hsize_t>(INT64_MAX)) r.fail(where + " has a dimension of " + std::to_string(n) + " elements");
  Shape shape(dims.begin(), dims.end());
  check_stored_bytes(r, d.get(), where, shape);
  Tensor t = Tensor::empty(shape);
  if (t.numel() > 0 && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.f32()) < 0)
    r.fail("cannot read " + where + ": the file is truncated or corrupted (checksum or read error)");
  return t;
}

NamedTensors read_tensor_group(const Reader& r, hid_t parent, const std::string& name) {
  Handle g = open_group(r, parent, name);
  NamedTensors out;
  for (const std::string& m : member_names(r, g.get(), "/" + name)) out.emplace_back(m, read_tensor(r, g.get(), "/" + name, m));
  return out;
}

void write_hdf5(const Writer& w, const std::string& tmp, const CheckpointData& data) {
  const std::string& path = w.path;
  {
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    // The newest on-disk format: its metadata blocks carry checksums.
    H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_LATEST);
    // Room in front of the HDF5 data for the digest header.
    Handle fcpl(H5Pcreate(H5P_FILE_CREATE), H5Pclose);
    w.check(H5Pset_userblock(fcpl.get(), kDigestBlockSize), "the user block");
    Handle file = w.check(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, fcpl.get(), fapl.get()), H5Fclose,
                          "temporary file " + tmp);
    write_string_attr(w, file.get(), "format", "seqmix");
    write_int_attr(w, file.get(), "format_version", kCheckpointFormatVersion);
    write_string_attr(w, file.get(), "config", data.config_yaml);
    {
      Handle g = make_group(w, file.get(), "params");
      for (const auto& [name, t] : data.params) write_tensor(w, g.get(), name, t);
    }
    {
      Handle g = make_group(w, file.get(), "optimizer");
      write_scalar<int64_t>(w, g.get(), "step", H5T_STD_I64LE, H5T_NATIVE_INT64, data.optimizer_step);
      Handle gm = make_group(w, g.get(), "m");
      for (const auto& [name, t] : data.adam_m) write_tensor(w, gm.get(), name, t);
      Handle gv = make_group(w, g.get(), "v");
      for (const auto& [name, t] : data.adam_v) write_tensor(w, gv.get(), name, t);
    }
    if (data.tokenizer) {
      Handle type = utf8_string_type();
      Handle space(H5Screate(H5S_SCALAR), H5Sclose);
      Handle d = w.check(H5Dcreate2(file.get(), "tokenizer", type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                         H5Dclose, "tokenizer");
      const char* p = data.tokenizer->second.c_str();
      w.check(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p), "tokenizer");
      write_string_attr(w, d.get(), "kind", data.tokenizer->first);
    }
    {
      Handle g = make_group(w, file.get(), "train");
      for (const auto& [k, v] : data.train_u64) write_scalar<uint64_t>(w, g.get(), k, H5T_STD_U64LE, H5T_NATIVE_UINT64, v);
      for (const auto& [k, v] : data.train_f64) write_scalar<double>(w, g.get(), k, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, v);
    }
    w.check(H5Fflush(file.get(), H5F_SCOPE_GLOBAL), "file " + tmp);
    if (H5Fclose(file.release()) < 0) throw CheckpointError(path + ": cannot close " + tmp + os_reason());
  }
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointData& data) {
  quiet_hdf5();
  // A non-finite checkpoint cannot be resumed or evaluated: refuse it here, so
  // that no caller can replace a good checkpoint with one.
  for (const auto& [ts, group] : {std::pair{&data.params, "/params"}, std::pair{&data.adam_m, "/optimizer/m"},
                                  std::pair{&data.adam_v, "/optimizer/v"}})
    for (const auto& [name, t] : *ts)
      if (t.dtype() != DType::f32) throw CheckpointError(path + ": tensor " + name + " is not float32");
  for (const auto& [ts, group] : {std::pair{&data.params, "/params"}, std::pair{&data.adam_m, "/optimizer/m"},
                                  std::pair{&data.adam_v, "/optimizer/v"}})
    if (const std::string bad = first_non_finite(*ts, group); !bad.empty())
      throw CheckpointError(path + ": refusing to write a non-finite checkpoint: " + bad);
  const std::string tmp = path + ".tmp";
  Writer w{path};
  errno = 0;
  try {
    write_hdf5(w, tmp, data);
    seal_checkpoint_digest(tmp);
  } catch (...) {
    // A partial file helps nobody and may fill the disk further; the previous
    // checkpoint at `path` is untouched.
    std::remove(tmp.c_str());
    throw;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = os_reason();
    std::remove(tmp.c_str());
    throw CheckpointError(path + ": cannot rename " + tmp + " over it" + reason);
  }
  fsync_path(std::filesystem::path(path).parent_path().empty() ? "." : std::filesystem::path(path).parent_path().string(),
             true);
}

namespace {

// A dataset that must hold one value (a step, a counter, the vocabulary text).
Handle open_scalar(const Reader& r, hid_t parent, const std::string& name, const std::string& where) {
  Handle d(H5Dopen2(parent, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.ok()) r.fail(where + " is not a dataset");
  Handle space(H5Dget_space(d.get()), H5Sclose);
  require_one_value(r, space.get(), where);
  return d;
}

// Everything HDF5 reads; only for a file whose digest matched, or in a child process.
CheckpointData parse_hdf5(const std::string& path) {
  Reader r{path};
  if (H5Fis_hdf5(path.c_str()) <= 0)
    r.fail("not an HDF5 file, or truncated or corrupted (the HDF5 superblock is unreadable)");
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.ok()) r.fail("cannot open as HDF5: the file is truncated or corrupted");
  CheckpointData out;
  if (H5Aexists(file.get(), "format") <= 0) r.fail("not a seqmix checkpoint (no 'format' attribute)");
  const std::string format = read_string_attr(r, file.get(), "format");
  if (format != "seqmix") r.fail("format is '" + format + "', expected 'seqmix'");
  const int64_t version = read_int_attr(r, file.get(), "format_version");
  if (version > kCheckpointFormatVersion)
    r.fail("format_version " + std::to_string(version) + " is newer than this seqmix reads (" +
           std::to_string(kCheckpointFormatVersion) + "); update seqmix");
  if (version < 1) r.fail("format_version " + std::to_string(version) + " is not valid");
  out.config_yaml = read_string_attr(r, file.get(), "config");
  out.params = read_tensor_group(r, file.get(), "params");
  if (out.params.empty()) r.fail("/params holds no tensors");
  {
    Handle g = open_group(r, file.get(), "optimizer");
    if (H5Lexists(g.get(), "step", H5P_DEFAULT) <= 0) r.fail("/optimizer/step is missing");
    Handle d = open_scalar(r, g.get(), "step", "/optimizer/step");
    Handle t(H5Dget_type(d.get()), H5Tclose);
    if (H5Tget_class(t.get()) != H5T_INTEGER) r.fail("/optimizer/step is not an integer");
    if (H5Dread(d.get(), H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &out.optimizer_step) < 0)
      r.fail("cannot read /optimizer/step");
    if (out.optimizer_step < 0) r.fail("/optimizer/step is negative (" + std::to_string(out.optimizer_step) + ")");
    out.adam_m = read_tensor_group(r, g.get(), "m");
    out.adam_v = read_tensor_group(r, g.get(), "v");
    for (const NamedTensors* moments : {&out.adam_m, &out.adam_v}) {
      if (moments->empty()) continue;
      if (moments->size() != out.params.size()) r.fail("the optimizer moments do not match /params in number");
      for (size_t i = 0; i < moments->size(); ++i)
        if ((*moments)[i].first != out.params[i].first ||
            (*moments)[i].second.shape() != out.params[i].second.shape())
          r.fail("optimizer moment " + (*moments)[i].first + " does not match /params/" + out.params[i].first);
    }
  }
  for (const auto& [ts, group] : {std::pair{&out.params, "/params"}, std::pair{&out.adam_m, "/optimizer/m"},
                                  std::pair{&out.adam_v, "/optimizer/v"}})
    if (const std::string bad = first_non_finite(*ts, group); !bad.empty())
      r.fail("holds non-finite values (from a diverged run?): " + bad);
  if (H5Lexists(file.get(), "tokenizer", H5P_DEFAULT) > 0) {
    Handle d = open_scalar(r, file.get(), "tokenizer", "/tokenizer");
    Handle t(H5Dget_type(d.get()), H5Tclose);
    if (H5Tget_class(t.get()) != H5T_STRING || H5Tis_variable_str(t.get()) <= 0)
      r.fail("/tokenizer is not a variable-length string");
    Handle mtype = utf8_string_type();
    char* p = nullptr;
    if (H5Dread(d.get(), mtype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, &p) < 0 || !p) r.fail("cannot read /tokenizer");
    std::string vocab(p);
    H5free_memory(p);
    out.tokenizer = std::make_pair(read_string_attr(r, d.get(), "kind"), vocab);
  }
  {
    Handle g = open_group(r, file.get(), "train");
    for (const std::string& k : member_names(r, g.get(), "/train")) {
      Handle d = open_scalar(r, g.get(), k, "/train/" + k);
      Handle t(H5Dget_type(d.get()), H5Tclose);
      if (!t.ok()) r.fail("/train/" + k + " is unreadable");
      if (H5Tget_class(t.get()) == H5T_INTEGER) {
        uint64_t v = 0;
        if (H5Dread(d.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) r.fail("cannot read /train/" + k);
        out.train_u64[k] = v;
      } else if (H5Tget_class(t.get()) == H5T_FLOAT) {
        double v = 0;
        if (H5Dread(d.get(), H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, &v) < 0) r.fail("cannot read /train/" + k);
        out.train_f64[k] = v;
      } else {
        r.fail("/train/" + k + " is neither an integer nor a float");
      }
    }
  }
  return out;
}

std::atomic<double> g_undigested_parse_base_s{30.0};

// Parses an undigested file in a child process first: if HDF5 crashes on it, the
// child dies instead of seqmix, and the file is refused.
void probe_in_child(const std::string& path) {
  int fds[2];
  if (::pipe(fds) != 0) throw CheckpointError(path + ": cannot check the file (pipe: " + std::strerror(errno) + ")");
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw CheckpointError(path + ": cannot check the file (fork: " + std::strerror(errno) + ")");
  }
  if (pid == 0) {
    ::close(fds[0]);
    // Under a fuzzer, a crash here is the expected outcome the parent reports, not
    // a finding: do not let the sanitizer's death callback record it as one.
    if (__sanitizer_set_death_callback) __sanitizer_set_death_callback(nullptr);
    int code = 0;
    std::string msg;
    try {
      parse_hdf5(path);
    } catch (const std::exception& e) {
      msg = e.what();
      code = 1;
    }
    if (!msg.empty() && ::write(fds[1], msg.data(), msg.size()) < 0) code = 2;
    ::_exit(code);  // no atexit handlers, no flushing of the parent's buffers
  }
  ::close(fds[1]);
  // HDF5 can also loop forever on a damaged file (found by fuzz_checkpoint): give
  // the child a time limit generous for any real file (30 s + 1 s per 50 MB).
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  const double limit_s = g_undigested_parse_base_s.load() + (ec ? 0.0 : static_cast<double>(bytes) / 50e6);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(limit_s);
  std::string msg;
  char buf[512];
  bool timed_out = false;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the child closed its end: it has finished
    msg.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  if (timed_out) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out)
    throw CheckpointError(path + ": the file is damaged: the HDF5 library did not finish reading it within " +
                          std::to_string(static_cast<int>(limit_s)) + " s");
  if (WIFSIGNALED(status))
    throw CheckpointError(path + ": the file is damaged: the HDF5 library crashed reading it (signal " +
                          std::to_string(WTERMSIG(status)) + ")");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    if (msg.rfind(path, 0) == 0) throw CheckpointError(msg);
    throw CheckpointError(path + ": the file is damaged" + (msg.empty() ? std::string() : ": " + msg));
  }
}

}  // namespace

void set_undigested_parse_base_seconds(double base_seconds) {
  if (!(base_seconds > 0)) throw std::invalid_argument("set_undigested_parse_base_seconds: needs a positive time");
  g_undigested_parse_base_s = base_seconds;
}

CheckpointData read_checkpoint(const std::string& path) {
  quiet_hdf5();
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw CheckpointError(path + ": no such file");
  if (std::filesystem::is_directory(path, ec)) throw CheckpointError(path + ": is a directory, not a checkpoint file");
  if (std::filesystem::file_size(path, ec) == 0) throw CheckpointError(path + ": the file is empty");
  if (verify_checkpoint_digest(path) == DigestStatus::absent) {
    spdlog::warn("{}: has no seqmix digest (written by another tool?); its integrity cannot be verified", path);
    probe_in_child(path);
  }
  try {
    return parse_hdf5(path);
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    // e.g. a dataset whose shape overflows: the file is not a usable checkpoint.
    throw CheckpointError(path + ": " + e.what());
  }
}

void load_named(const std::string& path, const NamedTensors& stored, const NamedTensors& into, const std::string& what) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [name, t] : stored) by_name[name] = &t;
  for (const auto& [name, dst] : into) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw CheckpointError(path + ": tensor /" + what + "/" + name + " is missing");
    const Tensor& src = *it->second;
    if (src.shape() != dst.shape())
      throw CheckpointError(path + ": tensor /" + what + "/" + name + " has shape " + shape_str(src.shape()) +
                            ", the model expects " + shape_str(dst.shape()));
    if (dst.dtype() == DType::f32) dst.detach().copy_from(src);
    else dst.detach().copy_from(src.to(dst.dtype()));
    by_name.erase(it);
  }
  if (!by_name.empty())
    throw CheckpointError(path + ": tensor /" + what + "/" + by_name.begin()->first +
                          " does not belong to this model (the config and the tensors disagree)");
}

}  // namespace seqmix
