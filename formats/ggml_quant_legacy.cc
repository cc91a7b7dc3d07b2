// formats/ggml_quant_legacy.cc — quantizers of ggml's 32-element block formats (Q8_0, Q4_0, Q4_1, Q5_0,
// Q5_1): the reference ones (ggml's quantize_row_*_ref) and the importance-weighted ones (llama.cpp's
// quantize_row_q{4,5}_{0,1}_impl), operation by operation as ggml writes them. Layouts in
// formats/ggml_blocks.h.
#include "formats/ggml_quant_internal.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <limits>
#include <type_traits>

#include "formats/ggml_blocks.h"

namespace moetool::ggml_quant {
namespace {

using namespace moetool::ggml;

// The block type of the _0 (kMin false) or _1 (kMin true) format of kBits bits.
template <int kBits, bool kMin>
using LegacyBlock = std::conditional_t<kBits == 4, std::conditional_t<kMin, BlockQ4_1, BlockQ4_0>,
                                       std::conditional_t<kMin, BlockQ5_1, BlockQ5_0>>;

// Writes 32 levels (0 .. 2^kBits − 1) into block y of type B: the low nibbles as nibble32 in qs,
// and for 5-bit formats the fifth bits into qh (bit j for level j).
template <class B, class Level>
void pack_levels(const Level* L, uint8_t* y) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const auto xi0 = static_cast<uint8_t>(L[j]);
    const auto xi1 = static_cast<uint8_t>(L[j + kQK / 2]);
    y[B::kQs + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
    qh |= ((xi0 & 0x10u) >> 4) << j;
    qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
  }
  if constexpr (requires { B::kQh; }) std::memcpy(y + B::kQh, &qh, 4);  // 5-bit formats
}

// ---- reference quantizers (ggml's quantize_row_*_ref) ----

void quant_q8_0(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += BlockQ8_0::kBytes) {
#if defined(__AVX2__)
    // The same float operations, eight at a time (inputs are finite, checked by the caller): max |x|
    // (order-free), x·id and round-half-away are elementwise, so the bytes are the scalar loop's.
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 v[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      v[k] = _mm256_loadu_ps(x + 8 * k);
      m = _mm256_max_ps(_mm256_and_ps(v[k], abs_mask), m);
    }
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h);
#else
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
#endif
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
#if defined(__AVX2__)
    const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
    __m256i q[4];
    for (int k = 0; k < 4; ++k) {  // round_half_away(x·id), as in ggml_quant_internal.h
      const __m256 x0 = _mm256_mul_ps(v[k], vid);
      const __m256 t = _mm256_round_ps(x0, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 away = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(x0, t), abs_mask), half, _CMP_GE_OQ);
      const __m256 step = _mm256_or_ps(one, _mm256_and_ps(x0, sign_mask));  // copysign(1, x0)
      q[k] = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(away, step)));
    }
    // int32 → int8 (|q| ≤ 127): packs interleave 128-bit lanes; the permute restores the order.
    const __m256i w16 = _mm256_packs_epi32(q[0], q[1]), w16b = _mm256_packs_epi32(q[2], q[3]);
    const __m256i w8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(w16, w16b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + BlockQ8_0::kQs), w8);
#else
    for (int j = 0; j < kQK; ++j) {
      const float x0 = x[j] * id;
      y[BlockQ8_0::kQs + j] = static_cast<uint8_t>(static_cast<int8_t>(round_half_away(x0)));
    }
#endif
  }
}

// The value with the largest magnitude (the first one on ties), as ggml's _0 quantizers pick it.
inline float signed_absmax(const float* x) {
#if defined(__AVX2__)
  // max |x| eight at a time (order-free), then the first element of that magnitude: the loop below's
  // answer (inputs are finite, checked by the caller).
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + 8 * k), abs_mask), m);
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  const float top = _mm_cvtss_f32(h);
  if (top == 0.0f) return 0.0f;
  for (int j = 0; j < kQK; ++j)
    if (std::fabs(x[j]) == top) return x[j];
#endif
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  return max;
}

// Q4_0 / Q5_0: d = signed absmax / −2^(kBits−1); level = min(2^kBits − 1, (int8_t)(x/d + 2^(kBits−1) + ½)).
template <int kBits>
void quant_qx_0(const float* x, uint8_t* y, int64_t nb) {
  using B = LegacyBlock<kBits, false>;
  constexpr int nmax = 1 << (kBits - 1);  // 8 or 16
  uint8_t L[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += B::kBytes) {
    const float max = signed_absmax(x);
    const float d = max / -nmax;
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
#if defined(__AVX2__)
    // The same float operations eight at a time; x0 + nmax + ½ lies in [0, 2·nmax + ½] (|x0| ≤ nmax),
    // so truncating to int32 is the int8_t conversion.
    const __m256 vid = _mm256_set1_ps(id), off = _mm256_set1_ps(nmax + 0.5f);
    const __m256i top = _mm256_set1_epi32(2 * nmax - 1);
    int32_t L32[kQK];
    for (int k = 0; k < 4; ++k) {
      const __m256 x0 = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), vid);
      const __m256i l = _mm256_min_epi32(top, _mm256_cvttps_epi32(_mm256_add_ps(x0, off)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(L32 + 8 * k), l);
    }
    for (int j = 0; j < kQK; ++j) L[j] = static_cast<uint8_t>(L32[j]);
#else
    for (int j = 0; j < kQK; ++j) {
      const float x0 = x[j] * id;
      L[j] = static_cast<uint8_t>(std::min(2 * nmax - 1, static_cast<int>(static_cast<int8_t>(x0 + (nmax + 0.5f)))));
    }
#endif
    pack_levels<B>(L, y);
  }
}

