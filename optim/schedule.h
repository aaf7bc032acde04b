// Learning-rate schedules, as nanoGPT's get_lr:
//   constant:       lr
//   linear_warmup:  lr * (step + 1) / (warmup + 1) for step < warmup, then lr
//   cosine:         the same warmup, then lr decays with a half cosine from lr
//                   at step = warmup to min_lr at step = total_steps, and stays there.
#pragma once

#include <cstdint>
#include <string>

namespace seqmix {

struct LrSchedule {
  std::string type = "constant";  // constant | linear_warmup | cosine
  double lr = 1e-3;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Throws std::invalid_argument naming the field for an unknown type or bad bounds.
  void validate() const;
  double at(int64_t step) const;  // step is 0-based: the update about to be made
};

}  // namespace seqmix
