#include "tests/support/mixer_spec.h"

#include <cmath>
#include <stdexcept>

#include "layers/mamba.h"
#include "tests/support/case_names.h"
#include "tests/support/reference_attention.h"
#include "tests/support/reference_gla.h"
#include "tests/support/reference_h3.h"
#include "tests/support/reference_linear_attention.h"
#include "tests/support/reference_mamba.h"

namespace seqmix::testing {

namespace {

MixerOptions typed(const std::string& type) {
  MixerOptions m;
  m.type = type;
  return m;
}

// ---- attention (docs/mixers.md#attention) ----

MixerOptions attention(int64_t heads, double dropout = 0.0) {
  MixerOptions m = typed("attention");
  m.attention = {heads, dropout};
  return m;
}

MixerTestSpec attention_row() {
  MixerTestSpec s;
  s.name = "attention";
  s.small = attention(2);
  s.parameters = [](const MixerOptions&, int64_t D) -> std::vector<std::pair<std::string, Shape>> {
    return {{"Wqkv.weight", {3 * D, D}}, {"Wqkv.bias", {3 * D}}, {"out_proj.weight", {D, D}}, {"out_proj.bias", {D}}};
  };
  s.state_size = [](const MixerOptions&, int64_t D, int64_t t) { return 2 * D * t; };
  s.reference_forward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x) {
    return reference_attention_forward(p, o.attention, x);
  };
  s.reference_backward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x, const Tensor& dy) {
    return reference_attention_backward(p, o.attention, x, dy);
  };
  // One head, several, dh = 4 and 6; dropout (the gradient check draws the same mask on
  // every evaluation).
  struct C { int64_t B, L, H; double drop; };
  for (C c : {C{1, 1, 1, 0.0}, C{3, 1, 3, 0.0}, C{1, 7, 2, 0.0}, C{3, 7, 3, 0.0}, C{1, 67, 3, 0.0}, C{3, 67, 2, 0.0},
              C{1, 7, 1, 0.5}, C{2, 67, 2, 0.3}})
    s.variants.push_back({case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"H", double(c.H)}, {"drop", c.drop}}),
                          attention(c.H, c.drop), 12, c.B, c.L});
  s.float32.options = attention(4);
  return s;
}

// ---- linear attention (docs/mixers.md#linear_attention) ----

MixerOptions linear_attention(int64_t heads) {
  MixerOptions m = typed("linear_attention");
  m.linear_attention.num_heads = heads;
  return m;
}

MixerTestSpec linear_attention_row() {
  MixerTestSpec s;
  s.name = "linear_attention";
  s.small = linear_attention(2);
  s.parameters = [](const MixerOptions&, int64_t D) -> std::vector<std::pair<std::string, Shape>> {
    return {{"q_proj.weight", {D, D}}, {"q_proj.bias", {D}},   {"k_proj.weight", {D, D}},   {"k_proj.bias", {D}},
            {"v_proj.weight", {D, D}}, {"v_proj.bias", {D}},   {"out_proj.weight", {D, D}}, {"out_proj.bias", {D}}};
  };
  s.state_size = [](const MixerOptions& o, int64_t D, int64_t) {
    const int64_t H = o.linear_attention.num_heads, d = D / H;
    return H * (d * d + d);
  };
  s.reference_forward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x) {
    return reference_linear_attention_forward(p, o.linear_attention, x);
  };
  s.reference_backward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x, const Tensor& dy) {
    return reference_linear_attention_backward(p, o.linear_attention, x, dy);
  };
  struct C { int64_t B, L, H; };
  for (C c : {C{1, 1, 1}, C{3, 1, 3}, C{1, 7, 2}, C{3, 7, 3}, C{1, 67, 3}, C{3, 67, 2}})
    s.variants.push_back(
        {case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"H", double(c.H)}}), linear_attention(c.H), 12, c.B, c.L});
  s.float32.options = linear_attention(4);
  return s;
}

// ---- GLA (docs/mixers.md#gla) ----

MixerOptions gla(int64_t heads, int64_t rank, double normalizer) {
  MixerOptions m = typed("gla");
  m.gla.num_heads = heads;
  m.gla.gate_low_rank_dim = rank;
  m.gla.gate_logit_normalizer = normalizer;
  return m;
}

