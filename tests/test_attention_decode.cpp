// The fused decode step of attention (layers/attention_decode.h) against its naive twin:
// a context of one key, contexts that end inside, at and just past a block of 64 keys and
// a tile of 16, heads whose width is not a multiple of the vector width, float32 and
// float64, scores large enough that the running maximum moves between blocks; and the
// layer's recurrent form, whose cache grows while it is read, against its parallel form.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/ops.h"
#include "core/random.h"
#include "core/tape.h"
#include "layers/attention.h"
#include "layers/attention_decode.h"

using namespace seqmix;

namespace {

template <class T>
struct Head {
  std::vector<T> q, K, Kt, V;
};

// Keys row-major for the twin, and the same keys tiled (a whole last tile, zero past n).
// `spread` scales the entries: scores reach about spread^2 sqrt(dh).
template <class T>
Head<T> random_head(int64_t n, int64_t dh, double spread, uint64_t seed) {
  Generator g(seed);
  Head<T> h;
  auto fill = [&](std::vector<T>& v, int64_t count) {
    v.resize(count);
    for (auto& x : v) x = static_cast<T>(g.uniform(-spread, spread));
  };
  fill(h.q, dh);
  fill(h.K, n * dh);
  fill(h.V, n * dh);
  const int64_t tiles = (n + kDecodeKeyTile - 1) / kDecodeKeyTile;
  h.Kt.assign(tiles * kDecodeKeyTile * dh, T(0));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < dh; ++e) h.Kt[key_tile_offset(j, e, dh)] = h.K[j * dh + e];
  return h;
}

template <class T>
double max_rel_error(int64_t n, int64_t dh, double spread, uint64_t seed) {
  const Head<T> h = random_head<T>(n, dh, spread, seed);
  std::vector<T> got(dh), want(dh);
  const T scale = static_cast<T>(1.0 / std::sqrt(double(dh)));
  attention_decode_head(got.data(), h.q.data(), h.Kt.data(), h.V.data(), n, dh, scale);
  attention_decode_head_naive(want.data(), h.q.data(), h.K.data(), h.V.data(), n, dh, scale);
  // Relative to the largest value entry: the output is a convex combination of value rows
  // and may cancel to near zero (dh = 1), where its own size is no scale.
  double err = 0, top = 1e-30;
  for (T v : h.V) top = std::max(top, std::fabs(double(v)));
  for (int64_t e = 0; e < dh; ++e) err = std::max(err, std::fabs(double(got[e]) - double(want[e])) / top);
  return err;
}

TEST(AttentionDecodeHead, MatchesNaiveTwinAtBlockAndTileBoundaries) {
  for (int64_t n : {1, 2, 15, 16, 17, 63, 64, 65, 128, 130, 1000})
    for (int64_t dh : {1, 3, 16, 17, 64, 100})
      for (double spread : {1.0, 3.0}) {
        const uint64_t seed = uint64_t(n * 1000 + dh);
        // float32: rounding of sums of up to 1000 terms and a 2-ulp exp.
        EXPECT_LT(max_rel_error<float>(n, dh, spread, seed), 2e-6) << "n " << n << " dh " << dh << " spread " << spread;
        EXPECT_LT(max_rel_error<double>(n, dh, spread, seed), 1e-13)
            << "n " << n << " dh " << dh << " spread " << spread;
      }
}

// A peaked first block and a later block with a larger score: the rescaling of what was
// summed against the old maximum must happen (without it the output is wrong by e^gap).
TEST(AttentionDecodeHead, RescalesWhenTheMaximumMovesLate) {
  const int64_t n = 200, dh = 8;
  Head<float> h = random_head<float>(n, dh, 0.1, 5);
  for (int64_t e = 0; e < dh; ++e) {
    h.q[e] = 1.0f;
    h.K[3 * dh + e] = 2.0f;    // block 0: a clear maximum
    h.K[150 * dh + e] = 4.0f;  // block 2: a larger one, e^(2 * 8 / sqrt 8) ~ 285 times the first
  }
  for (int64_t j = 0; j < n; ++j)
    for (int64_t e = 0; e < dh; ++e) h.Kt[key_tile_offset(j, e, dh)] = h.K[j * dh + e];
  std::vector<float> got(dh), want(dh);
  const float scale = 1.0f / std::sqrt(float(dh));
  attention_decode_head(got.data(), h.q.data(), h.Kt.data(), h.V.data(), n, dh, scale);
  attention_decode_head_naive(want.data(), h.q.data(), h.K.data(), h.V.data(), n, dh, scale);
  for (int64_t e = 0; e < dh; ++e) EXPECT_NEAR(got[e], want[e], 1e-6) << e;
}

// The layer's recurrent form against its parallel form over 150 tokens: the cache grows
// (16, 32, 64, 128, 256 tokens) while the kernel reads it, with heads of width 5.
TEST(AttentionDecodeStep, RecurrentMatchesParallelWhileTheCacheGrows) {
  const int64_t B = 2, L = 150, D = 15, H = 3;
  for (DType dt : {DType::f32, DType::f64}) {
    Generator g(21);
    AttentionOptions opt;
    opt.num_heads = H;
    AttentionMixer mixer(D, opt, LayerInit{&g, 2, dt});
    std::vector<double> xv(B * L * D);
    for (auto& v : xv) v = g.uniform(-2, 2);
    Tensor x = Tensor::from_vector({B, L, D}, xv).to(dt);
    Generator drop(0);
    Tensor y;
    {
      NoGradGuard ng;
      y = mixer.forward(x, false, drop);
    }
    auto state = mixer.init_state(B);
    double worst = 0, top = 0;
    for (int64_t t = 0; t < L; ++t) {
      std::vector<double> xtv(B * D);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < D; ++c) xtv[b * D + c] = xv[(b * L + t) * D + c];
      Tensor xt = Tensor::from_vector({B, D}, xtv).to(dt);
      Tensor yt = mixer.step(*state, xt);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t c = 0; c < D; ++c) {
          const double want = y.item((b * L + t) * D + c);
          worst = std::max(worst, std::fabs(yt.item(b * D + c) - want));
          top = std::max(top, std::fabs(want));
        }
    }
    EXPECT_LT(worst, (dt == DType::f32 ? 1e-5 : 1e-12) * top) << dtype_name(dt);
  }
}

}  // namespace
