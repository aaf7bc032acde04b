#include "layers/model.h"

#include <stdexcept>

#include "core/ops.h"
#include "core/tape.h"
#include "layers/mixer_factory.h"
#include "layers/mixer_registry.h"

namespace seqmix {

Tensor Norm::operator()(const Tensor& x) const {
  return bias.defined() ? layernorm(x, weight, bias, 1e-5) : rmsnorm(x, weight, 1e-5);
}

Tensor Mlp::operator()(const Tensor& x) const {
  return linear(gelu(linear(x, fc1_weight, fc1_bias)), fc2_weight, fc2_bias);
}

namespace {

Norm make_norm(const std::string& kind, int64_t d, const LayerInit& init) {
  Norm n;
  n.weight = param_constant({d}, 1.0, init);
  if (kind == "layernorm") n.bias = param_constant({d}, 0.0, init);
  return n;
}

void add_norm(const std::string& prefix, const Norm& n, Parameters& out) {
  out.push_back({prefix + ".weight", n.weight, kNoDecay});
  if (n.bias.defined()) out.push_back({prefix + ".bias", n.bias, kNoDecay});
}

}  // namespace

void check_options(const ModelOptions& m, OptionCheck& check) {
  check.at_least("vocab_size", m.vocab_size, 1);
  check.at_least("n_layers", m.n_layers, 1);
  check.one_of("norm", m.norm, {"layernorm", "rmsnorm"});
  check.one_of("mlp", m.mlp, {"none", "gelu"});
  check.at_least("max_position_embeddings", m.max_position_embeddings, 0);
  check.in_range("dropout", m.dropout, 0, 1);
  OptionCheck mixer = check.with_prefix(check.prefix() + "mixer.");
  // The mixer's rules start with d_model's; without a valid type they cannot run.
  if (mixer.one_of("type", m.mixer.type, mixer_names()))
    check_mixer_options(m.mixer, m.d_model, mixer);
  else
    check.at_least("d_model", m.d_model, 1);
}

LanguageModel::LanguageModel(const ModelOptions& opt, const LayerInit& init_in) : opt_(opt), dtype_(init_in.dtype) {
  OptionCheck check("", "d_model");
  check_options(opt, check);
  check.throw_if_any("model");
  LayerInit init = init_in;
  init.n_layers = opt.n_layers;
  const int64_t D = opt.d_model, V = opt.vocab_size;
  word_embeddings_ = param_normal({V, D}, 0.02, init);
  if (opt.max_position_embeddings > 0) position_embeddings_ = param_normal({opt.max_position_embeddings, D}, 0.02, init);
  for (int64_t i = 0; i < opt.n_layers; ++i) {
    Block b;
    b.norm1 = make_norm(opt.norm, D, init);
    b.mixer = make_mixer(opt.mixer, D, init);
    b.has_mlp = opt.mlp == "gelu";
    if (b.has_mlp) {
      b.norm2 = make_norm(opt.norm, D, init);
      b.mlp.fc1_weight = param_normal({4 * D, D}, 0.02, init);
      b.mlp.fc1_bias = param_constant({4 * D}, 0.0, init);
      b.mlp.fc2_weight = param_normal({D, 4 * D}, scaled_init_std(init), init);
      b.mlp.fc2_bias = param_constant({D}, 0.0, init);
    }
    blocks_.push_back(std::move(b));
  }
  norm_f_ = make_norm(opt.norm, D, init);
  if (!opt.tie_embeddings) lm_head_ = param_normal({V, D}, 0.02, init);
}

Tensor LanguageModel::embed(const Tensor& tokens, int64_t offset, bool training, Generator& gen) const {
  Tensor x = embedding(tokens, word_embeddings_);
  if (position_embeddings_.defined()) {
    const int64_t L = tokens.size(-1);
    if (offset + L > opt_.max_position_embeddings)
      throw ShapeError("model: sequence of " + std::to_string(offset + L) + " tokens is longer than max_position_embeddings = " +
                       std::to_string(opt_.max_position_embeddings));
    std::vector<int32_t> pos(L);
    for (int64_t t = 0; t < L; ++t) pos[t] = static_cast<int32_t>(offset + t);
    Tensor pe = embedding(Tensor::from_vector({L}, pos), position_embeddings_);  // (L, D) broadcast over batch
    x = add(x, pe);
  }
  return dropout(x, opt_.dropout, training, gen);
}

Tensor LanguageModel::hidden(const Tensor& tokens, bool training, Generator& gen) const {
  if (tokens.dtype() != DType::i32 || tokens.ndim() != 2)
    throw ShapeError("model: tokens must be int32 (B, L), got " + std::string(dtype_name(tokens.dtype())) + " " +
                     shape_str(tokens.shape()));
  Tensor x = embed(tokens, 0, training, gen);
  for (const Block& b : blocks_) {
    x = add(x, dropout(b.mixer->forward(b.norm1(x), training, gen), opt_.dropout, training, gen));
    if (b.has_mlp) x = add(x, dropout(b.mlp(b.norm2(x)), opt_.dropout, training, gen));
  }
  return norm_f_(x);
}

Tensor LanguageModel::head(const Tensor& h) const { return linear(h, opt_.tie_embeddings ? word_embeddings_ : lm_head_); }

LossResult LanguageModel::loss(const Tensor& tokens, const Tensor& labels, bool training, Generator& gen) const {
  if (labels.dtype() != DType::i32 || labels.shape() != tokens.shape())
    throw ShapeError("model: labels must be int32 of the tokens' shape " + shape_str(tokens.shape()) + ", got " +
                     shape_str(labels.shape()));
  const int64_t rows = labels.numel();
  const int32_t* lab = labels.i32();
  std::vector<int32_t> idx, kept;
  for (int64_t r = 0; r < rows; ++r)
    if (lab[r] != kIgnoreLabel) {
      idx.push_back(static_cast<int32_t>(r));
      kept.push_back(lab[r]);
    }
  LossResult res;
  res.labelled = static_cast<int64_t>(idx.size());
  Tensor h = hidden(tokens, training, gen);
  h = reshape(h, {rows, opt_.d_model});
  Tensor lab_t = labels;
  if (res.labelled < rows) {
    const int64_t n = res.labelled;
    h = gather_rows(h, Tensor::from_vector({n}, idx));
    lab_t = Tensor::from_vector({n}, kept);
  } else {
    lab_t = view_as_shape(labels, {rows});
  }
  Tensor logits = head(h);  // (rows kept, V)
  res.loss = cross_entropy(logits, lab_t);
  res.correct = count_correct(logits, lab_t);
  return res;
}

DecodeState LanguageModel::init_state(int64_t batch) const {
  DecodeState s;
  for (const Block& b : blocks_) s.layers.push_back(b.mixer->init_state(batch));
  return s;
}

Tensor LanguageModel::step(DecodeState& state, const Tensor& tokens) const {
  NoGradGuard no_grad;
  if (tokens.dtype() != DType::i32 || tokens.ndim() != 1)
    throw ShapeError("model.step: tokens must be int32 (B), got " + shape_str(tokens.shape()));
  const int64_t B = tokens.size(0);
  Generator unused;
  // (B) -> (B, 1) so that the embedding (with position t) is shared with the parallel form.
  Tensor x = embed(view_as_shape(tokens, {B, 1}), state.t, false, unused);
  x = view_as_shape(x, {B, opt_.d_model});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    x = add(x, b.mixer->step(*state.layers[i], b.norm1(x)));
    if (b.has_mlp) x = add(x, b.mlp(b.norm2(x)));
  }
  ++state.t;
  return head(norm_f_(x));
}