// Q4_1 / Q5_1: d = (max − min) / (2^kBits − 1), m = min; level = round-half-up of (x − min)/d (Q4_1
// through int8_t and clamped to 15, Q5_1 straight to uint8_t, as ggml writes them).
template <int kBits>
void quant_qx_1(const float* x, uint8_t* y, int64_t nb) {
  using B = LegacyBlock<kBits, true>;
  constexpr int nmax = (1 << kBits) - 1;  // 15 or 31
  uint8_t L[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += B::kBytes) {
    float min = std::numeric_limits<float>::max(), max = -std::numeric_limits<float>::max();
    for (int j = 0; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / nmax;
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
    check_scale(y + 2, min);
    for (int j = 0; j < kQK; ++j) {
      const float x0 = (x[j] - min) * id;
      if constexpr (kBits == 4)
        L[j] = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      else
        L[j] = static_cast<uint8_t>(x0 + 0.5f);
    }
    pack_levels<B>(L, y);
  }
}

// ---- importance path (llama.cpp's quantize_row_q{4,5}_{0,1}_impl) ----
// Every block: weights w[j] = qw[j]·sqrt(σ² + x[j]²) with σ² = Σx²/n of the whole row. _0 formats: the
// weighted symmetric search of make_qx_quants (levels −nmax..nmax−1, 19 grids); _1 formats: the
// weighted scale/min search of make_qkx3_quants (37 grids). The levels of the search are stored as
// they are (no second rounding against the f16 scale), as llama.cpp does.

// The weights of block ib of a row: qw·sqrt(σ² + x²) (uniform importance where the block's is all zero).
inline void block_weights(const float* xb, const float* qw, float sigma2, float* weight) {
  float ones[kQK];
  const float* q = block_importance(qw, kQK, ones);
  for (int j = 0; j < kQK; ++j) weight[j] = q[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

inline float mean_square(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

template <int kBits>
void quant_qx_0_imp(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  using B = LegacyBlock<kBits, false>;
  constexpr int nmax = 1 << (kBits - 1);  // 8 or 16
  float weight[kQK];
  int8_t L[kQK];
  const float sigma2 = mean_square(x, n_per_row);
  for (int64_t ib = 0; ib < n_per_row / kQK; ++ib, y += B::kBytes) {
    const float* xb = x + kQK * ib;
    block_weights(xb, qw + kQK * ib, sigma2, weight);
    check_scale(y, make_qx_quants(kQK, nmax, xb, L, weight));
    pack_levels<B>(L, y);
  }
}

template <int kBits>
void quant_qx_1_imp(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  using B = LegacyBlock<kBits, true>;
  constexpr int nmax = (1 << kBits) - 1;  // 15 or 31
  float weight[kQK];
  uint8_t L[kQK], Laux[kQK];
  const float sigma2 = mean_square(x, n_per_row);
  for (int64_t ib = 0; ib < n_per_row / kQK; ++ib, y += B::kBytes) {
    const float* xb = x + kQK * ib;
    block_weights(xb, qw + kQK * ib, sigma2, weight);
    float neg_min;
    // make_qkx3_quants with weights is make_qkx2_quants (the same operations).
    const float d = make_qkx2_quants(kQK, nmax, xb, weight, L, &neg_min, Laux, -0.9f, 0.05f, 36, false);
    check_scale(y, d);
    check_scale(y + 2, -neg_min);
    pack_levels<B>(L, y);
  }
}

}  // namespace

const Codec* legacy_codec(GGMLType t) {
  static const Codec q8_0{quant_q8_0, nullptr};
  static const Codec q4_0{quant_qx_0<4>, quant_qx_0_imp<4>};
  static const Codec q4_1{quant_qx_1<4>, quant_qx_1_imp<4>};
  static const Codec q5_0{quant_qx_0<5>, quant_qx_0_imp<5>};
  static const Codec q5_1{quant_qx_1<5>, quant_qx_1_imp<5>};
  switch (t) {
    case GGMLType::Q8_0: return &q8_0;
    case GGMLType::Q4_0: return &q4_0;
    case GGMLType::Q4_1: return &q4_1;
    case GGMLType::Q5_0: return &q5_0;
    case GGMLType::Q5_1: return &q5_1;
    default: return nullptr;
  }
}

}  // namespace moetool::ggml_quant
