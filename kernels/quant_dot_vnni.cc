// kernels/quant_dot_vnni.cc — the AVX-512 VNNI kernel of the integer dot path (quant_dot.h, tiles in
// quant_dot_tiles.h): lanes = vpdpbusd(init, q, p), where init holds −o·Σp per half, so the offset
// costs nothing. Compiled for that target from the #pragma on (after the standard headers, so no
// inline function of theirs is built with it) and run only where the CPU reports the extensions.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/quant_dot.h"

namespace moetool::quant_dot_simd {

bool avx512_vnni_usable() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
}

}  // namespace moetool::quant_dot_simd

#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512vnni")
#include "kernels/quant_dot_tiles.h"

namespace moetool::quant_dot_simd {
namespace {
struct Vnni {
  using WReg = __m256i;
  static WReg prep(const uint8_t* q) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)); }
  static __m256i lanes(__m256i init, WReg w, __m256i p) { return _mm256_dpbusd_epi32(init, w, p); }
};
}  // namespace

void dot_rows_vnni(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta) {
  Tiles<Vnni>::sweep(W, X, Y, ldy, beta);
}

}  // namespace moetool::quant_dot_simd
#pragma GCC pop_options
