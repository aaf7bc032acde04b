// Configuration <-> YAML: reading a file or string into Config (unknown keys and wrong
// types reported with file and line), --set overrides, and to_yaml. The range rules are in
// config.cpp (check_config); both directions share the key table below, so a key added
// there is read, overridden, printed and compared at once.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <variant>

#include "layers/mixer_registry.h"
#include "train/config.h"
#include "train/config_errors.h"

namespace seqmix {
namespace {

using config_detail::did_you_mean;
using config_detail::join;
using config_detail::Problems;

// ---- The key table -----------------------------------------------------------------

// AutoInt: mamba's dt_rank, a positive integer or "auto" (stored as 0).
using FieldPtr = std::variant<int64_t*, uint64_t*, double*, bool*, std::string*, AutoInt>;
struct Field {
  std::string key;
  FieldPtr ptr;
};

const std::vector<std::string> kDataKinds = {"recall", "text", "tokens"};

// The chosen type's options, as the mixer registry lists them.
std::vector<Field> mixer_options(MixerOptions& x, const std::string& type) {
  std::vector<Field> f;
  if (const MixerEntry* e = find_mixer(type))
    for (const MixerOption& o : e->options)
      f.push_back({o.key, std::visit([](auto p) -> FieldPtr { return p; }, o.field(x))});
  return f;
}

std::vector<Field> data_options(DataOptions& d, const std::string& kind) {
  if (kind == "recall")
    return {{"task", &d.recall.task},
            {"vocab_size", &d.recall.vocab_size},
            {"seq_len", &d.recall.seq_len},
            {"num_kv_pairs", &d.recall.num_kv_pairs},
            {"power_a", &d.recall.power_a},
            {"random_non_queries", &d.recall.random_non_queries},
            {"num_tokens_to_copy", &d.recall.num_tokens_to_copy},
            {"num_train_examples", &d.recall.num_train_examples},
            {"num_test_examples", &d.recall.num_test_examples}};
  if (kind == "text")
    return {{"path", &d.text.path},
            {"tokenizer", &d.text.tokenizer},
            {"seq_len", &d.text.seq_len},
            {"train_fraction", &d.text.train_fraction}};
  if (kind == "tokens")
    return {{"train_path", &d.tokens.train_path},
            {"val_path", &d.tokens.val_path},
            {"format", &d.tokens.format},
            {"vocab_size", &d.tokens.vocab_size},
            {"seq_len", &d.tokens.seq_len}};
  return {};
}

// The value keys of a section ("" is the top level), in print order. For model.mixer and
// data they depend on the chosen type / kind, which comes first.
std::vector<Field> fields_of(Config& c, const std::string& section) {
  std::vector<Field> f;
  if (section == "model") {
    ModelOptions& m = c.model;
    f = {{"vocab_size", &m.vocab_size},
         {"d_model", &m.d_model},
         {"n_layers", &m.n_layers},
         {"norm", &m.norm},
         {"mlp", &m.mlp},
         {"max_position_embeddings", &m.max_position_embeddings},
         {"tie_embeddings", &m.tie_embeddings},
         {"dropout", &m.dropout}};
  } else if (section == "model.mixer") {
    f = {{"type", &c.model.mixer.type}};
    for (Field& o : mixer_options(c.model.mixer, c.model.mixer.type)) f.push_back(o);
  } else if (section == "data") {
    f = {{"kind", &c.data.kind}, {"seed", &c.data.seed}};
    for (Field& o : data_options(c.data, c.data.kind)) f.push_back(o);
  } else if (section == "optimizer") {
    OptimizerConfig& o = c.optimizer;
    f = {{"type", &o.type}, {"lr", &o.lr},   {"beta1", &o.beta1},
         {"beta2", &o.beta2}, {"eps", &o.eps}, {"weight_decay", &o.weight_decay},
         {"grad_clip", &o.grad_clip}};
  } else if (section == "schedule") {
    ScheduleConfig& s = c.schedule;
    f = {{"type", &s.type}, {"warmup_steps", &s.warmup_steps}, {"min_lr", &s.min_lr}};
  } else if (section == "training") {
    TrainingConfig& t = c.training;
    f = {{"steps", &t.steps},
         {"epochs", &t.epochs},
         {"batch_size", &t.batch_size},
         {"eval_interval", &t.eval_interval},
         {"eval_batches", &t.eval_batches},
         {"early_stop_accuracy", &t.early_stop_accuracy},
         {"seed", &t.seed},
         {"checkpoint_interval", &t.checkpoint_interval},
         {"parallel", &t.parallel}};
  } else if (section == "logging") {
    f = {{"log_interval", &c.logging.log_interval}, {"level", &c.logging.level}};
  }
  return f;
}

std::vector<std::string> subsections_of(const std::string& section) {
  if (section.empty()) return {"model", "data", "optimizer", "schedule", "training", "logging"};
  if (section == "model") return {"mixer"};
  return {};
}

// The key that selects which other keys a section has ("" if none).
std::string selector_of(const std::string& section) {
  if (section == "model.mixer") return "type";
  if (section == "data") return "kind";
  return "";
}
const std::vector<std::string>& choices_of(const std::string& section) {
  return section == "data" ? kDataKinds : mixer_names();
}

std::string join_path(const std::string& section, const std::string& key) {
  return section.empty() ? key : section + "." + key;
}

const Field* find_field(const std::vector<Field>& fields, const std::string& key) {
  for (const Field& f : fields)
    if (f.key == key) return &f;
  return nullptr;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string unknown_key(Config& c, const std::string& section, const std::string& key) {
  std::string where = section.empty() ? "at the top level" : "in " + section;
  std::vector<std::string> owners;  // the other types / kinds that do have this key
  if (section == "model.mixer" || section == "data") {
    const bool mixer = section == "model.mixer";
    const std::string& chosen = mixer ? c.model.mixer.type : c.data.kind;
    where += std::string(mixer ? " for type '" : " for kind '") + chosen + "'";
    for (const std::string& other : choices_of(section)) {
      if (other == chosen) continue;
      const auto options = mixer ? mixer_options(c.model.mixer, other) : data_options(c.data, other);
      if (find_field(options, key)) owners.push_back(other);
    }
  }
  std::vector<std::string> valid;
  for (const Field& f : fields_of(c, section)) valid.push_back(f.key);
  for (const std::string& s : subsections_of(section)) valid.push_back(s);
  std::string message = "unknown key '" + key + "' " + where;
  if (!owners.empty())
    message += " (it is an option of " + std::string(section == "data" ? "kind " : "type ") +
               join(owners, " / ") + ")";
  return message + did_you_mean(key, valid);
}

// ---- Scalars -----------------------------------------------------------------------

std::string describe(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Null: return "nothing (null)";
    default: return "an undefined value";
  }
}

enum class Parsed { ok, bad, overflow };

// Whole-string decimal integer with an optional sign; no exponents or fractions.
template <class Int>
Parsed parse_integer(const std::string& s, Int& out) {
  const char* first = s.data();
  const char* last = s.data() + s.size();
  if (first != last && *first == '+') ++first;
  if (first == last || !(std::isdigit(static_cast<unsigned char>(*first)) || *first == '-'))
    return Parsed::bad;
  auto [ptr, ec] = std::from_chars(first, last, out);
  if (ec == std::errc::result_out_of_range) return Parsed::overflow;
  return (ec == std::errc() && ptr == last) ? Parsed::ok : Parsed::bad;
}

bool parse_double(const std::string& s, double& out) {
  const char* first = s.data();
  const char* last = s.data() + s.size();
  if (first != last && *first == '+') ++first;
  if (first == last) return false;
  auto [ptr, ec] = std::from_chars(first, last, out);
  return ec == std::errc() && ptr == last && std::isfinite(out);
}

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

// Stores node into the field at `path`; returns the problem, or "" when it fits.
std::string decode(const YAML::Node& n, const FieldPtr& field, const std::string& path) {
  const std::string text = n.IsScalar() ? n.Scalar() : "";
  auto expected = [&](const std::string& what) {
    return path + ": expected " + what + ", got " + describe(n);
  };
  auto too_big = [&] { return path + " = " + text + " is out of range for a 64-bit integer"; };
  return std::visit(
      Overloaded{
          [&](int64_t* p) -> std::string {
            if (!n.IsScalar()) return expected("an integer");
            switch (parse_integer(text, *p)) {
              case Parsed::ok: return "";
              case Parsed::overflow: return too_big();
              default: return expected("an integer");
            }
          },
          [&](uint64_t* p) -> std::string {
            if (!n.IsScalar()) return expected("a non-negative integer");
            switch (parse_integer(text, *p)) {
              case Parsed::ok: return "";
              case Parsed::overflow: return too_big();
              default: return expected("a non-negative integer");
            }
          },
          [&](double* p) -> std::string {
            if (n.IsScalar() && parse_double(text, *p)) return "";
            return expected("a finite number");
          },
          [&](bool* p) -> std::string {
            if (n.IsScalar() && YAML::convert<bool>::decode(n, *p)) return "";
            return expected("true or false");
          },
          [&](std::string* p) -> std::string {
            if (!n.IsScalar()) return expected("a string");
            *p = text;
            return "";
          },
          [&](AutoInt r) -> std::string {
            if (n.IsScalar() && text == "auto") {
              *r.value = 0;
              return "";
            }
            int64_t v = 0;
            const Parsed parsed = n.IsScalar() ? parse_integer(text, v) : Parsed::bad;
            if (parsed == Parsed::bad) return expected("a positive integer or 'auto'");
            if (parsed == Parsed::overflow) return too_big();
            if (v < 1) return path + " = " + text + " is out of range: must be a positive integer or 'auto'";
            *r.value = v;
            return "";
          },
      },
      field);
}

// ---- Reading a document ------------------------------------------------------------

std::string location(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return source;
  return source + ":" + std::to_string(mark.line + 1);  // yaml-cpp counts lines from 0
}

class Reader {
 public:
  Reader(Config& c, Problems& p) : c_(c), p_(p) {}

