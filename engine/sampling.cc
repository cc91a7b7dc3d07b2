// engine/sampling.cc — greedy and top-p sampling (see sampling.h).
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace moetool {

int32_t Sampler::next(const float* logits, int64_t vocab) {
  if (o_.greedy || o_.temperature <= 0.0f)
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  std::vector<double> p(static_cast<size_t>(vocab));
  const float mx = *std::max_element(logits, logits + vocab);
  double s = 0;
  for (int64_t i = 0; i < vocab; ++i) s += (p[static_cast<size_t>(i)] = std::exp((logits[i] - mx) / o_.temperature));
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return p[static_cast<size_t>(a)] != p[static_cast<size_t>(b)] ? p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)] : a < b;
  });
  // Keep the smallest prefix whose mass reaches top_p.
  double cum = 0;
  size_t keep = 0;
  while (keep < idx.size()) {
    cum += p[static_cast<size_t>(idx[keep])] / s;
    ++keep;
    if (cum >= o_.top_p) break;
  }
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += p[static_cast<size_t>(idx[i])];
  std::uniform_real_distribution<double> u(0.0, mass);
  double r = u(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= p[static_cast<size_t>(idx[i])];
    if (r <= 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace moetool
