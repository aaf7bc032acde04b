#include "tests/support/mixer_spec.h"

#include <cmath>
#include <stdexcept>

namespace seqmix::testing {

std::vector<std::pair<std::string, Shape>> spec_mixer_parameters(const MixerOptions& opt, int64_t D) {
  const std::string& type = opt.type;
  if (type == "attention")
    return {{"Wqkv.weight", {3 * D, D}}, {"Wqkv.bias", {3 * D}}, {"out_proj.weight", {D, D}}, {"out_proj.bias", {D}}};
  if (type == "linear_attention")
    return {{"q_proj.weight", {D, D}}, {"q_proj.bias", {D}},   {"k_proj.weight", {D, D}},   {"k_proj.bias", {D}},
            {"v_proj.weight", {D, D}}, {"v_proj.bias", {D}},   {"out_proj.weight", {D, D}}, {"out_proj.bias", {D}}};
  if (type == "gla") {
    const GlaOptions& g = opt.gla;
    // docs/mixers.md#gla: Dk = D * expand_k, Dv = D * expand_v (whole numbers; the config checks that).
    const int64_t Dk = std::llround(static_cast<double>(D) * g.expand_k);
    const int64_t Dv = std::llround(static_cast<double>(D) * g.expand_v);
    const int64_t r = g.gate_low_rank_dim, dv = Dv / g.num_heads;
    return {{"q_proj.weight", {Dk, D}},    {"k_proj.weight", {Dk, D}},    {"v_proj.weight", {Dv, D}},
            {"g_proj.weight", {Dv, D}},    {"gk_proj.0.weight", {r, D}},  {"gk_proj.1.weight", {Dk, r}},
            {"gk_proj.1.bias", {Dk}},      {"g_norm.weight", {dv}},       {"o_proj.weight", {D, Dv}}};
  }
  if (type == "h3") {
    const int64_t N = opt.h3.d_state, H = D / opt.h3.head_dim;
    return {{"q_proj.weight", {D, D}},         {"q_proj.bias", {D}},          {"k_proj.weight", {D, D}},
            {"k_proj.bias", {D}},              {"v_proj.weight", {D, D}},     {"v_proj.bias", {D}},
            {"ssm_shift.B", {D, N}},           {"ssm_shift.C", {D, N}},       {"ssm_shift.D", {D}},
            {"ssm_diag.log_dt", {H}},          {"ssm_diag.inv_A_real", {H, N / 2}},
            {"ssm_diag.A_imag", {H, N / 2}},   {"ssm_diag.B", {H, N / 2, 2}}, {"ssm_diag.C", {H, N / 2, 2}},
            {"ssm_diag.D", {H}},               {"out_proj.weight", {D, D}},   {"out_proj.bias", {D}}};
  }
  if (type == "mamba") {
    const MambaOptions& m = opt.mamba;
    const int64_t E = m.expand * D, N = m.d_state, K = m.d_conv;
    const int64_t R = m.dt_rank > 0 ? m.dt_rank : (D + 15) / 16;  // auto = ceil(D / 16)
    return {{"in_proj.weight", {2 * E, D}}, {"conv1d.weight", {E, 1, K}}, {"conv1d.bias", {E}},
            {"x_proj.weight", {R + 2 * N, E}}, {"dt_proj.weight", {E, R}}, {"dt_proj.bias", {E}},
            {"A_log", {E, N}}, {"D", {E}}, {"out_proj.weight", {D, E}}};
  }
  throw std::invalid_argument("spec_mixer_parameters: no documented shapes written for mixer '" + type + "'");
}

int64_t spec_state_size(const MixerOptions& opt, int64_t D, int64_t t) {
  const std::string& type = opt.type;
  if (type == "attention") return 2 * D * t;
  if (type == "linear_attention") {
    const int64_t H = opt.linear_attention.num_heads, d = D / H;
    return H * (d * d + d);
  }
  if (type == "gla") {
    const int64_t H = opt.gla.num_heads;
    const int64_t dk = std::llround(static_cast<double>(D) * opt.gla.expand_k) / H;
    const int64_t dv = std::llround(static_cast<double>(D) * opt.gla.expand_v) / H;
    return H * dk * dv;
  }
  if (type == "h3") return D * (opt.h3.d_state - 1) + D * opt.h3.head_dim * opt.h3.d_state;
  if (type == "mamba") {
    const int64_t E = opt.mamba.expand * D;
    return E * (opt.mamba.d_conv - 1) + E * opt.mamba.d_state;
  }
  throw std::invalid_argument("spec_state_size: no documented state size written for mixer '" + type + "'");
}

MixerOptions small_mixer_options(const std::string& type) {
  MixerOptions m;
  m.type = type;
  if (type == "attention") {
    m.attention.num_heads = 2;
  } else if (type == "linear_attention") {
    m.linear_attention.num_heads = 2;
  } else if (type == "gla") {
    m.gla.num_heads = 2;
    m.gla.gate_low_rank_dim = 4;
  } else if (type == "h3") {
    m.h3.d_state = 4;
    m.h3.head_dim = 2;
  } else if (type == "mamba") {
    m.mamba.d_state = 4;
  } else {
    throw std::invalid_argument("small_mixer_options: no test instance written for mixer '" + type + "'");
  }
  return m;
}

}  // namespace seqmix::testing
