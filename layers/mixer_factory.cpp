// The factory and the option rules by type: lookups in the mixer registry.
#include "layers/mixer_factory.h"

#include "layers/mixer_registry.h"

namespace seqmix {

void check_mixer_options(const MixerOptions& opt, int64_t d_model, OptionCheck& check) {
  mixer_entry(opt.type).check(opt, d_model, check);
}

std::unique_ptr<Mixer> make_mixer(const MixerOptions& opt, int64_t d_model, const LayerInit& init) {
  return mixer_entry(opt.type).make(opt, d_model, init);
}

}  // namespace seqmix
