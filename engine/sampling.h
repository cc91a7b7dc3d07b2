// engine/sampling.h — choosing the next token from logits: greedy, or temperature + nucleus
// (top-p) sampling with a seeded generator, deterministic for a given seed.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace moetool {

struct SamplingOptions {
  bool greedy = true;
  float temperature = 1.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplingOptions o) : o_(o), rng_(o.seed) {}
  int32_t next(const float* logits, int64_t vocab);

 private:
  SamplingOptions o_;
  std::mt19937_64 rng_;
};

}  // namespace moetool
