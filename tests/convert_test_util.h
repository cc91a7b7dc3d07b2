// tests/convert_test_util.h — helpers shared by the convert tests: the shared TinyStories paths,
// synthetic dense sources, token chunks, and the agreement (mean KLD, same top-1) of a converted
// model with its dense source, computed with the checker's engine and metrics.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace moetool::testing {

std::string tinystories();        // ../shared/models/tinystories-656k
std::string tinystories_calib();  // ../shared/data/tinystories-calib.txt

// A tiny synthetic dense checkpoint of `family` in d (reused if already there).
std::string synth_dense(const TempDir& d, const std::string& family, uint64_t seed);

// Deterministic token chunks [n][len] for models without meaningful text.
std::vector<std::vector<int32_t>> token_chunks(int64_t vocab, int n, int len, uint64_t seed);
// n chunks of ctx tokens of the TinyStories calibration text (BOS first).
std::vector<std::vector<int32_t>> tinystories_chunks(int n, int ctx);

struct Agreement {
  double kld = 0, top1 = 0;
};
// Mean KLD and same-top-1 of `cand` against `base` (engine float32 logits, every token scored).
Agreement agreement(const std::string& base, const std::string& cand,
                    const std::vector<std::vector<int32_t>>& chunks);

// The output opens as `family` and Model::check() finds no inconsistency.
void expect_clean(const std::string& out, const std::string& family);

}  // namespace moetool::testing