Parameters LanguageModel::parameters() const {
  Parameters out;
  out.push_back({"embeddings.word_embeddings.weight", word_embeddings_, kDecay});
  if (position_embeddings_.defined())
    out.push_back({"embeddings.position_embeddings.weight", position_embeddings_, kDecay});
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const Block& b = blocks_[i];
    const std::string p = "layers." + std::to_string(i) + ".";
    add_norm(p + "norm1", b.norm1, out);
    b.mixer->parameters(p + "mixer.", out);
    if (b.has_mlp) {
      add_norm(p + "norm2", b.norm2, out);
      out.push_back({p + "mlp.fc1.weight", b.mlp.fc1_weight, kDecay});
      out.push_back({p + "mlp.fc1.bias", b.mlp.fc1_bias, kNoDecay});
      out.push_back({p + "mlp.fc2.weight", b.mlp.fc2_weight, kDecay});
      out.push_back({p + "mlp.fc2.bias", b.mlp.fc2_bias, kNoDecay});
    }
  }
  add_norm("norm_f", norm_f_, out);
  if (lm_head_.defined()) out.push_back({"lm_head.weight", lm_head_, kDecay});
  return out;
}

int64_t LanguageModel::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : named_parameters()) n += t.numel();
  return n;
}

}  // namespace seqmix
