#include "optim/schedule.h"

#include <cmath>
#include <stdexcept>

namespace seqmix {

void LrSchedule::validate() const {
  if (type != "constant" && type != "linear_warmup" && type != "cosine")
    throw std::invalid_argument("schedule type '" + type + "' is not one of constant, linear_warmup, cosine");
  if (!(lr > 0)) throw std::invalid_argument("schedule: lr must be > 0");
  if (min_lr < 0 || min_lr > lr) throw std::invalid_argument("schedule: min_lr must be in [0, lr]");
  if (warmup_steps < 0) throw std::invalid_argument("schedule: warmup_steps must be >= 0");
}

double LrSchedule::at(int64_t step) const {
  if (type == "constant") return lr;
  if (step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps + 1);
  if (type == "linear_warmup") return lr;
  if (step >= total_steps) return min_lr;
  const double span = static_cast<double>(total_steps - warmup_steps);
  const double progress = span > 0 ? static_cast<double>(step - warmup_steps) / span : 1.0;
  const double coeff = 0.5 * (1.0 + std::cos(M_PI * progress));
  return min_lr + coeff * (lr - min_lr);
}

}  // namespace seqmix
