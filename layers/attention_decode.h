// One decoding step of causal softmax attention for one head, against its KV cache
// (docs/mixers.md#attention, recurrent form). The fused kernel makes a single pass over the
// cache: scores, running maximum, exp-sum and weighted sum of values block by block (the
// online softmax of the parallel kernel), with no temporaries beyond a block of scores on
// the stack. The naive twin (three passes, plain loops) is the tests' oracle.
#pragma once

#include <cstdint>

namespace seqmix {

// The decode cache stores keys in tiles of kDecodeKeyTile keys, each tile a (dh x 16)
// matrix: element e of key j sits at key_tile_offset(j, e, dh). The scores of one tile
// are then dh vector multiply-adds (a broadcast q_e times 16 keys' e-th elements) with no
// horizontal sums; row-major keys need one horizontal sum per key, which cost more than
// the products at dh = 64. Values stay row-major: their weighted sum runs along a row.
inline constexpr int64_t kDecodeKeyTile = 16;
inline int64_t key_tile_offset(int64_t j, int64_t e, int64_t dh) {
  return ((j / kDecodeKeyTile) * dh + e) * kDecodeKeyTile + j % kDecodeKeyTile;
}

// out: (dh) = sum_{j < n} softmax_j(scale q . k_j) v_j; q: (dh); Kt: the keys in tiles,
// ceil(n / 16) tiles of (dh x 16), all 16 keys of the last tile readable (the ones past n
// are read and ignored: keep them finite); V: (n, dh) row-major. n >= 1. out may not
// alias the inputs.
void attention_decode_head(float* out, const float* q, const float* Kt, const float* V, int64_t n, int64_t dh,
                           float scale);
void attention_decode_head(double* out, const double* q, const double* Kt, const double* V, int64_t n, int64_t dh,
                           double scale);

// The same in three plain passes (scores, maximum and exp-sum, weighted sum), in double,
// from row-major keys K: (n, dh).
void attention_decode_head_naive(float* out, const float* q, const float* K, const float* V, int64_t n, int64_t dh,
                                 float scale);
void attention_decode_head_naive(double* out, const double* q, const double* K, const double* V, int64_t n,
                                 int64_t dh, double scale);

}  // namespace seqmix
