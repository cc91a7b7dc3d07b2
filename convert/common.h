// convert/common.h — what the conversions share: the options every method takes (target, expert
// counts, seed, output settings, callbacks), the name tables of their choices (split, router), and
// timing.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "core/error.h"

namespace moetool {

struct ConvertOptions {
  std::string to;                  // target family (model_type)
  int64_t experts = 8;             // routed experts per layer in the output
  int64_t top_k = 2;               // experts per token in the output
  uint64_t seed = 0;
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;       // provenance for __metadata__
  std::function<void(const std::string&)> progress;  // one line per layer
  std::function<void(const std::string&)> warn;      // warnings (also kept in the report)
};

// One value of an option that takes a name.
template <class E>
struct Choice {
  E value;
  const char* name;
};

// The value named `s`; otherwise throws "<error> 's' (expected a, b or c)".
template <class E, size_t N>
E parse_choice(const Choice<E> (&table)[N], const std::string& s, const char* error) {
  std::string names;
  for (size_t i = 0; i < N; ++i) {
    if (s == table[i].name) return table[i].value;
    names += str(i == 0 ? "" : i + 1 == N ? " or " : ", ", table[i].name);
  }
  fail(error, " '", s, "' (expected ", names, ")");
}

template <class E, size_t N>
const char* choice_name(const Choice<E> (&table)[N], E v) {
  for (const auto& c : table)
    if (c.value == v) return c.name;
  return "?";
}

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

}  // namespace moetool
