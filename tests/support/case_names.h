// Readable names for parameterised test cases: "B2_L67_H3_drop0p3". gtest prints a case
// struct without a PrintTo as its raw bytes (ctest shows those, and structs holding a
// vector show a heap address, so names changed from build to build); a case struct
// defines PrintTo with case_name, and INSTANTIATE_TEST_SUITE_P passes
// ::testing::PrintToStringParamName() to use it as the test name.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

namespace seqmix::testing {

// Fields as label + value; a value that is not an integer is written with 'p' for the
// point and 'm' for a minus sign ("-0.25" -> "m0p25"), so the name is an identifier.
inline std::string case_name(std::initializer_list<std::pair<const char*, double>> fields) {
  std::string out;
  for (const auto& [label, value] : fields) {
    if (!out.empty()) out += "_";
    out += label;
    std::string v;
    if (value == std::floor(value) && std::fabs(value) < 1e15) {
      v = std::to_string(static_cast<long long>(value));
    } else {
      char buffer[32];
      std::snprintf(buffer, sizeof(buffer), "%g", value);
      v = buffer;
    }
    for (char& ch : v) ch = ch == '.' ? 'p' : ch == '-' ? 'm' : ch == '+' ? 'P' : ch;
    out += v;
  }
  return out;
}

// "s_2_3_17" for the shape (2, 3, 17).
inline std::string shape_name(const std::vector<int64_t>& shape) {
  std::string n = "s";
  for (int64_t d : shape) n += "_" + std::to_string(d);
  return n;
}

}  // namespace seqmix::testing