  void read_section(const YAML::Node& node, const std::string& section) {
    if (node.IsNull()) return;  // an empty section keeps its defaults
    const std::string name = section.empty() ? "the top level" : section;
    if (!node.IsMap()) {
      p_.add_at(location(p_.source(), node.Mark()),
                name + ": expected a map of keys, got " + describe(node));
      return;
    }
    // The type (or kind) decides which other keys exist, wherever it is written.
    const std::string selector = selector_of(section);
    if (!selector.empty()) {
      for (const auto& entry : node) {
        if (!entry.first.IsScalar() || entry.first.Scalar() != selector) continue;
        if (!read_selector(entry.first, entry.second, section)) return;
        break;
      }
    }
    std::map<std::string, int> seen;  // key -> 1-based line
    for (const auto& entry : node) {
      const YAML::Node& k = entry.first;
      const std::string at = location(p_.source(), k.Mark());
      if (!k.IsScalar()) {
        p_.add_at(at, "keys in " + name + " must be plain names, got " + describe(k));
        continue;
      }
      const std::string key = k.Scalar();
      const std::string path = join_path(section, key);
      if (auto it = seen.find(key); it != seen.end()) {
        p_.add_at(at, "duplicate key '" + key + "' in " + name + " (first at line " +
                          std::to_string(it->second) + ")");
        continue;
      }
      seen[key] = k.Mark().line + 1;
      if (key == selector) continue;
      if (contains(subsections_of(section), key)) {
        p_.set_origin(path, at);
        read_section(entry.second, path);
        continue;
      }
      const std::vector<Field> fields = fields_of(c_, section);
      const Field* field = find_field(fields, key);
      if (field == nullptr) {
        p_.add_at(at, unknown_key(c_, section, key));
        continue;
      }
      const std::string problem = decode(entry.second, field->ptr, path);
      if (problem.empty()) p_.set_origin(path, at);
      else p_.add_at(at, problem);
    }
  }