MixerTestSpec gla_row() {
  MixerTestSpec s;
  s.name = "gla";
  s.small = gla(2, 4, GlaOptions{}.gate_logit_normalizer);
  s.parameters = [](const MixerOptions& opt, int64_t D) -> std::vector<std::pair<std::string, Shape>> {
    const GlaOptions& g = opt.gla;
    // Dk = D * expand_k, Dv = D * expand_v (whole numbers; the options check says so).
    const int64_t Dk = std::llround(static_cast<double>(D) * g.expand_k);
    const int64_t Dv = std::llround(static_cast<double>(D) * g.expand_v);
    const int64_t r = g.gate_low_rank_dim, dv = Dv / g.num_heads;
    return {{"q_proj.weight", {Dk, D}},    {"k_proj.weight", {Dk, D}},    {"v_proj.weight", {Dv, D}},
            {"g_proj.weight", {Dv, D}},    {"gk_proj.0.weight", {r, D}},  {"gk_proj.1.weight", {Dk, r}},
            {"gk_proj.1.bias", {Dk}},      {"g_norm.weight", {dv}},       {"o_proj.weight", {D, Dv}}};
  };
  s.state_size = [](const MixerOptions& o, int64_t D, int64_t) {
    const int64_t H = o.gla.num_heads;
    const int64_t dk = std::llround(static_cast<double>(D) * o.gla.expand_k) / H;
    const int64_t dv = std::llround(static_cast<double>(D) * o.gla.expand_v) / H;
    return H * dk * dv;
  };
  s.reference_forward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x) {
    return reference_gla_forward(p, o.gla, x);
  };
  s.reference_backward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x, const Tensor& dy) {
    return reference_gla_backward(p, o.gla, x, dy);
  };
  // D 12 with 3 heads: dk 2, dv 4, rank 3; normaliser 2, so the decays matter over 67 steps.
  s.variants.push_back({"B2_L7_small", s.small, kSmallDModel, 2, 7});
  for (int64_t B : {1, 3})
    for (int64_t L : {1, 7, 67})
      s.variants.push_back({case_name({{"B", double(B)}, {"L", double(L)}, {"H", 3}, {"r", 3}, {"norm", 2}}),
                            gla(3, 3, 2), 12, B, L});
  // D 48 with 4 heads: dk 6, dv 12.
  s.float32 = {gla(4, 8, 4), 48};
  return s;
}

// ---- H3 (docs/mixers.md#h3) ----

MixerOptions h3(int64_t d_state, int64_t head_dim) {
  MixerOptions m = typed("h3");
  m.h3 = {d_state, head_dim};
  return m;
}

MixerTestSpec h3_row() {
  MixerTestSpec s;
  s.name = "h3";
  s.small = h3(4, 2);
  s.parameters = [](const MixerOptions& opt, int64_t D) -> std::vector<std::pair<std::string, Shape>> {
    const int64_t N = opt.h3.d_state, H = D / opt.h3.head_dim;
    return {{"q_proj.weight", {D, D}},         {"q_proj.bias", {D}},          {"k_proj.weight", {D, D}},
            {"k_proj.bias", {D}},              {"v_proj.weight", {D, D}},     {"v_proj.bias", {D}},
            {"ssm_shift.B", {D, N}},           {"ssm_shift.C", {D, N}},       {"ssm_shift.D", {D}},
            {"ssm_diag.log_dt", {H}},          {"ssm_diag.inv_A_real", {H, N / 2}},
            {"ssm_diag.A_imag", {H, N / 2}},   {"ssm_diag.B", {H, N / 2, 2}}, {"ssm_diag.C", {H, N / 2, 2}},
            {"ssm_diag.D", {H}},               {"out_proj.weight", {D, D}},   {"out_proj.bias", {D}}};
  };
  s.state_size = [](const MixerOptions& o, int64_t D, int64_t) {
    return D * (o.h3.d_state - 1) + D * o.h3.head_dim * o.h3.d_state;
  };
  s.reference_forward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x) {
    return reference_h3_forward(p, o.h3, x);
  };
  s.reference_backward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x, const Tensor& dy) {
    return reference_h3_backward(p, o.h3, x, dy);
  };
  struct C { int64_t B, L, D, N, dh; };
  for (C c : {C{1, 1, 8, 8, 1}, C{3, 1, 8, 4, 2}, C{1, 7, 6, 8, 1}, C{3, 7, 8, 8, 2}, C{1, 67, 8, 4, 2},
              C{3, 67, 6, 8, 1}, C{3, 67, 8, 8, 2}})
    s.variants.push_back({case_name({{"B", double(c.B)}, {"L", double(c.L)}, {"D", double(c.D)}, {"N", double(c.N)},
                                     {"dh", double(c.dh)}}),
                          h3(c.N, c.dh), c.D, c.B, c.L});
  // The documented d_state 64: modes up to pi * 31 in the recurrent and twin comparisons.
  s.variants.push_back({"B1_L1_D16_N64_dh1", h3(64, 1), 16, 1, 1});
  s.grad_atol = 1e-7;  // the shift and diagonal SSMs' gradients are exact in float64
  s.float32.options = h3(16, 2);
  return s;
}

