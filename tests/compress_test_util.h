// tests/compress_test_util.h — helpers the compress-pass tests share (prune, merge, svd, quantize of
// low-rank models): a synthetic checkpoint in a temporary directory, a seeded calibration text any
// tokenizer encodes, the mean KLD of two logit arrays, and the bad-input check of a command line.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

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

// Mean over positions of KL(p_ref || p) from two [n, V] logit arrays.
inline double mean_kld(const std::vector<float>& ref, const std::vector<float>& got, int64_t V) {
  const int64_t n = static_cast<int64_t>(ref.size()) / V;
  double total = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* a = ref.data() + t * V;
    const float* b = got.data() + t * V;
    const double ma = *std::max_element(a, a + V), mb = *std::max_element(b, b + V);
    double za = 0, zb = 0;
    for (int64_t v = 0; v < V; ++v) za += std::exp(a[v] - ma), zb += std::exp(b[v] - mb);
    double k = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double la = a[v] - ma - std::log(za), lb = b[v] - mb - std::log(zb);
      k += std::exp(la) * (la - lb);
    }
    total += k;
  }
  return total / static_cast<double>(n);
}

// A command line that must be refused: exit 2, one line on stderr containing `expect`.
struct BadInput {
  std::vector<std::string> args;
  std::string expect;
};
// Runs every case and checks the refusal, and that none of `outputs` was created.
inline void expect_bad_input(const std::vector<BadInput>& cases, const std::vector<std::string>& outputs) {
  for (const auto& c : cases) {
    const auto r = run_moetool(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.expect << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    for (const auto& o : outputs) EXPECT_FALSE(std::filesystem::exists(o)) << c.expect << ": " << o;
  }
}

}  // namespace moetool::testing