 private:
  bool read_selector(const YAML::Node& k, const YAML::Node& v, const std::string& section) {
    const std::string at = location(p_.source(), k.Mark());
    const std::string path = join_path(section, k.Scalar());
    std::string chosen;
    std::string problem = decode(v, &chosen, path);
    if (problem.empty() && !contains(choices_of(section), chosen))
      problem = path + " = '" + chosen + "' is not a valid choice" +
                did_you_mean(chosen, choices_of(section), "choices");
    if (!problem.empty()) {
      p_.add_at(at, problem);  // the section's other keys cannot be checked without it
      return false;
    }
    *std::get<std::string*>(fields_of(c_, section).front().ptr) = chosen;
    p_.set_origin(path, at);
    return true;
  }

  Config& c_;
  Problems& p_;
};

// ---- Overrides ---------------------------------------------------------------------

std::string trim(const std::string& s) {
  const size_t first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::string override_key(const std::string& spec) { return trim(spec.substr(0, spec.find('='))); }

void apply_override(Config& c, Problems& p, const std::string& spec) {
  const std::string at = "--set " + spec;
  const size_t eq = spec.find('=');
  const std::string key = override_key(spec);
  if (eq == std::string::npos || key.empty()) {
    p.add_at(at, "expected KEY=VALUE, e.g. --set model.d_model=64");
    return;
  }
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t dot = key.find('.', begin);
    parts.push_back(key.substr(begin, dot - begin));
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  std::string section;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (contains(subsections_of(section), parts[i])) {
      section = join_path(section, parts[i]);
    } else if (find_field(fields_of(c, section), parts[i])) {
      p.add_at(at, "'" + join_path(section, parts[i]) + "' is a value, not a section");
      return;
    } else {
      p.add_at(at, unknown_key(c, section, parts[i]));
      return;
    }
  }
  const std::string& last = parts.back();
  const std::string path = join_path(section, last);
  if (contains(subsections_of(section), last)) {
    p.add_at(at, "'" + path + "' is a section; set one of its keys, e.g. --set " + path + "." +
                     fields_of(c, path).front().key + "=...");
    return;
  }
  const std::vector<Field> fields = fields_of(c, section);
  const Field* field = find_field(fields, last);
  if (field == nullptr) {
    p.add_at(at, unknown_key(c, section, last));
    return;
  }
  YAML::Node node;
  try {
    node = YAML::Load(spec.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    p.add_at(at, "the value is not valid YAML: " + e.msg);
    return;
  }
  if (last == selector_of(section)) {
    std::string chosen;
    std::string problem = decode(node, &chosen, path);
    if (problem.empty() && !contains(choices_of(section), chosen))
      problem = path + " = '" + chosen + "' is not a valid choice" +
                did_you_mean(chosen, choices_of(section), "choices");
    if (!problem.empty()) {
      p.add_at(at, problem);
      return;
    }
    std::string& current = *std::get<std::string*>(field->ptr);
    if (chosen != current) {
      // The file's options belonged to the old type; the new one starts from defaults.
      p.forget_origins_under(section, {path, join_path(section, "seed")});
      current = chosen;
    }
    p.set_origin(path, at);
    return;
  }
  const std::string problem = decode(node, field->ptr, path);
  if (problem.empty()) p.set_origin(path, at);
  else p.add_at(at, problem);
}

// ---- Writing -----------------------------------------------------------------------

// Plain when it reads back as the same string in any YAML reader, double-quoted otherwise.
std::string yaml_string(const std::string& s) {
  static const std::vector<std::string> special = {"true", "false", "yes", "no", "on",  "off",
                                                   "y",    "n",     "null", "~"};
  bool plain = !s.empty() && (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_' ||
                              s[0] == '/' || s[0] == '.');
  for (char ch : s)
    plain = plain && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '.' ||
                      ch == '/' || ch == '-');
  std::string lowered = s;
  for (char& ch : lowered) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (plain && !contains(special, lowered)) return s;
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      char buffer[8];
      std::snprintf(buffer, sizeof(buffer), "\\x%02x", ch);
      out += buffer;
    } else {
      out += static_cast<char>(ch);  // UTF-8 passes through
    }
  }
  return out + "\"";
}

