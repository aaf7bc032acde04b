// Tensor: a contiguous, row-major, 64-byte aligned buffer with an int64 shape.
//
// A Tensor is a cheap handle (shared ownership). float32 is the working type;
// float64 exists so that gradient checks can run every op in double precision;
// int32 holds token ids and labels. reshape() shares the buffer (no copy).
//
// Autograd state lives beside the data: requires_grad and a GradCell that holds
// the accumulated gradient. The tape (core/tape.h) keeps only GradCells of op
// outputs, so an activation that no backward closure captured is freed as soon
// as the user drops it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace seqmix {

enum class DType { f32, f64, i32 };

using Shape = std::vector<int64_t>;

const char* dtype_name(DType dt);
size_t dtype_size(DType dt);
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

// Thrown at API boundaries for a wrong shape, dtype or argument. The message
// names the op and what was expected.
struct ShapeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

class Tensor;

struct GradCell;

struct TensorImpl {
  std::shared_ptr<std::byte> buffer;  // aligned, shared by views
  size_t byte_offset = 0;
  Shape shape;
  DType dtype = DType::f32;
  bool requires_grad = false;
  std::shared_ptr<GradCell> grad_cell;  // created with requires_grad
};

class Tensor {
 public:
  Tensor() = default;

  // Construction. empty() leaves memory uninitialised.
  static Tensor empty(const Shape& shape, DType dt = DType::f32);
  static Tensor zeros(const Shape& shape, DType dt = DType::f32);
  static Tensor full(const Shape& shape, double value, DType dt = DType::f32);
  static Tensor from_vector(const Shape& shape, const std::vector<float>& v);
  static Tensor from_vector(const Shape& shape, const std::vector<double>& v);
  static Tensor from_vector(const Shape& shape, const std::vector<int32_t>& v);
  static Tensor empty_like(const Tensor& t) { return empty(t.shape(), t.dtype()); }
  static Tensor zeros_like(const Tensor& t) { return zeros(t.shape(), t.dtype()); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  int64_t ndim() const { return static_cast<int64_t>(impl_->shape.size()); }
  // size(i) accepts negative axes: size(-1) is the last dimension.
  int64_t size(int64_t axis) const;
  int64_t numel() const { return shape_numel(impl_->shape); }
  DType dtype() const { return impl_->dtype; }

  template <class T>
  T* data() const;
  float* f32() const { return data<float>(); }
  double* f64() const { return data<double>(); }
  int32_t* i32() const { return data<int32_t>(); }

  // Element read as double, for tests and small host-side logic.
  double item(int64_t flat_index = 0) const;
  std::vector<float> to_f32_vector() const;
  std::vector<double> to_f64_vector() const;

  // A copy with its own buffer and no autograd history.
  Tensor clone() const;
  // Shares the buffer, no autograd history.
  Tensor detach() const;
  // Converts between float dtypes (a copy; no autograd history).
  Tensor to(DType dt) const;
  void fill(double value);
  void copy_from(const Tensor& src);  // same numel and dtype

  // Autograd.
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  Tensor& set_requires_grad(bool on = true);
  // The accumulated gradient; undefined until a backward pass reaches it.
  Tensor grad() const;
  // The gradient buffer, allocated and zeroed on first use. Backward kernels
  // accumulate into it with +=.
  Tensor grad_buffer() const;
  void zero_grad() const;  // drops the gradient
  std::shared_ptr<GradCell> grad_cell() const { return impl_ ? impl_->grad_cell : nullptr; }

  bool same_storage(const Tensor& o) const { return impl_ && o.impl_ && impl_->buffer == o.impl_->buffer; }
  // From now on this tensor's values are src's storage (same shape and dtype), while
  // its gradient stays its own: every handle to this tensor sees src's values. For a
  // model replica that reads the trained weights and accumulates its own gradient
  // (train/thread_replicas.h).
  void share_values_of(const Tensor& src);
  const TensorImpl* impl() const { return impl_.get(); }

 private:
  friend Tensor view_as_shape(const Tensor& t, const Shape& shape);
  std::shared_ptr<TensorImpl> impl_;
};

struct GradCell {
  Tensor grad;  // undefined until accumulated
  Shape shape;
  DType dtype = DType::f32;
  // Returns the gradient buffer, allocating zeros on first use.
  Tensor& buffer();
  // For a backward kernel that writes every element of its contribution: on the
  // first contribution the buffer is allocated uninitialised and `overwrite` is set,
  // and the kernel stores (=) instead of adding (+=). This saves zeroing the buffer
  // and reading it back, a pass over memory per gradient.
  Tensor& buffer_for_write(bool& overwrite);
};

// A tensor with a new shape over the same buffer, no autograd history.
// (The differentiable reshape is the op reshape() in core/ops.h.)
Tensor view_as_shape(const Tensor& t, const Shape& shape);

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::i32; }

template <class T>
T* Tensor::data() const {
  if (!impl_) throw ShapeError("data(): undefined tensor");
  if (impl_->dtype != dtype_of<T>())
    throw ShapeError(std::string("data(): tensor is ") + dtype_name(impl_->dtype) +
                     ", asked for " + dtype_name(dtype_of<T>()));
  return reinterpret_cast<T*>(impl_->buffer.get() + impl_->byte_offset);
}

// Runs f(T{}) with T = float or double according to dt; i32 is an error.
// Usage: dispatch_float(x.dtype(), "exp", [&](auto tag) { using T = decltype(tag); ... });
template <class F>
decltype(auto) dispatch_float(DType dt, const char* op, F&& f) {
  if (dt == DType::f32) return f(float{});
  if (dt == DType::f64) return f(double{});
  throw ShapeError(std::string(op) + ": expected a float32 or float64 tensor, got int32");
}

// Boundary checks used by ops. Each throws ShapeError naming the op.
void check_same_dtype(const char* op, std::initializer_list<const Tensor*> ts);
void check_shape(const char* op, const char* what, const Tensor& t, const Shape& expected);
void check_ndim_at_least(const char* op, const char* what, const Tensor& t, int64_t n);

}  // namespace seqmix
