// Internal to train/config.cpp and train/config_yaml.cpp: how configuration problems are
// collected, located (file line or --set override) and phrased. Other code includes
// train/config.h and catches ConfigError.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "layers/option_check.h"
#include "train/config.h"

namespace seqmix::config_detail {

// Collects problems and throws them together as one ConfigError, one per line. A problem
// is located by the keys it concerns (YAML paths such as "model.mixer.num_heads"): the
// first key that has an origin, else the nearest section of the first key that has one,
// else the source name alone.
class Problems {
 public:
  explicit Problems(std::string source) : source_(std::move(source)) {}

  const std::string& source() const { return source_; }
  // where: "FILE:LINE" or "--set KEY=VALUE".
  void set_origin(const std::string& key, const std::string& where) { origins_[key] = where; }
  bool has_origin(const std::string& key) const { return origins_.count(key) > 0; }
  // Forgets the origins of the keys under section (not section itself), except `keep`.
  void forget_origins_under(const std::string& section, const std::vector<std::string>& keep);

  void add(const std::vector<std::string>& keys, const std::string& message);
  void add_at(const std::string& where, const std::string& message);
  bool empty() const { return lines_.empty(); }
  void throw_if_any();

 private:
  std::string locate(const std::vector<std::string>& keys) const;

  std::string source_;
  std::map<std::string, std::string> origins_;
  std::vector<std::string> lines_;
};

// Levenshtein distance (insertions, deletions, substitutions cost 1).
int64_t edit_distance(const std::string& a, const std::string& b);
// "; did you mean 'x'?" when a candidate is close to word, otherwise
// "; valid <what> are: a, b, c".
std::string did_you_mean(const std::string& word, const std::vector<std::string>& candidates,
                         const std::string& what = "keys");
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");
// Shortest text that reads back to the same double ("0.001", "1e-08", "2").
using seqmix::format_number;

// Every range and cross-field rule of the configuration.
void check_config(const Config& c, Problems& problems);

}  // namespace seqmix::config_detail
