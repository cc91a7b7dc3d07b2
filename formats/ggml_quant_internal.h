// formats/ggml_quant_internal.h — what the ggml quantizer files share (not a public API): the value
// error a block quantizer throws, f16 scale stores, ggml's rounding, the scale searches
// (formats/ggml_quant_search.cc) and the per-type quantizer tables (formats/ggml_quant_legacy.cc,
// formats/ggml_quant_k.cc) that formats/ggml_quants.cc dispatches to. Those files must not contract
// a·b + c into fused multiply-adds: ggml's reference quantizers round every product and sum separately
// (and ggml's own build produces those bytes), while GCC contracts by default when -mfma is on, which
// moves a few K-quant scales by one step. CMakeLists.txt compiles them with -ffp-contract=off (under
// clang the pragma below does it).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/ggml_types.h"

#if defined(__clang__)
#pragma clang fp contract(off)
#endif

namespace moetool::ggml_quant {

constexpr int kQK = 32;    // elements per block of the _0/_1 formats
constexpr int kQKK = 256;  // elements per K-quant super-block
constexpr float kGroupMaxEps = 1e-15f;

// Thrown inside a block quantizer; formats/ggml_quants.cc adds the row to the message.
struct ValueError {
  std::string why;
};

// Stores f as f16 at p; returns the stored value.
inline float put_f16(uint8_t* p, float f) {
  const uint16_t h = f32_to_f16(f);
  std::memcpy(p, &h, 2);
  return f16_to_f32(h);
}
// Stores a block scale as f16; it must be a finite half: a larger one would make llama.cpp compute
// with Inf.
inline void check_scale(uint8_t* p, float f) {
  if (!std::isfinite(put_f16(p, f)))
    throw ValueError{str("a block scale of ", f, " overflows half precision (values too large for this format)")};
}

// std::roundf (half away from zero), bit for bit for every float, inline where libm's is a call per
// element: x − trunc(x) is exact (|x| < 1, or x and trunc(x) within a factor 2), so the test is too.
inline float round_half_away(float x) {
  const float t = std::trunc(x);
  return std::fabs(x - t) >= 0.5f ? t + std::copysign(1.0f, x) : t;
}

// ggml's nearest_int: round half to even through the float mantissa (valid for |f| <= 4194303).
inline int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

// ---- scale searches (ggml-quants.c; formats/ggml_quant_search.cc) ----

// Scale and min for `n` values with levels 0..nmax, searched over nstep+1 candidate scales
// (ggml's make_qkx2_quants). Returns the scale; *the_min receives −min (>= 0).
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad);
// Symmetric scale for `n` values with levels −nmax..nmax−1 (ggml's make_qx_quants with rmse_type
// 1): the scale minimising Σ w·(x − scale·l)² over 19 candidate rounding grids, with w = qw[i]
// (importance path) or x² when qw is null (reference path). L receives level + nmax.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw);
// make_qx_quants(16, 32, x + 16·j, L + 16·j, null) for the 16 sub-blocks j of a 256-element
// super-block (Q6_K's reference scale search) at once, bit for bit; scales[16].
void make_qx_quants_16x16(const float* x, int8_t* L, float* scales);
// Unsigned levels 0..nmax for `n` non-negative values (the sub-block scales or mins of a K-quant
// super-block) with one scale, minimising Σ qw·(x − scale·l)² (ggml's make_qp_quants): 9 candidate
// grids around nmax/max, then up to 5 rounds of moving single levels while that lowers the error.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* qw);
// The importance of one block: `qw` itself, or all ones when every entry is zero (columns that
// calibration never saw carry no information; weighting them all by zero would let the fit put
// the whole block on scale 0). `ones` provides the storage.
const float* block_importance(const float* qw, int n, float* ones);

// ---- quantizers of one type ----
struct Codec {
  void (*quant)(const float*, uint8_t*, int64_t);  // nb blocks, ggml's reference quantizer
  // One row of n_per_row values with its n_per_row importance weights; null where the type
  // ignores importance (Q8_0, as llama.cpp's quantize_q8_0 does).
  void (*quant_imp)(const float*, uint8_t*, int64_t, const float*);
};
// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (formats/ggml_quant_legacy.cc); null for other types.
const Codec* legacy_codec(GGMLType t);
// Q4_K, Q5_K, Q6_K (formats/ggml_quant_k.cc); null for other types.
const Codec* k_codec(GGMLType t);

}  // namespace moetool::ggml_quant
