// kernels/quant_dot_avx2.cc — the AVX2 kernel of the integer dot path (quant_dot.h, tiles in
// quant_dot_tiles.h): lanes = vpmaddwd(vpmaddubsw(q, p), 1) + init, exact while a pair q₁p₁ + q₂p₂
// fits int16: levels ≤ 63 give ≤ 2·63·127 = 16002. Q8_0 (levels up to 255) instead multiplies |w| by
// sign(w)·p with w = q − 128 its signed level: ≤ 2·128·127 = 32512, and without init (no offset left).
#include "kernels/quant_dot_tiles.h"

namespace moetool::quant_dot_simd {
namespace {

// AVX2 lane sums. Levels ≤ 63: maddubs(q, p) then pairs to int32, plus init.
struct Avx2Small {
  using WReg = __m256i;
  static WReg prep(const uint8_t* q) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)); }
  static __m256i lanes(__m256i init, WReg w, __m256i p) {
    return _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(w, p), _mm256_set1_epi16(1)));
  }
};
// AVX2, Q8_0: signed level w = q ^ 0x80; |w| times sign(w)·p.
struct Avx2Signed {
  struct WReg {
    __m256i w, absw;
  };
  static WReg prep(const uint8_t* q) {
    const __m256i w =
        _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), _mm256_set1_epi8(-128));
    return {w, _mm256_sign_epi8(w, w)};
  }
  static __m256i lanes(__m256i, WReg w, __m256i p) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w.absw, _mm256_sign_epi8(p, w.w)), _mm256_set1_epi16(1));
  }
};

}  // namespace

void dot_rows_avx2(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta) {
  if (W.offset == 128)
    Tiles<Avx2Signed>::sweep(W, X, Y, ldy, beta);
  else
    Tiles<Avx2Small>::sweep(W, X, Y, ldy, beta);
}

}  // namespace moetool::quant_dot_simd
