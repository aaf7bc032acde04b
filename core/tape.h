// The autodiff tape.
//
// Each differentiable op, when grad mode is on and some input requires a
// gradient, appends a Node: the GradCells of its outputs and a backward closure
// that captures only what the backward needs. backward(loss) seeds d(loss) = 1
// and walks the nodes in reverse. A closure receives the output gradients
// (an undefined Tensor for an output nothing flowed into) and accumulates (+=)
// into the gradient buffers of those inputs that require a gradient; it skips
// the others. After backward the tape is cleared and its memory released;
// parameters keep their gradients until zero_grad().
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace seqmix {

using BackwardFn = std::function<void(const std::vector<Tensor>& grad_outputs)>;

struct TapeNode {
  std::vector<std::shared_ptr<GradCell>> outputs;
  BackwardFn backward;
};

class Tape {
 public:
  void push(TapeNode node) { nodes_.push_back(std::move(node)); }
  size_t size() const { return nodes_.size(); }
  void clear();
  // Runs every node's backward in reverse order, then clears the tape.
  void backward(const Tensor& loss);

 private:
  std::vector<TapeNode> nodes_;
};

// This thread's tape. Ops record into the tape of the thread that calls them
// (kernels' own OpenMP threads record nothing); training owns one step at a time.
Tape& tape();

bool grad_enabled();

// Inside a NoGradGuard nothing is recorded (evaluation, decoding). Grad mode is
// per thread, like the tape.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// True when grad mode is on and any given defined tensor requires a gradient.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Marks outputs as requiring grad and appends a node for them.
// Call only when any_requires_grad(...) was true.
void record(std::initializer_list<const Tensor*> outputs, BackwardFn backward);

// backward(loss): loss must be a scalar (numel 1). Clears the tape afterwards.
void backward(const Tensor& loss);

}  // namespace seqmix
