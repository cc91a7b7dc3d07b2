// convert/rng.h — counter-based random numbers for conversions: value i of a stream depends only on
// (seed, stream name, i), so results are identical for a given --seed whatever the thread count or
// the order in which tensors are produced.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace moetool::rng {

inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The key of a named stream under a seed (FNV-1a of the name mixed with the seed).
inline uint64_t key(uint64_t seed, const std::string& stream) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : stream) h = (h ^ c) * 1099511628211ull;
  return splitmix64(splitmix64(seed) ^ h);
}

inline uint64_t bits(uint64_t key, uint64_t i) { return splitmix64(key + (i + 1) * 0xd1b54a32d192ed03ull); }

// Uniform in [0, 1) with 53 random bits.
inline double uniform(uint64_t key, uint64_t i) { return static_cast<double>(bits(key, i) >> 11) * 0x1.0p-53; }

// Standard normal (Box–Muller on two uniforms of the stream).
inline double normal(uint64_t key, uint64_t i) {
  const double u1 = 1.0 - uniform(key, 2 * i);  // (0, 1]
  const double u2 = uniform(key, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace moetool::rng