// Shortest round-trip digits, written so that YAML 1.1 readers also see a float
// ("1.0e-08", "2.0"): PyYAML needs the dot.
std::string yaml_double(double x) {
  if (std::isnan(x)) return ".nan";
  if (std::isinf(x)) return x > 0 ? ".inf" : "-.inf";
  std::string s = config_detail::format_number(x);
  if (s.find('.') != std::string::npos) return s;
  const size_t e = s.find('e');
  return e == std::string::npos ? s + ".0" : s.insert(e, ".0");
}

std::string yaml_value(const FieldPtr& field) {
  return std::visit(Overloaded{
                        [](int64_t* p) { return std::to_string(*p); },
                        [](uint64_t* p) { return std::to_string(*p); },
                        [](double* p) { return yaml_double(*p); },
                        [](bool* p) { return std::string(*p ? "true" : "false"); },
                        [](std::string* p) { return yaml_string(*p); },
                        [](AutoInt r) { return *r.value == 0 ? std::string("auto") : std::to_string(*r.value); },
                    },
                    field);
}

void emit_section(std::string& out, Config& c, const std::string& section, int indent) {
  const std::string pad(static_cast<size_t>(indent), ' ');
  for (const Field& f : fields_of(c, section)) out += pad + f.key + ": " + yaml_value(f.ptr) + "\n";
  for (const std::string& sub : subsections_of(section)) {
    out += pad + sub + ":\n";
    emit_section(out, c, join_path(section, sub), indent + 2);
  }
}

