#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>
#include <sstream>

namespace seqmix {

namespace {

constexpr size_t kAlignment = 64;  // one cache line; also enough for AVX-512 loads

// A cache of freed buffers by exact (rounded) size. A training step allocates the
// same activation and gradient shapes every step; handing the previous step's
// pages back avoids the page faults of fresh memory, which dominate elementwise
// ops on large tensors (a new 16 MB buffer costs ~200 ms of faults on this VM
// against ~1 ms for a reused one). Bounded, so a change of shapes cannot hoard
// memory: past the bound, blocks go back to the system.
class BufferPool {
 public:
  static constexpr size_t kMaxCachedBytes = size_t{4} << 30;

  std::byte* get(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        std::byte* p = it->second.back();
        it->second.pop_back();
        cached_ -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(kAlignment, bytes);
    if (!p) throw std::bad_alloc();
    return static_cast<std::byte*>(p);
  }

  void put(std::byte* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_ + bytes <= kMaxCachedBytes) {
        free_[bytes].push_back(p);
        cached_ += bytes;
        return;
      }
    }
    std::free(p);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<std::byte*>> free_;
  size_t cached_ = 0;
};

BufferPool& pool() {
  // Never destroyed: tensors in static storage may be released after main returns.
  static BufferPool* p = new BufferPool();
  return *p;
}

std::shared_ptr<std::byte> allocate(size_t bytes) {
  size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded == 0) rounded = kAlignment;
  return std::shared_ptr<std::byte>(pool().get(rounded), [rounded](std::byte* q) { pool().put(q, rounded); });
}

void check_shape_valid(const Shape& s) {
  for (int64_t d : s)
    if (d < 0) throw ShapeError("tensor shape " + shape_str(s) + " has a negative dimension");
}

}  // namespace

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::f32: return "float32";
    case DType::f64: return "float64";
    case DType::i32: return "int32";
  }
  return "?";
}

size_t dtype_size(DType dt) { return dt == DType::f64 ? 8 : 4; }

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ")";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  // Checked: a shape from a config or a file can ask for more than 2^63 elements,
  // and a wrapped product would allocate a wrong-sized buffer.
  int64_t n = 1;
  for (int64_t d : s)
    if (__builtin_mul_overflow(n, d, &n))
      throw ShapeError("tensor shape " + shape_str(s) + " has more than 2^63 elements");
  return n;
}

Tensor Tensor::empty(const Shape& shape, DType dt) {
  check_shape_valid(shape);
  size_t bytes = 0;
  if (__builtin_mul_overflow(static_cast<size_t>(shape_numel(shape)), dtype_size(dt), &bytes))
    throw ShapeError("tensor shape " + shape_str(shape) + " needs more than 2^64 bytes");
  Tensor t;
  t.impl_ = std::make_shared<TensorImpl>();
  if (bytes > (size_t{1} << 62)) throw ShapeError("tensor shape " + shape_str(shape) + " needs more than 2^62 bytes");
  try {
    t.impl_->buffer = allocate(bytes);
  } catch (const std::bad_alloc&) {
    // A bare "std::bad_alloc" does not say which tensor or how much.
    throw ShapeError("out of memory allocating " + std::to_string(bytes >> 20) + " MiB for a tensor of shape " +
                     shape_str(shape));
  }
  t.impl_->shape = shape;
  t.impl_->dtype = dt;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dt) {
  Tensor t = empty(shape, dt);
  std::memset(t.impl_->buffer.get(), 0, static_cast<size_t>(t.numel()) * dtype_size(dt));
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dt) {
  Tensor t = empty(shape, dt);
  t.fill(value);
  return t;
}

namespace {
template <class T>
Tensor from_vec(const Shape& shape, const std::vector<T>& v) {
  if (static_cast<int64_t>(v.size()) != shape_numel(shape))
    throw ShapeError("from_vector: " + std::to_string(v.size()) + " values for shape " + shape_str(shape));
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  // An empty vector's data() may be null, and memcpy's pointers must not be, even for 0 bytes.
  if (!v.empty()) std::memcpy(t.data<T>(), v.data(), v.size() * sizeof(T));
  return t;
}
}  // namespace

Tensor Tensor::from_vector(const Shape& s, const std::vector<float>& v) { return from_vec(s, v); }
Tensor Tensor::from_vector(const Shape& s, const std::vector<double>& v) { return from_vec(s, v); }
Tensor Tensor::from_vector(const Shape& s, const std::vector<int32_t>& v) { return from_vec(s, v); }

int64_t Tensor::size(int64_t axis) const {
  int64_t n = ndim();
  int64_t a = axis < 0 ? axis + n : axis;
  if (a < 0 || a >= n)
    throw ShapeError("size(" + std::to_string(axis) + ") of a tensor of shape " + shape_str(shape()));
  return impl_->shape[a];
}

double Tensor::item(int64_t i) const {
  switch (dtype()) {
    case DType::f32: return f32()[i];
    case DType::f64: return f64()[i];
    case DType::i32: return i32()[i];
  }
  return 0;
}

std::vector<float> Tensor::to_f32_vector() const {
  std::vector<float> v(numel());
  for (int64_t i = 0; i < numel(); ++i) v[i] = static_cast<float>(item(i));
  return v;
}

