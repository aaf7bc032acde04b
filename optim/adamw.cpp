#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "optim/adam_kernels.h"

namespace seqmix {

namespace {

// Every tensor is cut into blocks of kBlock elements (the last one shorter) and the
// parallel loops run over the blocks of all tensors at once: one parallel region per
// step instead of one per tensor (148 small regions cost more than the work on a loaded
// machine), and a block's boundaries do not depend on the thread count. 32K floats per
// array: the four streams of a block (p, g, m, v) stay within L2.
constexpr int64_t kBlock = int64_t{1} << 15;
// Below this many elements in all, one thread does it: forking costs more than it saves.
constexpr int64_t kParallelMin = int64_t{1} << 16;

struct Block {
  size_t tensor;  // index into the caller's tensor list
  int64_t begin, n;
};

std::vector<Block> split(const std::vector<int64_t>& sizes, int64_t& total) {
  std::vector<Block> blocks;
  total = 0;
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t b = 0; b < sizes[t]; b += kBlock) blocks.push_back({t, b, std::min(kBlock, sizes[t] - b)});
    total += sizes[t];
  }
  return blocks;
}

// The defined gradients, in the order of params.
std::vector<Tensor> defined_grads(const NamedTensors& params) {
  std::vector<Tensor> gs;
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (g.defined()) gs.push_back(g);
  }
  return gs;
}

std::vector<int64_t> numels(const std::vector<Tensor>& ts) {
  std::vector<int64_t> n;
  for (const Tensor& t : ts) n.push_back(t.numel());
  return n;
}

}  // namespace

Adam::Adam(const Parameters& params, const AdamOptions& opt) : opt_(opt) {
  for (const Parameter& p : params) {
    if (!p.tensor.requires_grad()) throw ShapeError("Adam: parameter " + p.name + " does not require a gradient");
    slots_.push_back(Slot{p.name, p.tensor, Tensor::zeros(p.tensor.shape()), Tensor::zeros(p.tensor.shape()), p.decay});
  }
}

namespace {
Parameters by_dimensions(const NamedTensors& params) {
  Parameters out;
  for (const auto& [name, t] : params) out.push_back({name, t, t.ndim() >= 2});
  return out;
}
}  // namespace

Adam::Adam(const NamedTensors& params, const AdamOptions& opt) : Adam(by_dimensions(params), opt) {}

bool Adam::step(double lr, double grad_scale) {
  ++step_;
  std::vector<Slot*> live;
  std::vector<Tensor> grads;
  std::vector<AdamStepConstants> consts;
  for (Slot& s : slots_) {
    Tensor g = s.param.grad();
    if (!g.defined()) continue;
    dispatch_float(s.param.dtype(), "Adam::step", [](auto) {});  // refuses int32 before any work
    live.push_back(&s);
    grads.push_back(g);
    consts.push_back(adam_step_constants(lr, opt_, s.decay, step_, grad_scale));
  }
  int64_t total = 0;
  const std::vector<Block> blocks = split(numels(grads), total);
  const int64_t nb = static_cast<int64_t>(blocks.size());
  bool finite = true;
  // Dynamic: blocks differ in size (biases are one short block) and a thread that the
  // shared machine deschedules should not hold the others; each block writes only its
  // own elements, so the order in which threads take them does not matter.
#pragma omp parallel for schedule(dynamic, 1) reduction(&& : finite) if (total >= kParallelMin)
  for (int64_t k = 0; k < nb; ++k) {
    const Block& b = blocks[static_cast<size_t>(k)];
    Slot& s = *live[b.tensor];
    const Tensor& g = grads[b.tensor];
    dispatch_float(s.param.dtype(), "Adam::step", [&](auto tag) {
      using T = decltype(tag);
      finite = adam_update_block<T>(s.param.data<T>() + b.begin, s.m.f32() + b.begin, s.v.f32() + b.begin,
                                    g.data<T>() + b.begin, b.n, consts[b.tensor]) &&
               finite;
    });
  }
  return finite;
}

void Adam::zero_grad() {
  for (Slot& s : slots_) s.param.zero_grad();
}

double grad_norm(const NamedTensors& params) {
  const std::vector<Tensor> grads = defined_grads(params);
  for (const Tensor& g : grads) dispatch_float(g.dtype(), "grad_norm", [](auto) {});
  int64_t total = 0;
  const std::vector<Block> blocks = split(numels(grads), total);
  const int64_t nb = static_cast<int64_t>(blocks.size());
  std::vector<double> partial(blocks.size());
#pragma omp parallel for schedule(dynamic, 1) if (total >= kParallelMin)
  for (int64_t k = 0; k < nb; ++k) {
    const Block& b = blocks[static_cast<size_t>(k)];
    const Tensor& g = grads[b.tensor];
    partial[static_cast<size_t>(k)] = dispatch_float(g.dtype(), "grad_norm", [&](auto tag) {
      using T = decltype(tag);
      return sum_squares_block<T>(g.data<T>() + b.begin, b.n);
    });
  }
  // Block order, whatever thread computed each block.
  double sum = 0;
  for (double s : partial) sum += s;
  return std::sqrt(sum);
}

double clip_coefficient(double norm, double max_norm) { return std::min(1.0, max_norm / (norm + 1e-6)); }

double clip_grad_norm(const NamedTensors& params, double max_norm) {
  const double norm = grad_norm(params);
  const double coef = clip_coefficient(norm, max_norm);
  if (coef >= 1.0) return norm;
  const std::vector<Tensor> grads = defined_grads(params);
  int64_t total = 0;
  const std::vector<Block> blocks = split(numels(grads), total);
  const int64_t nb = static_cast<int64_t>(blocks.size());
#pragma omp parallel for schedule(dynamic, 1) if (total >= kParallelMin)
  for (int64_t k = 0; k < nb; ++k) {
    const Block& b = blocks[static_cast<size_t>(k)];
    const Tensor& g = grads[b.tensor];
    dispatch_float(g.dtype(), "clip_grad_norm", [&](auto tag) {
      using T = decltype(tag);
      // The same product in T as Adam::step's grad_scale, so that folding the clip into
      // the step gives the same bits.
      const T c = static_cast<T>(coef);
      T* d = g.data<T>() + b.begin;
      for (int64_t i = 0; i < b.n; ++i) d[i] = d[i] * c;
    });
  }
  return norm;
}

}  // namespace seqmix
