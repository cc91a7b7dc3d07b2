// kernels/quant_dot_tiles.h — the micro-kernel of the integer dot path (see quant_dot.h), shared by
// the AVX2 (quant_dot_avx2.cc) and AVX-512 VNNI (quant_dot_vnni.cc) builds of it; include it only
// there. It multiplies a panel of 4 weight rows by RN ≤ 4 tokens: per 32-block it forms each pair's eight
// int32 lane sums with K::lanes (lane k = elements 4k..4k+3, so lanes 0..3 are the block's first half
// and 4..7 its second), turns them to float and accumulates them times a · dx; the b_j terms are one
// float dot product per pair at the end. Everything has internal linkage, so each including file
// compiles its own copy for its own target (the VNNI file includes this under #pragma GCC target).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/quant_dot.h"
#include "kernels/simd_sum.h"

namespace moetool::quant_dot_simd {
namespace {

using simd::hsum8;

// The 4 rows of weight panel P (r0 = 4P; rows past W.rows are padding, not stored) by RN ≤ 4 tokens
// of token panel t0 / 4: two pointers walk the panels' blocks (see quant_dot.h).
template <class K, int RN>
inline void micro_tile(const U8Rows& W, int64_t r0, const Q8Acts& X, int64_t t0, float* Y, int64_t ldy,
                       float beta) {
  const int64_t nb = W.nb;
  __m256 acc[4][RN];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < RN; ++t) acc[r][t] = _mm256_setzero_ps();
  const uint8_t* wp = W.block(r0, 0);
  const uint8_t* xp = X.block(t0, 0);
  for (int64_t j = 0; j < nb; ++j, wp += kWeightPanelBlock, xp += kActPanelBlock) {
    typename K::WReg w[4];
    __m256 a[4];
    for (int r = 0; r < 4; ++r) {
      w[r] = K::prep(wp + 32 * r);
      a[r] = _mm256_loadu_ps(reinterpret_cast<const float*>(wp + 128) + 8 * r);
    }
    for (int t = 0; t < RN; ++t) {
      const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 32 * t));
      const __m256i init = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xp + 128 + 32 * t));
      const __m256 dx = _mm256_broadcast_ss(reinterpret_cast<const float*>(xp + 256) + t);
      for (int r = 0; r < 4; ++r)
        acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(K::lanes(init, w[r], p)), _mm256_mul_ps(a[r], dx), acc[r][t]);
    }
  }
  // Sums of all 4 × RN first (constant indices keep acc in registers), then the rows that exist.
  float sums[4][RN];
  for (int r = 0; r < 4; ++r)
    for (int t = 0; t < RN; ++t) sums[r][t] = hsum8(acc[r][t]);
  const int rm = static_cast<int>(std::min<int64_t>(4, W.rows - r0));
  for (int t = 0; t < RN; ++t)
    for (int r = 0; r < rm; ++r) {
      float v = sums[r][t];
      if (W.has_b) v += simd::dot8(W.b.data() + (r0 + r) * nb, X.sum.data() + (t0 + t) * nb, nb);
      float& y = Y[(t0 + t) * ldy + r0 + r];
      y = v + (beta != 0.0f ? beta * y : 0.0f);
    }
}

using TileFn = void (*)(const U8Rows&, int64_t, const Q8Acts&, int64_t, float*, int64_t, float);

// Kernel K for RN = 1..4 tokens, and the sweep: per panel of 4 tokens, every panel of rows (the weight
// tile stays in L2 while the tokens pass).
template <class K>
struct Tiles {
  template <int RN>
  static void fn(const U8Rows& W, int64_t r0, const Q8Acts& X, int64_t t0, float* Y, int64_t ldy, float beta) {
    micro_tile<K, RN>(W, r0, X, t0, Y, ldy, beta);
  }
  static constexpr TileFn table[4] = {fn<1>, fn<2>, fn<3>, fn<4>};
  static void sweep(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta) {
    for (int64_t t0 = 0; t0 < X.n; t0 += 4) {
      const int64_t rn = std::min<int64_t>(4, X.n - t0);
      for (int64_t r0 = 0; r0 < W.rows; r0 += 4) table[rn - 1](W, r0, X, t0, Y, ldy, beta);
    }
  }
};

}  // namespace
}  // namespace moetool::quant_dot_simd