std::vector<double> Tensor::to_f64_vector() const {
  std::vector<double> v(numel());
  for (int64_t i = 0; i < numel(); ++i) v[i] = item(i);
  return v;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape(), dtype());
  std::memcpy(t.impl_->buffer.get(), impl_->buffer.get() + impl_->byte_offset,
              static_cast<size_t>(numel()) * dtype_size(dtype()));
  return t;
}

Tensor Tensor::detach() const { return view_as_shape(*this, shape()); }

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return clone();
  Tensor t = empty(shape(), dt);
  int64_t n = numel();
  if (dt == DType::f32) {
    float* o = t.f32();
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<float>(item(i));
  } else if (dt == DType::f64) {
    double* o = t.f64();
    for (int64_t i = 0; i < n; ++i) o[i] = item(i);
  } else {
    int32_t* o = t.i32();
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<int32_t>(item(i));
  }
  return t;
}

void Tensor::fill(double value) {
  int64_t n = numel();
  switch (dtype()) {
    case DType::f32: { float* p = f32(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(value); break; }
    case DType::f64: { double* p = f64(); for (int64_t i = 0; i < n; ++i) p[i] = value; break; }
    case DType::i32: { int32_t* p = i32(); for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(value); break; }
  }
}

void Tensor::copy_from(const Tensor& src) {
  if (src.numel() != numel() || src.dtype() != dtype())
    throw ShapeError("copy_from: " + shape_str(src.shape()) + " " + dtype_name(src.dtype()) + " into " +
                     shape_str(shape()) + " " + dtype_name(dtype()));
  std::memmove(impl_->buffer.get() + impl_->byte_offset, src.impl_->buffer.get() + src.impl_->byte_offset,
               static_cast<size_t>(numel()) * dtype_size(dtype()));
}

void Tensor::share_values_of(const Tensor& src) {
  if (!defined() || !src.defined() || shape() != src.shape() || dtype() != src.dtype())
    throw ShapeError("share_values_of: needs two tensors of one shape and dtype, got " +
                     (defined() ? shape_str(shape()) + " " + dtype_name(dtype()) : std::string("undefined")) + " and " +
                     (src.defined() ? shape_str(src.shape()) + " " + dtype_name(src.dtype()) : std::string("undefined")));
  impl_->buffer = src.impl_->buffer;
  impl_->byte_offset = src.impl_->byte_offset;
}

Tensor& Tensor::set_requires_grad(bool on) {
  if (on && dtype() == DType::i32) throw ShapeError("set_requires_grad: an int32 tensor has no gradient");
  impl_->requires_grad = on;
  if (on && !impl_->grad_cell) {
    impl_->grad_cell = std::make_shared<GradCell>();
    impl_->grad_cell->shape = shape();
    impl_->grad_cell->dtype = dtype();
  }
  return *this;
}

Tensor Tensor::grad() const { return impl_ && impl_->grad_cell ? impl_->grad_cell->grad : Tensor(); }

Tensor Tensor::grad_buffer() const {
  if (!impl_ || !impl_->grad_cell) throw ShapeError("grad_buffer(): tensor does not require a gradient");
  return impl_->grad_cell->buffer();
}

void Tensor::zero_grad() const {
  if (impl_ && impl_->grad_cell) impl_->grad_cell->grad = Tensor();
}

Tensor& GradCell::buffer() {
  if (!grad.defined()) grad = Tensor::zeros(shape, dtype);
  return grad;
}

Tensor& GradCell::buffer_for_write(bool& overwrite) {
  overwrite = !grad.defined();
  if (overwrite) grad = Tensor::empty(shape, dtype);
  return grad;
}

Tensor view_as_shape(const Tensor& t, const Shape& shape) {
  if (shape_numel(shape) != t.numel())
    throw ShapeError("reshape: cannot view " + shape_str(t.shape()) + " as " + shape_str(shape));
  Tensor v;
  v.impl_ = std::make_shared<TensorImpl>();
  v.impl_->buffer = t.impl_->buffer;
  v.impl_->byte_offset = t.impl_->byte_offset;
  v.impl_->shape = shape;
  v.impl_->dtype = t.impl_->dtype;
  return v;
}

void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (!first) { first = t; continue; }
    if (t->dtype() != first->dtype())
      throw ShapeError(std::string(op) + ": mixed dtypes " + dtype_name(first->dtype()) + " and " +
                       dtype_name(t->dtype()));
  }
}

void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected) {
  if (!t.defined()) throw ShapeError(std::string(op) + ": " + what + " is undefined");
  if (t.shape() != expected)
    throw ShapeError(std::string(op) + ": " + what + " has shape " + shape_str(t.shape()) + ", expected " +
                     shape_str(expected));
}

void check_ndim_at_least(const char* op, const char* what, const Tensor& t, int64_t n) {
  if (!t.defined()) throw ShapeError(std::string(op) + ": " + what + " is undefined");
  if (t.ndim() < n)
    throw ShapeError(std::string(op) + ": " + what + " has shape " + shape_str(t.shape()) + ", expected at least " +
                     std::to_string(n) + " dimensions");
}

}  // namespace seqmix
