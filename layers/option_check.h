// One set of rules per options struct, shared by the config check and the layer
// constructors so that the two cannot disagree.
//
// A rule is written once, against an OptionCheck, in terms of short keys ("num_heads",
// "d_model"). The caller decides how keys are named in messages: a layer constructor
// names them as they are ("num_heads"), the config check as YAML paths
// ("model.mixer.num_heads", "model.d_model"). Each problem keeps the full names of the keys
// it concerns, so that the config can point at the line that set them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace seqmix {

struct OptionProblem {
  std::vector<std::string> keys;  // full names, most relevant first
  std::string message;
};

class OptionCheck {
 public:
  // For "is not a valid choice": the text appended after it, e.g. "; valid choices are: a, b"
  // (the default) or the config's "; did you mean 'x'?".
  using Suggest = std::function<std::string(const std::string& word, const std::vector<std::string>& choices)>;

  // prefix: prepended to every key ("model.mixer."); d_model_name: the name of the
  // model width, which mixer rules call "d_model" ("model.d_model" in a config).
  explicit OptionCheck(std::string prefix = "", std::string d_model_name = "d_model", Suggest suggest = {});

  // A checker that writes into the same problem list with another key prefix.
  OptionCheck with_prefix(const std::string& prefix) const;

  std::string name(const std::string& key) const;
  const std::string& prefix() const { return prefix_; }

  // Each rule adds a problem and returns false when the value is out of range, so that
  // cross-field rules run only on values that are individually sane.
  bool at_least(const std::string& key, int64_t v, int64_t min);
  bool positive(const std::string& key, double v);      // finite and > 0
  bool non_negative(const std::string& key, double v);  // finite and >= 0
  // lo <= v < hi, or lo <= v <= hi when closed.
  bool in_range(const std::string& key, double v, double lo, double hi, bool closed = false);
  bool one_of(const std::string& key, const std::string& v, const std::vector<std::string>& choices);
  // width % divisor == 0, else "<width_text> = W is not divisible by <divisor> = H (why)";
  // keys: the keys the problem concerns, the divisor's first.
  bool divides(const std::vector<std::string>& keys, const std::string& width_text, int64_t width,
               const std::string& divisor_key, int64_t divisor, const std::string& why);
  // A problem about the keys (short names); message already names them with name().
  void add(const std::vector<std::string>& keys, const std::string& message);

  const std::vector<OptionProblem>& problems() const { return *problems_; }
  bool ok() const { return problems_->empty(); }
  // Throws ShapeError "what: problem; problem" when there is any problem.
  void throw_if_any(const std::string& what) const;

 private:
  std::string prefix_, d_model_name_;
  Suggest suggest_;
  std::shared_ptr<std::vector<OptionProblem>> problems_;
};

// Shortest text that reads back to the same double ("0.001", "1e-08", "2").
std::string format_number(double x);

}  // namespace seqmix