// ---- Mamba (docs/mixers.md#mamba) ----

MixerOptions mamba(int64_t d_state, int64_t d_conv = 4, int64_t dt_rank = 0) {
  MixerOptions m = typed("mamba");
  m.mamba.d_state = d_state;
  m.mamba.d_conv = d_conv;
  m.mamba.dt_rank = dt_rank;
  return m;
}

MixerTestSpec mamba_row() {
  MixerTestSpec s;
  s.name = "mamba";
  s.small = mamba(4);
  s.parameters = [](const MixerOptions& opt, int64_t D) -> std::vector<std::pair<std::string, Shape>> {
    const MambaOptions& m = opt.mamba;
    const int64_t E = m.expand * D, N = m.d_state, K = m.d_conv;
    const int64_t R = m.dt_rank > 0 ? m.dt_rank : (D + 15) / 16;  // auto = ceil(D / 16)
    return {{"in_proj.weight", {2 * E, D}}, {"conv1d.weight", {E, 1, K}}, {"conv1d.bias", {E}},
            {"x_proj.weight", {R + 2 * N, E}}, {"dt_proj.weight", {E, R}}, {"dt_proj.bias", {E}},
            {"A_log", {E, N}}, {"D", {E}}, {"out_proj.weight", {D, E}}};
  };
  s.state_size = [](const MixerOptions& o, int64_t D, int64_t) {
    const int64_t E = o.mamba.expand * D;
    return E * (o.mamba.d_conv - 1) + E * o.mamba.d_state;
  };
  s.reference_forward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x) {
    return reference_mamba_forward(p, o.mamba, x);
  };
  s.reference_backward = [](const NamedTensors& p, const MixerOptions& o, const Tensor& x, const Tensor& dy) {
    return reference_mamba_backward(p, o.mamba, x, dy);
  };
  for (int64_t B : {1, 3})
    for (int64_t L : {1, 7, 67})
      s.variants.push_back({case_name({{"B", double(B)}, {"L", double(L)}, {"N", 4}}), mamba(4), kSmallDModel, B, L});
  // D 12 (E 24), N 3, d_conv 3, dt_rank 3, scan chunks of 5 steps over 23; D 5, N 2,
  // d_conv 1 (no convolution history), chunks of 4.
  s.variants.push_back({"B2_L23_D12_N3_conv3_R3_chunk5", mamba(3, 3, 3), 12, 2, 23,
                        [](Mixer& m) { dynamic_cast<MambaMixer&>(m).set_scan_chunk(5); }});
  s.variants.push_back({"B1_L9_D5_N2_conv1_chunk4", mamba(2, 1), 5, 1, 9,
                        [](Mixer& m) { dynamic_cast<MambaMixer&>(m).set_scan_chunk(4); }});
  // D 37: E 74, two channel groups of the scan with a partial sub-block; R 3, N 16.
  s.float32 = {mamba(16), 37};
  return s;
}

}  // namespace

const std::vector<MixerTestSpec>& mixer_test_specs() {
  static const std::vector<MixerTestSpec> rows = {attention_row(), linear_attention_row(), gla_row(), h3_row(),
                                                  mamba_row()};
  return rows;
}

const MixerTestSpec* find_mixer_test_spec(const std::string& type) {
  for (const MixerTestSpec& s : mixer_test_specs())
    if (s.name == type) return &s;
  return nullptr;
}

const MixerTestSpec& mixer_test_spec(const std::string& type) {
  if (const MixerTestSpec* s = find_mixer_test_spec(type)) return *s;
  throw std::invalid_argument("mixer '" + type +
                              "' has no test row: add one to mixer_test_specs() in tests/support/mixer_spec.cpp "
                              "(its documented parameters, state size, reference twin and test options)");
}

std::vector<std::pair<std::string, Shape>> spec_mixer_parameters(const MixerOptions& opt, int64_t d_model) {
  return mixer_test_spec(opt.type).parameters(opt, d_model);
}

int64_t spec_state_size(const MixerOptions& opt, int64_t d_model, int64_t t) {
  return mixer_test_spec(opt.type).state_size(opt, d_model, t);
}

MixerOptions small_mixer_options(const std::string& type) { return mixer_test_spec(type).small; }

}  // namespace seqmix::testing
