#include "train/memory_estimate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace seqmix {

namespace {

using ld = long double;

ld norm_params(const ModelOptions& m) { return m.norm == "layernorm" ? 2.0L * m.d_model : ld(m.d_model); }

// Per (batch row, position): the floats one layer keeps between forward and
// backward. Rough multiples of the layer's widths (inputs and outputs of each
// projection, norms, residuals); good to a factor of two, which is all a
// refusal of impossible configs needs.
ld layer_activation_floats(const ModelOptions& m) {
  const ld D = m.d_model;
  const MixerOptions& x = m.mixer;
  ld mixer = 0;
  if (x.type == "attention") mixer = 8 * D + 2.0L * x.attention.num_heads;
  else if (x.type == "linear_attention") mixer = 10 * D;
  else if (x.type == "gla") mixer = 6 * D * x.gla.expand_v + 4 * D * x.gla.expand_k + 2.0L * x.gla.gate_low_rank_dim + D;
  else if (x.type == "h3") mixer = 12 * D;
  else if (x.type == "mamba") mixer = D * x.mamba.expand * 8 + 2.0L * x.mamba.d_state + D;
  else mixer = 10 * D;
  const ld mlp = m.mlp == "gelu" ? 10 * D : 0;
  return mixer + mlp + 4 * D;  // norms and residuals
}

}  // namespace

std::string format_gib(long double bytes) {
  char buf[64];
  const long double g = bytes / (1024.0L * 1024 * 1024);
  std::snprintf(buf, sizeof buf, "%.3Lg", g);
  return buf;
}

long double mixer_parameter_count(const ModelOptions& m) {
  const ld D = m.d_model;
  const MixerOptions& x = m.mixer;
  if (x.type == "attention") return 3 * D * D + 3 * D + D * D + D;  // Wqkv, out_proj
  if (x.type == "linear_attention") return 4 * (D * D + D);        // q, k, v, out with biases
  if (x.type == "gla") {
    // As the layer: int(D * expand), truncated.
    const ld Dk = std::floor(D * x.gla.expand_k), Dv = std::floor(D * x.gla.expand_v);
    const ld r = x.gla.gate_low_rank_dim, H = x.gla.num_heads > 0 ? ld(x.gla.num_heads) : 1.0L;
    return 2 * Dk * D + 2 * Dv * D + r * D + Dk * r + Dk + Dv / H + D * Dv;
  }
  if (x.type == "h3") {
    const ld N = x.h3.d_state, H = x.h3.head_dim > 0 ? std::floor(D / x.h3.head_dim) : D;
    return 4 * (D * D + D) + (2 * D * N + D) + (2 * H + 3 * H * N);  // projections, ssm_shift, ssm_diag
  }
  if (x.type == "mamba") {
    const ld E = ld(x.mamba.expand) * D, N = x.mamba.d_state, K = x.mamba.d_conv;
    const ld R = x.mamba.dt_rank > 0 ? ld(x.mamba.dt_rank) : std::ceil(D / 16);
    return 2 * E * D + (E * K + E) + (R + 2 * N) * E + (E * R + E) + E * N + E + D * E;
  }
  return 0;
}

long double model_parameter_count(const ModelOptions& m) {
  const ld D = m.d_model, V = m.vocab_size;
  ld n = V * D + ld(m.max_position_embeddings > 0 ? m.max_position_embeddings : 0) * D;
  ld layer = norm_params(m) + mixer_parameter_count(m);
  if (m.mlp == "gelu") layer += norm_params(m) + (4 * D * D + 4 * D) + (4 * D * D + D);
  n += ld(m.n_layers) * layer + norm_params(m);
  if (!m.tie_embeddings) n += V * D;
  return n;
}

MemoryEstimate estimate_memory(const Config& c, bool training, int64_t ranks) {
  MemoryEstimate e;
  const ModelOptions& m = c.model;
  e.parameters = model_parameter_count(m);
  const ld f = 4;  // float32
  e.weights_bytes = e.parameters * f * (training ? 2 : 1);
  e.optimizer_bytes = training ? e.parameters * f * 2 : 0;
  const bool text = c.data.kind == "text";
  const ld L = text ? c.data.text.seq_len : c.data.recall.seq_len;
  const ld B = ld(c.training.batch_size) / ld(std::max<int64_t>(1, ranks));  // this process's rows
  // One step: every layer's saved activations, plus logits, their softmax and gradient.
  const ld per_token = (training ? ld(m.n_layers) * layer_activation_floats(m) : 2 * layer_activation_floats(m)) +
                       3.0L * m.vocab_size;
  e.activation_bytes = B * L * per_token * f;
  if (!text) {
    // Inputs and labels (int32) of every pre-generated example.
    const ld examples = ld(c.data.recall.num_train_examples) + ld(c.data.recall.num_test_examples);
    e.data_bytes = examples * L * 2 * 4;
  }
  return e;
}

long double machine_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? ld(pages) * ld(page) : 0;
}

void check_memory_fits(const Config& c, bool training, const std::string& what, int64_t ranks) {
  const MemoryEstimate e = estimate_memory(c, training, ranks);
  const ld have = machine_memory_bytes();
  if (have <= 0 || e.total_bytes() <= have) return;
  char params[64];
  std::snprintf(params, sizeof params, "%.4Lg", e.parameters);
  throw std::invalid_argument(what + " needs " + format_gib(e.total_bytes()) + " GiB (" + params + " parameters: weights " +
                              format_gib(e.weights_bytes) + " GiB, Adam moments " + format_gib(e.optimizer_bytes) +
                              " GiB, activations of one step " + format_gib(e.activation_bytes) + " GiB, data " +
                              format_gib(e.data_bytes) + " GiB), this machine has " + format_gib(have) +
                              " GiB; reduce model.d_model, model.n_layers, training.batch_size or the sequence length");
}

}  // namespace seqmix
