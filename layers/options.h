// Plain option structs for the language model and its mixers (docs/model.md, docs/mixers.md).
// Defaults are the documented ones (docs/model.md, docs/mixers.md). train/config.* fills them from YAML; layers never read files.
#pragma once

#include <cstdint>
#include <string>

namespace seqmix {

struct AttentionOptions {
  int64_t num_heads = 1;
  double dropout = 0.0;  // on attention probabilities
};

struct LinearAttentionOptions {
  int64_t num_heads = 1;
  double eps = 1e-6;
};

struct GlaOptions {
  int64_t num_heads = 4;
  double expand_k = 0.5;
  double expand_v = 1.0;
  int64_t gate_low_rank_dim = 16;
  double gate_logit_normalizer = 16.0;
  double norm_eps = 1e-5;
};

struct H3Options {
  int64_t d_state = 64;  // even
  int64_t head_dim = 1;
};

struct MambaOptions {
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0 means "auto" = ceil(d_model / 16)
  double dt_min = 0.001;
  double dt_max = 0.1;
  double dt_init_floor = 1e-4;
};

// Exactly one of the option blocks is used, chosen by type.
struct MixerOptions {
  std::string type = "attention";  // attention | linear_attention | gla | h3 | mamba
  AttentionOptions attention;
  LinearAttentionOptions linear_attention;
  GlaOptions gla;
  H3Options h3;
  MambaOptions mamba;
};

struct ModelOptions {
  int64_t vocab_size = 8192;
  int64_t d_model = 128;
  int64_t n_layers = 2;
  std::string norm = "layernorm";  // layernorm | rmsnorm
  std::string mlp = "none";        // none | gelu
  int64_t max_position_embeddings = 0;  // 0: no learned positions
  bool tie_embeddings = true;
  double dropout = 0.0;
  MixerOptions mixer;
};

}  // namespace seqmix
