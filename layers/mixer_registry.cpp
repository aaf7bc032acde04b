// One row per mixer. The option keys and defaults are those of layers/options.h.
#include "layers/mixer_registry.h"

#include <stdexcept>

#include "layers/attention.h"
#include "layers/gla.h"
#include "layers/h3.h"
#include "layers/linear_attention.h"
#include "layers/mamba.h"

namespace seqmix {

namespace {

// The row's functions for a layer class L whose options live in MixerOptions::*member.
template <class Layer, auto member>
MixerEntry row(std::string name, std::string summary, std::vector<MixerOption> options) {
  MixerEntry e;
  e.name = std::move(name);
  e.summary = std::move(summary);
  e.options = std::move(options);
  e.check = [](const MixerOptions& o, int64_t d_model, OptionCheck& check) { check_options(o.*member, d_model, check); };
  e.make = [](const MixerOptions& o, int64_t d_model, const LayerInit& init) -> std::unique_ptr<Mixer> {
    return std::make_unique<Layer>(d_model, o.*member, init);
  };
  e.state_size = [](const MixerOptions& o, int64_t d_model, int64_t t) { return state_size(o.*member, d_model, t); };
  return e;
}

std::vector<MixerEntry> build() {
  using M = MixerOptions;
  std::vector<MixerEntry> r;
  r.push_back(row<AttentionMixer, &M::attention>(
      "attention", "Causal multi-head softmax attention with a KV cache",
      {{"num_heads", "heads H, dividing d_model", [](M& m) -> OptionRef { return &m.attention.num_heads; }},
       {"dropout", "dropout on the attention probabilities, in [0, 1)",
        [](M& m) -> OptionRef { return &m.attention.dropout; }}}));
  r.push_back(row<LinearAttentionMixer, &M::linear_attention>(
      "linear_attention", "Linear attention with the feature map elu + 1 (Katharopoulos et al. 2020)",
      {{"num_heads", "heads H, dividing d_model", [](M& m) -> OptionRef { return &m.linear_attention.num_heads; }},
       {"eps", "added to the normaliser, > 0", [](M& m) -> OptionRef { return &m.linear_attention.eps; }}}));
  r.push_back(row<GlaMixer, &M::gla>(
      "gla", "Gated linear attention (Yang et al. 2023, as flash-linear-attention)",
      {{"num_heads", "heads H, dividing the key and value widths", [](M& m) -> OptionRef { return &m.gla.num_heads; }},
       {"expand_k", "key width Dk = d_model * expand_k, a whole number", [](M& m) -> OptionRef { return &m.gla.expand_k; }},
       {"expand_v", "value width Dv = d_model * expand_v, a whole number",
        [](M& m) -> OptionRef { return &m.gla.expand_v; }},
       {"gate_low_rank_dim", "rank r of the gate projection, >= 1",
        [](M& m) -> OptionRef { return &m.gla.gate_low_rank_dim; }},
       {"gate_logit_normalizer", "divides the log-sigmoid gate, > 0",
        [](M& m) -> OptionRef { return &m.gla.gate_logit_normalizer; }},
       {"norm_eps", "eps of the per-head output rmsnorm, > 0", [](M& m) -> OptionRef { return &m.gla.norm_eps; }}}));
  r.push_back(row<H3Mixer, &M::h3>(
      "h3", "Hungry Hungry Hippos: shift SSM and diagonal SSM (Fu, Dao et al. 2022)",
      {{"d_state", "state size N, even (N/2 complex modes)", [](M& m) -> OptionRef { return &m.h3.d_state; }},
       {"head_dim", "channels per head, dividing d_model", [](M& m) -> OptionRef { return &m.h3.head_dim; }}}));
  r.push_back(row<MambaMixer, &M::mamba>(
      "mamba", "Selective SSM (Gu and Dao 2023, mamba_simple)",
      {{"d_state", "state size N per channel, >= 1", [](M& m) -> OptionRef { return &m.mamba.d_state; }},
       {"d_conv", "width of the causal depthwise convolution, >= 1", [](M& m) -> OptionRef { return &m.mamba.d_conv; }},
       {"expand", "inner width E = expand * d_model, expand >= 1", [](M& m) -> OptionRef { return &m.mamba.expand; }},
       {"dt_rank", "rank R of the step-size projection, or auto = ceil(d_model / 16)",
        [](M& m) -> OptionRef { return AutoInt{&m.mamba.dt_rank}; }},
       {"dt_min", "smallest initial step size, > 0 and < dt_max", [](M& m) -> OptionRef { return &m.mamba.dt_min; }},
       {"dt_max", "largest initial step size", [](M& m) -> OptionRef { return &m.mamba.dt_max; }},
       {"dt_init_floor", "floor of the initial step sizes, >= 0",
        [](M& m) -> OptionRef { return &m.mamba.dt_init_floor; }}}));
  return r;
}

}  // namespace

const std::vector<MixerEntry>& mixer_registry() {
  static const std::vector<MixerEntry> rows = build();
  return rows;
}

const std::vector<std::string>& mixer_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const MixerEntry& e : mixer_registry()) n.push_back(e.name);
    return n;
  }();
  return names;
}

const MixerEntry* find_mixer(const std::string& type) {
  for (const MixerEntry& e : mixer_registry())
    if (e.name == type) return &e;
  return nullptr;
}

const MixerEntry& mixer_entry(const std::string& type) {
  if (const MixerEntry* e = find_mixer(type)) return *e;
  std::string list;
  for (const std::string& n : mixer_names()) list += (list.empty() ? "" : ", ") + n;
  throw std::invalid_argument("mixer type '" + type + "' is not one of " + list);
}

}  // namespace seqmix
