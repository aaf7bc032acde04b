#include "tests/support/reference_mixers.h"

#include <stdexcept>

#include "layers/gla.h"
#include "layers/mamba.h"
#include "tests/support/mixer_testing.h"
#include "tests/support/reference_attention.h"
#include "tests/support/reference_gla.h"
#include "tests/support/reference_h3.h"
#include "tests/support/reference_linear_attention.h"
#include "tests/support/reference_mamba.h"

namespace seqmix::testing {

Tensor reference_mixer_forward(const Mixer& layer, const MixerOptions& opt, const Tensor& x) {
  const NamedTensors p = params_of(layer);
  const std::string& type = opt.type;
  if (type == "attention")
    return reference_attention_layer(x, p[0].second, p[1].second, p[2].second, p[3].second, opt.attention.num_heads);
  if (type == "linear_attention")
    return reference_linear_attention_layer(x, p[0].second, p[1].second, p[2].second, p[3].second, p[4].second,
                                            p[5].second, p[6].second, p[7].second, opt.linear_attention.num_heads,
                                            opt.linear_attention.eps);
  if (type == "gla") return reference_gla_layer(dynamic_cast<const GlaMixer&>(layer), x);
  if (type == "h3") return ref_h3_layer_forward(x, p, opt.h3.head_dim);
  if (type == "mamba") {
    const int64_t B = x.size(0), L = x.size(1);
    const Vec xs(x.f64(), x.f64() + x.numel());
    const Vec y = ref_mamba_forward(ref_params_from(dynamic_cast<const MambaMixer&>(layer)), xs, B, L);
    return Tensor::from_vector(x.shape(), y);
  }
  throw std::invalid_argument("reference_mixer_forward: no reference twin for mixer '" + type + "'");
}

}  // namespace seqmix::testing
