// Elementwise unary ops: exp, log, sigmoid, silu, gelu, softplus, elu,
// logsigmoid. Each op is a struct beside its derivative: f(x) for the forward and
// df(v) = dy/dx written in terms of the one value the backward keeps, v = x or
// v = y (saves). One generic template runs the loops and records the tape node.
//
// Backward accumulates (+=) into the input's gradient buffer, or stores (=) when it
// is the first contribution (GradCell::buffer_for_write: no zeroing pass). Loops are flat over contiguous memory, OpenMP over elements.
// Always std:: math: seqmix::exp(const Tensor&) hides ::exp inside this namespace.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"
#include "core/vmath.h"

namespace seqmix {

namespace {

// Below this many elements the OpenMP fork costs more than the loop saves.
constexpr int64_t kParallelMin = 1 << 14;

enum class Saves { input, output };

// Stable logistic: exp of a non-positive argument only, so no overflow for any x.
template <class T>
T stable_sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

struct ExpOp {
  static constexpr const char* name = "exp";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return std::exp(x); }
  template <class T> static T df(T y) { return y; }  // (e^x)' = e^x = y
};

struct LogOp {
  static constexpr const char* name = "log";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return std::log(x); }
  template <class T> static T df(T x) { return T(1) / x; }
};

struct SigmoidOp {
  static constexpr const char* name = "sigmoid";
  static constexpr Saves saves = Saves::output;
  template <class T> static T f(T x) { return stable_sigmoid(x); }
  template <class T> static T df(T y) { return y * (T(1) - y); }
};

// silu(x) = x s(x); silu' = s + x s (1 - s) = s (1 + x (1 - s)).
struct SiluOp {
  static constexpr const char* name = "silu";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return x * stable_sigmoid(x); }
  template <class T> static T df(T x) {
    const T s = stable_sigmoid(x);
    return s * (T(1) + x * (T(1) - s));
  }
};

// Exact GELU: x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2; gelu' = Phi(x) + x phi(x),
// phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
// float32 goes through core/vmath.h (vectorised, and accurate in the left tail);
// float64 keeps std::erf and is the reference the tests compare against.
struct GeluOp {
  static constexpr const char* name = "gelu";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) {
    if constexpr (std::is_same_v<T, float>) return vmath::gelu_f32(x);
    return T(0.5) * x * (T(1) + std::erf(x * T(M_SQRT1_2)));
  }
  template <class T> static T df(T x) {
    if constexpr (std::is_same_v<T, float>) return vmath::gelu_grad_f32(x);
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
    const T pdf = T(0.5 * M_2_SQRTPI * M_SQRT1_2) * std::exp(T(-0.5) * x * x);  // 1/sqrt(2 pi)
    return cdf + x * pdf;
  }
};

// softplus(x) = log(1 + e^x), switched to x above 20 (as PyTorch and Mamba: the
// difference is below 2e-9 there); softplus' = sigmoid(x).
struct SoftplusOp {
  static constexpr const char* name = "softplus";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return x > T(20) ? x : std::log1p(std::exp(x)); }
  template <class T> static T df(T x) { return stable_sigmoid(x); }
};

// elu(x) = x for x > 0, e^x - 1 otherwise (alpha = 1); expm1 keeps the digits near 0.
struct EluOp {
  static constexpr const char* name = "elu";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return x > T(0) ? x : std::expm1(x); }
  template <class T> static T df(T x) { return x > T(0) ? T(1) : std::exp(x); }
};

// logsigmoid(x) = -log(1 + e^-x) = min(x, 0) - log1p(e^-|x|), finite for any x;
// logsigmoid' = 1 - sigmoid(x) = sigmoid(-x).
struct LogsigmoidOp {
  static constexpr const char* name = "logsigmoid";
  static constexpr Saves saves = Saves::input;
  template <class T> static T f(T x) { return std::min(x, T(0)) - std::log1p(std::exp(-std::fabs(x))); }
  template <class T> static T df(T x) { return stable_sigmoid(-x); }
};

template <class Op>
Tensor unary_op(const Tensor& x) {
  if (!x.defined()) throw ShapeError(std::string(Op::name) + ": x is undefined");
  Tensor y = Tensor::empty_like(x);
  const int64_t n = x.numel();
  dispatch_float(x.dtype(), Op::name, [&](auto tag) {
    using T = decltype(tag);
    const T* X = x.data<T>();
    T* Y = y.data<T>();
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) Y[i] = Op::f(X[i]);
  });
  if (!any_requires_grad({&x})) return y;
  // Keep only the value df reads; a detached handle so the closure holds data, not history.
  Tensor saved = (Op::saves == Saves::input ? x : y).detach();
  record({&y}, [cell = x.grad_cell(), saved, n](const std::vector<Tensor>& grads) {
    dispatch_float(saved.dtype(), Op::name, [&](auto tag) {
      using T = decltype(tag);
      const T* G = grads[0].data<T>();
      const T* V = saved.data<T>();
      bool fresh = false;
      T* dX = cell->buffer_for_write(fresh).template data<T>();
      if (fresh) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; ++i) dX[i] = G[i] * Op::df(V[i]);
      } else {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
        for (int64_t i = 0; i < n; ++i) dX[i] += G[i] * Op::df(V[i]);
      }
    });
  });
  return y;
}

}  // namespace

Tensor exp(const Tensor& x) { return unary_op<ExpOp>(x); }
Tensor log(const Tensor& x) { return unary_op<LogOp>(x); }
Tensor sigmoid(const Tensor& x) { return unary_op<SigmoidOp>(x); }
Tensor silu(const Tensor& x) { return unary_op<SiluOp>(x); }
Tensor gelu(const Tensor& x) { return unary_op<GeluOp>(x); }
Tensor softplus(const Tensor& x) { return unary_op<SoftplusOp>(x); }
Tensor elu(const Tensor& x) { return unary_op<EluOp>(x); }
Tensor logsigmoid(const Tensor& x) { return unary_op<LogsigmoidOp>(x); }

}  // namespace seqmix
