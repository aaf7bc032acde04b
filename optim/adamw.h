// Adam and AdamW with PyTorch semantics (torch.optim.Adam / AdamW):
//   adam:  g <- g + wd * p                     (L2 penalty folded into the gradient)
//   adamw: p <- p * (1 - lr * wd)              (decoupled weight decay)
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// Which parameters decay is each Parameter's flag, set by the layer that created it
// (layers/module.h); the optimizer knows no names.
#pragma once

#include <string>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace seqmix {

struct AdamOptions {
  bool decoupled = true;  // true: AdamW, false: Adam
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class Adam {
 public:
  struct Slot {
    std::string name;
    Tensor param;
    Tensor m, v;  // float32 moments, same shape as param
    bool decay;
  };

  // Decays the parameters whose flag is set.
  Adam(const Parameters& params, const AdamOptions& opt);
  // For tensors that no layer created (tests, tools): those of two or more dimensions decay.
  Adam(const NamedTensors& params, const AdamOptions& opt);

  // One update at learning rate lr from the parameters' current gradients, each
  // multiplied by grad_scale first: step(lr, clip_coefficient(grad_norm(ps), max)) is
  // clip_grad_norm followed by step(lr), bit for bit, in one pass over the gradients
  // (which it leaves unscaled). A parameter without a gradient (nothing flowed into it)
  // is left untouched, as in PyTorch. All tensors' elements are updated in fixed blocks
  // in one parallel loop, so the result does not depend on the thread count. Returns
  // whether every parameter and moment it wrote is finite (they are written either way).
  bool step(double lr, double grad_scale = 1.0);
  void zero_grad();

  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  std::vector<Slot>& slots() { return slots_; }
  const std::vector<Slot>& slots() const { return slots_; }
  const AdamOptions& options() const { return opt_; }

 private:
  AdamOptions opt_;
  std::vector<Slot> slots_;
  int64_t step_ = 0;
};

// Scales every gradient by clip_coefficient(norm, max_norm) as
// torch.nn.utils.clip_grad_norm_ does; returns the norm before clipping.
double clip_grad_norm(const NamedTensors& params, double max_norm);
// The 2-norm of all gradients together. Squares are summed in double over fixed blocks
// of each tensor (in parallel), and the block sums are added in block order: the result
// is the same bits for every thread count.
double grad_norm(const NamedTensors& params);
// min(1, max_norm / (norm + 1e-6)).
double clip_coefficient(double norm, double max_norm);

}  // namespace seqmix
