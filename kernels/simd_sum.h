// kernels/simd_sum.h — horizontal sums and a fixed-order float dot product on 8-float AVX2 vectors,
// shared by the CPU ops (kernels/cpu_ops.cc) and the integer dot tiles (kernels/quant_dot_tiles.h).
// Internal linkage on purpose: quant_dot_vnni.cc includes this under `#pragma GCC target`, so each file
// must compile its own copy for its own target (an inline function with external linkage could be merged
// with the AVX-512 build and run on a CPU without it).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace moetool::simd {
namespace {

// Sum of the 8 lanes (pairwise: halves, then pairs, then the last two).
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Σ_e a[e]·b[e] in one fixed order: eight lanes of fused multiply-adds over e, the tail, then the lanes.
inline float dot8(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t e = 0;
  for (; e + 8 <= n; e += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + e), _mm256_loadu_ps(b + e), acc);
  float tail = 0;
  for (; e < n; ++e) tail = std::fma(a[e], b[e], tail);
  return hsum8(acc) + tail;
}

}  // namespace
}  // namespace moetool::simd
