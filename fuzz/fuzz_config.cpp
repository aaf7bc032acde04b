// The config parser with --set overrides: YAML text, then optionally a line
// "#--set" followed by one override per line. Any input must end in a parsed
// config or a ConfigError naming the place; the memory estimate of what parsed
// must not overflow.
#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"
#include "train/memory_estimate.h"

using namespace seqmix;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::string yaml = text;
  std::vector<std::string> overrides;
  if (const size_t at = text.find("#--set\n"); at != std::string::npos) {
    yaml = text.substr(0, at);
    size_t p = at + 7;
    while (p < text.size()) {
      size_t nl = text.find('\n', p);
      if (nl == std::string::npos) nl = text.size();
      overrides.push_back(text.substr(p, nl - p));
      p = nl + 1;
    }
  }
  try {
    Config c = parse_config(yaml, "fuzz.yaml", overrides);
    const MemoryEstimate e = estimate_memory(c, true);
    (void)e.total_bytes();
    // The resolved config prints and parses back to itself.
    if (!(parse_config(to_yaml(c), "resolved.yaml") == c)) __builtin_trap();
  } catch (const ConfigError&) {
  }
  return 0;
}
