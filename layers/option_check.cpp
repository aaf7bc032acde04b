#include "layers/option_check.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "core/tensor.h"

namespace seqmix {

namespace {

std::string str(int64_t v) { return std::to_string(v); }
std::string str(double v) { return format_number(v); }

std::string list_choices(const std::string&, const std::vector<std::string>& choices) {
  std::string out = "; valid choices are: ";
  for (size_t i = 0; i < choices.size(); ++i) out += (i ? ", " : "") + choices[i];
  return out;
}

}  // namespace

std::string format_number(double x) {
  char buffer[64];
  auto result = std::to_chars(buffer, buffer + sizeof(buffer), x);
  return std::string(buffer, result.ptr);
}

OptionCheck::OptionCheck(std::string prefix, std::string d_model_name, Suggest suggest)
    : prefix_(std::move(prefix)),
      d_model_name_(std::move(d_model_name)),
      suggest_(suggest ? std::move(suggest) : Suggest(list_choices)),
      problems_(std::make_shared<std::vector<OptionProblem>>()) {}

OptionCheck OptionCheck::with_prefix(const std::string& prefix) const {
  OptionCheck c = *this;
  c.prefix_ = prefix;
  return c;
}

std::string OptionCheck::name(const std::string& key) const {
  return key == "d_model" ? d_model_name_ : prefix_ + key;
}

void OptionCheck::add(const std::vector<std::string>& keys, const std::string& message) {
  OptionProblem p;
  for (const std::string& k : keys) p.keys.push_back(name(k));
  p.message = message;
  problems_->push_back(std::move(p));
}

bool OptionCheck::at_least(const std::string& key, int64_t v, int64_t min) {
  if (v >= min) return true;
  add({key}, name(key) + " = " + str(v) + " is out of range: must be >= " + str(min));
  return false;
}

bool OptionCheck::positive(const std::string& key, double v) {
  if (v > 0 && std::isfinite(v)) return true;
  add({key}, name(key) + " = " + str(v) + " is out of range: must be > 0");
  return false;
}

bool OptionCheck::non_negative(const std::string& key, double v) {
  if (v >= 0 && std::isfinite(v)) return true;
  add({key}, name(key) + " = " + str(v) + " is out of range: must be >= 0");
  return false;
}

bool OptionCheck::in_range(const std::string& key, double v, double lo, double hi, bool closed) {
  if (v >= lo && (closed ? v <= hi : v < hi)) return true;
  add({key}, name(key) + " = " + str(v) + " is out of range [" + str(lo) + ", " + str(hi) + (closed ? "]" : ")"));
  return false;
}

bool OptionCheck::one_of(const std::string& key, const std::string& v, const std::vector<std::string>& choices) {
  if (std::find(choices.begin(), choices.end(), v) != choices.end()) return true;
  add({key}, name(key) + " = '" + v + "' is not a valid choice" + suggest_(v, choices));
  return false;
}

bool OptionCheck::divides(const std::vector<std::string>& keys, const std::string& width_text, int64_t width,
                          const std::string& divisor_key, int64_t divisor, const std::string& why) {
  if (width % divisor == 0) return true;
  add(keys, width_text + " = " + str(width) + " is not divisible by " + name(divisor_key) + " = " + str(divisor) +
                " (" + why + ")");
  return false;
}

void OptionCheck::throw_if_any(const std::string& what) const {
  if (problems_->empty()) return;
  std::string text = what + ": ";
  for (size_t i = 0; i < problems_->size(); ++i) text += (i ? "; " : "") + (*problems_)[i].message;
  throw ShapeError(text);
}

}  // namespace seqmix
