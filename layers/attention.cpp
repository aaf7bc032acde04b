// Causal multi-head softmax attention (docs/mixers.md#attention): parameters, the parallel form
// and the KV-cache recurrent form.
#include "layers/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/attention_decode.h"
#include "layers/attention_kernel.h"

namespace seqmix {

void check_options(const AttentionOptions& opt, int64_t d_model, OptionCheck& check) {
  const bool d_ok = check.at_least("d_model", d_model, 1);
  if (check.at_least("num_heads", opt.num_heads, 1) && d_ok)
    check.divides({"num_heads", "d_model"}, check.name("d_model"), d_model, "num_heads", opt.num_heads,
                  "each head takes d_model / num_heads channels");
  check.in_range("dropout", opt.dropout, 0, 1);
}

int64_t state_size(const AttentionOptions&, int64_t d_model, int64_t t) { return 2 * d_model * t; }

AttentionMixer::AttentionMixer(int64_t d_model, const AttentionOptions& opt, const LayerInit& init)
    : d_model_(d_model), opt_(opt) {
  OptionCheck check;
  check_options(opt, d_model, check);
  check.throw_if_any("attention");
  const int64_t D = d_model;
  // Draw order: Wqkv.weight, then out_proj.weight (biases are constants).
  wqkv_weight_ = param_normal({3 * D, D}, 0.02, init);
  wqkv_bias_ = param_constant({3 * D}, 0.0, init);
  out_weight_ = param_normal({D, D}, scaled_init_std(init), init);
  out_bias_ = param_constant({D}, 0.0, init);
}

void AttentionMixer::parameters(const std::string& prefix, Parameters& out) const {
  out.push_back({prefix + "Wqkv.weight", wqkv_weight_, kDecay});
  out.push_back({prefix + "Wqkv.bias", wqkv_bias_, kNoDecay});
  out.push_back({prefix + "out_proj.weight", out_weight_, kDecay});
  out.push_back({prefix + "out_proj.bias", out_bias_, kNoDecay});
}

Tensor AttentionMixer::forward(const Tensor& x, bool training, Generator& gen) {
  if (x.ndim() != 3 || x.size(2) != d_model_)
    throw ShapeError("attention: input " + shape_str(x.shape()) + ", expected (B, L, " + std::to_string(d_model_) +
                     ")");
  check_same_dtype("attention", {&x, &wqkv_weight_});
  Tensor qkv = linear(x, wqkv_weight_, wqkv_bias_);
  Tensor o = causal_attention(qkv, opt_.num_heads, training ? opt_.dropout : 0.0, gen);
  return linear(o, out_weight_, out_bias_);
}

std::unique_ptr<MixerState> AttentionMixer::init_state(int64_t batch) const {
  if (batch < 1) throw ShapeError("attention: init_state needs batch >= 1, got " + std::to_string(batch));
  auto s = std::make_unique<AttentionState>();
  s->batch = batch;
  return s;
}

namespace {

// Grows the cache (batch, H, capacity, dh) so that it holds at least `need` tokens,
// doubling, so that a sequence of n steps copies O(n) tokens in all. The capacity stays
// a multiple of the key tile. New memory is left untouched (zeroing it all would fault in
// pages the cache may never use: 64 MB at 16k tokens, ~200 ms on this VM); the step
// zeroes each key tile when its first key is written, since the decode kernel reads
// whole tiles and the unused keys of the last one must be finite.
void reserve_cache(AttentionState& s, int64_t H, int64_t dh, int64_t need, DType dt) {
  if (need <= s.capacity) return;
  int64_t cap = std::max<int64_t>({kDecodeKeyTile, 2 * s.capacity, need});
  cap = (cap + kDecodeKeyTile - 1) / kDecodeKeyTile * kDecodeKeyTile;
  // Keys are tiled (key_tile_offset), values row-major; either way a head's first
  // ceil(t / 16) * 16 tokens are one contiguous run that does not depend on the capacity.
  const int64_t used = (s.t + kDecodeKeyTile - 1) / kDecodeKeyTile * kDecodeKeyTile * dh;
  for (Tensor* c : {&s.k_cache, &s.v_cache}) {
    Tensor grown = Tensor::empty({s.batch, H, cap, dh}, dt);
    if (s.capacity > 0)
      dispatch_float(dt, "attention step", [&](auto tag) {
        using T = decltype(tag);
        for (int64_t bh = 0; bh < s.batch * H; ++bh)
          std::copy_n(c->data<T>() + bh * s.capacity * dh, used, grown.data<T>() + bh * cap * dh);
      });
    *c = grown;
  }
  s.capacity = cap;
}

}  // namespace

Tensor AttentionMixer::step(MixerState& state, const Tensor& x_t) const {
  auto* s = dynamic_cast<AttentionState*>(&state);
  if (!s) throw ShapeError("attention: step was given a state that is not an AttentionState");
  if (x_t.ndim() != 2 || x_t.size(0) != s->batch || x_t.size(1) != d_model_)
    throw ShapeError("attention: step input " + shape_str(x_t.shape()) + ", expected (" + std::to_string(s->batch) +
                     ", " + std::to_string(d_model_) + ")");
  check_same_dtype("attention step", {&x_t, &wqkv_weight_});
  NoGradGuard no_grad;
  const int64_t B = s->batch, D = d_model_, H = opt_.num_heads, dh = D / H, t = s->t;
  Tensor qkv = linear(x_t, wqkv_weight_, wqkv_bias_);  // (B, 3D)
  reserve_cache(*s, H, dh, t + 1, x_t.dtype());
  Tensor o = Tensor::empty({B, D}, x_t.dtype());
  const int64_t cap = s->capacity;
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  dispatch_float(x_t.dtype(), "attention step", [&](auto tag) {
    using T = decltype(tag);
    const T* qkv_p = qkv.data<T>();
    T* kc = s->k_cache.data<T>();
    T* vc = s->v_cache.data<T>();
    T* op = o.data<T>();
#pragma omp parallel for schedule(static) if (B * H * (t + 1) * dh >= (1 << 15))
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* q = qkv_p + b * 3 * D + h * dh;
      T* K = kc + bh * cap * dh;
      T* V = vc + bh * cap * dh;
      if (t % kDecodeKeyTile == 0) std::fill_n(K + key_tile_offset(t, 0, dh), kDecodeKeyTile * dh, T(0));
      for (int64_t e = 0; e < dh; ++e) {
        K[key_tile_offset(t, e, dh)] = qkv_p[b * 3 * D + D + h * dh + e];
        V[t * dh + e] = qkv_p[b * 3 * D + 2 * D + h * dh + e];
      }
      // One pass over this head's cache: scores, running maximum, exp-sum and the
      // weighted values, written straight into the output row.
      attention_decode_head(op + b * D + h * dh, q, K, V, t + 1, dh, static_cast<T>(scale));
    }
  });
  s->t = t + 1;
  return linear(o, out_weight_, out_bias_);
}

}  // namespace seqmix
