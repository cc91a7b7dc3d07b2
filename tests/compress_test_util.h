// tests/compress_test_util.h — helpers the compress-pass tests share (prune, merge): a synthetic
// checkpoint in a temporary directory and a seeded calibration text any tokenizer encodes.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "formats/synth.h"
#include "tests/test_util.h"

namespace moetool::testing {

inline std::string synth_in(const TempDir& d, const std::string& name, const std::string& family, uint64_t seed,
                            const std::string& preset = "small") {
  SynthOptions so;
  so.family = family;
  so.preset = preset;
  so.seed = seed;
  synth_model(d.file(name), so);
  return d.file(name);
}

// `words` seeded words from a small mixed vocabulary (stories, code, licence terms), a sentence break
// every 17; written to calib-SEED.txt in d.
inline std::string seeded_text(const TempDir& d, uint64_t seed, int words = 1500) {
  static const char* kWords[] = {"the", "cat", "ran", "over", "a", "hill", "and", "then", "saw", "dog", "def",
                                 "return", "self", "license", "terms", "of", "use", "x", "=", "1", "story", "code"};
  std::mt19937_64 g(seed);
  std::string s;
  for (int i = 0; i < words; ++i) s += std::string(kWords[g() % std::size(kWords)]) + (i % 17 == 16 ? ".\n" : " ");
  const std::string p = d.file("calib-" + std::to_string(seed) + ".txt");
  write_bytes(p, s);
  return p;
}

}  // namespace moetool::testing
