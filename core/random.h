// Counter-based random numbers: draw i of a stream is a pure function of
// (seed, stream, counter + i). Parallel kernels reserve a block of counters and
// draw independently per element, so results do not depend on the thread count,
// and the whole state is two integers (checkpoints store it for exact resume).
#pragma once

#include <cmath>
#include <cstdint>

namespace seqmix {

// splitmix64 finaliser: a bijective mix with full avalanche.
inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t hash_counter(uint64_t seed, uint64_t counter) {
  return mix64(mix64(seed) ^ (counter * 0xD2B74407B1CE6E93ull));
}

// Uniform in [0, 1) with 53 random bits.
inline double u64_to_unit(uint64_t x) { return static_cast<double>(x >> 11) * 0x1.0p-53; }

class Generator {
 public:
  Generator() = default;
  explicit Generator(uint64_t seed, uint64_t counter = 0) : seed_(seed), counter_(counter) {}

  uint64_t seed() const { return seed_; }
  uint64_t counter() const { return counter_; }
  void set_state(uint64_t seed, uint64_t counter) { seed_ = seed; counter_ = counter; }

  uint64_t next_u64() { return hash_counter(seed_, counter_++); }
  double uniform() { return u64_to_unit(next_u64()); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Uniform integer in [lo, hi). The modulo bias is below 2^-40 for ranges < 2^24.
  int64_t randint(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(next_u64() % static_cast<uint64_t>(hi - lo));
  }
  // Standard normal (Box-Muller on two draws).
  double normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }
  // Reserves n counters for a parallel draw: element i uses hash_counter(seed(), start + i).
  uint64_t reserve(uint64_t n) {
    uint64_t start = counter_ + slice_index_ * n;
    counter_ += n * slice_count_;
    return start;
  }
  // Data-parallel training: this process holds slice `index` of `count` equal slices of a
  // batch, and every tensor that reserves counters has the batch as its leading
  // dimension. reserve(n) then gives these n elements the counters the whole batch's
  // draw would give them, and moves past the whole batch: the draws (dropout masks)
  // and the state are those of one process computing the whole batch.
  void set_batch_slice(uint64_t index, uint64_t count) {
    slice_index_ = index;
    slice_count_ = count;
  }
  // An independent child stream (for per-example generators).
  Generator fork(uint64_t stream) const { return Generator(hash_counter(seed_ ^ 0x5EED5EEDull, stream)); }

 private:
  uint64_t seed_ = 0;
  uint64_t counter_ = 0;
  uint64_t slice_index_ = 0, slice_count_ = 1;
};

}  // namespace seqmix
