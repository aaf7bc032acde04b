#include "layers/mixer_factory.h"

#include <stdexcept>

#include "layers/attention.h"
#include "layers/gla.h"
#include "layers/h3.h"
#include "layers/linear_attention.h"
#include "layers/mamba.h"

namespace seqmix {

void check_mixer_options(const MixerOptions& opt, int64_t d_model, OptionCheck& check) {
  if (opt.type == "attention") check_options(opt.attention, d_model, check);
  else if (opt.type == "linear_attention") check_options(opt.linear_attention, d_model, check);
  else if (opt.type == "gla") check_options(opt.gla, d_model, check);
  else if (opt.type == "h3") check_options(opt.h3, d_model, check);
  else if (opt.type == "mamba") check_options(opt.mamba, d_model, check);
}

std::unique_ptr<Mixer> make_mixer(const MixerOptions& opt, int64_t d_model, const LayerInit& init) {
  if (opt.type == "attention") return std::make_unique<AttentionMixer>(d_model, opt.attention, init);
  if (opt.type == "linear_attention") return std::make_unique<LinearAttentionMixer>(d_model, opt.linear_attention, init);
  if (opt.type == "gla") return std::make_unique<GlaMixer>(d_model, opt.gla, init);
  if (opt.type == "h3") return std::make_unique<H3Mixer>(d_model, opt.h3, init);
  if (opt.type == "mamba") return std::make_unique<MambaMixer>(d_model, opt.mamba, init);
  throw std::invalid_argument("mixer type '" + opt.type +
                              "' is not one of attention, linear_attention, gla, h3, mamba");
}

}  // namespace seqmix
