#include "core/tape.h"

namespace seqmix {

namespace {
// Per thread, as the tape: a batch-parallel step (train/thread_replicas.h) runs a
// forward and backward on every thread at once, each recording its own ops.
thread_local bool g_grad_enabled = true;
}

Tape& tape() {
  thread_local Tape t;
  return t;
}

bool grad_enabled() { return g_grad_enabled; }

NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }

bool any_requires_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

void record(std::initializer_list<const Tensor*> outputs, BackwardFn backward) {
  TapeNode node;
  for (const Tensor* t : outputs) {
    const_cast<Tensor*>(t)->set_requires_grad(true);
    node.outputs.push_back(t->grad_cell());
  }
  node.backward = std::move(backward);
  tape().push(std::move(node));
}

void Tape::clear() {
  // Swap with an empty vector so that the capacity (and every captured tensor)
  // is released, not just the size reset.
  std::vector<TapeNode>().swap(nodes_);
}

void Tape::backward(const Tensor& loss) {
  if (!loss.defined() || loss.numel() != 1)
    throw ShapeError("backward: the loss must be a tensor with one element, got shape " +
                     (loss.defined() ? shape_str(loss.shape()) : std::string("undefined")));
  if (!loss.requires_grad()) throw ShapeError("backward: the loss does not require a gradient (nothing recorded)");
  loss.grad_buffer().fill(1.0);
  std::vector<Tensor> grads;
  for (size_t i = nodes_.size(); i-- > 0;) {
    TapeNode& node = nodes_[i];
    grads.clear();
    bool any = false;
    for (auto& cell : node.outputs) {
      grads.push_back(cell->grad);
      any = any || cell->grad.defined();
    }
    if (any) node.backward(grads);
    // Free this node's captures as soon as it has run: peak memory falls during backward.
    node = TapeNode();
  }
  clear();
}

void backward(const Tensor& loss) { tape().backward(loss); }

}  // namespace seqmix