// base_dir: the config file's directory, for resolving relative data paths (null: none).
Config parse_impl(const std::string& text, const std::string& source,
                  const std::vector<std::string>& overrides, const std::filesystem::path* base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(location(source, e.mark) + ": YAML syntax error: " + e.msg);
  }
  Config c;
  Problems problems(source);
  Reader(c, problems).read_section(root, "");
  problems.throw_if_any();

  if (base_dir != nullptr) {
    auto resolve = [&](std::string& p) {
      if (p.empty()) return;
      const std::filesystem::path path(p);
      std::error_code ec;
      if (path.is_relative() && std::filesystem::exists(*base_dir / path, ec))
        p = std::filesystem::absolute(*base_dir / path, ec).lexically_normal().string();
    };
    if (c.data.kind == "text") resolve(c.data.text.path);
    if (c.data.kind == "tokens") {
      resolve(c.data.tokens.train_path);
      resolve(c.data.tokens.val_path);
    }
  }

  // Type and kind switches first: they decide which other keys exist.
  std::vector<std::string> ordered = overrides;
  std::stable_partition(ordered.begin(), ordered.end(), [](const std::string& spec) {
    const std::string key = override_key(spec);
    return key == "model.mixer.type" || key == "data.kind";
  });
  for (const std::string& spec : ordered) apply_override(c, problems, spec);
  problems.throw_if_any();

  config_detail::check_config(c, problems);
  problems.throw_if_any();
  return c;
}

}  // namespace

std::string to_yaml(const Config& config) {
  Config copy = config;  // the key table holds non-const pointers
  std::string out;
  emit_section(out, copy, "", 0);
  return out;
}

Config parse_config(const std::string& yaml_text, const std::string& source_name,
                    const std::vector<std::string>& overrides) {
  return parse_impl(yaml_text, source_name, overrides, nullptr);
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot open the config file");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError(path + ": cannot read the config file");
  const std::filesystem::path base_dir = std::filesystem::path(path).parent_path();
  return parse_impl(text.str(), path, overrides, &base_dir);
}

}  // namespace seqmix
