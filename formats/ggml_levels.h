// formats/ggml_levels.h — the level grid of one encoded ggml block, for quantizers that choose each
// element's level themselves after the block's scales are fixed (GPTQ over ggml blocks,
// compress/gptq_ggml.h): what value every level of an element decodes to, and writing one
// element's level in place without touching the block's scale fields.
//
// Element j of a block decodes to  s_j · (q + o) + m_j  for its stored level q ∈ [qmin, qmax]:
//   Q8_0  s = d,        o = 0,   m = 0,          q ∈ [−127, 127] (ggml's own range; −128 is not used)
//   Q4_0  s = d,        o = −8,  m = 0,          q ∈ [0, 15]      Q5_0: o = −16, q ∈ [0, 31]
//   Q4_1  s = d,        o = 0,   m = m,          q ∈ [0, 15]      Q5_1: q ∈ [0, 31]
//   Q4_K  s = d·sc_sub, o = 0,   m = −dmin·m_sub, q ∈ [0, 15]     Q5_K: q ∈ [0, 31]
//   Q6_K  s = d·sc_sub, o = −32, m = 0,          q ∈ [0, 63]
// evaluated as float(s · float(q + o)) + m, which is bit for bit what formats/ggml_blocks.h's decoder
// (and so llama.cpp's dequantize_row_*) produces for that level.
#pragma once

#include <cstdint>

#include "formats/ggml_types.h"

namespace moetool {

// The grid of every element of one block (up to 256 elements).
struct GGMLBlockLevels {
  int qmin = 0, qmax = 0, offset = 0;  // level range and o
  float scale[256] = {}, min[256] = {};  // s_j and m_j
  float value(int j, int q) const { return scale[j] * static_cast<float>(q + offset) + min[j]; }
  // The level of element j nearest to x (ties to the lower level), clamped to the range; with a zero
  // scale the level whose decoded value is m_j (q = −o when in range).
  int nearest(int j, float x) const;
};

// Whether a type has a level grid here: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
bool ggml_has_levels(GGMLType t);
// The grid of the block at `blk` (t must have levels).
void ggml_block_levels(GGMLType t, const uint8_t* blk, GGMLBlockLevels* out);
// Level q of element j (0 ≤ j < block size, q in the type's range) stored in the block at `blk`.
void ggml_block_set_level(GGMLType t, uint8_t* blk, int j, int q);
// The stored level of element j of the block at `blk`.
int ggml_block_level(GGMLType t, const uint8_t* blk, int j);

// The block's f16 scale fields: d, and m (Q4_1/Q5_1's min, the K-quants' dmin; has_m false and m 0
// for Q8_0, Q4_0, Q5_0, Q6_K). Every element decodes linearly in them: s_j = d·c_j, m_j = ±m·c'_j
// with the block's integer sub-block scales c, c' (1 outside the K-quants).
struct GGMLScaleFields {
  float d = 0, m = 0;
  bool has_m = false;
};
GGMLScaleFields ggml_block_scale_fields(GGMLType t, const uint8_t* blk);
// Stores d (and m, where the type has it) rounded to f16; levels and sub-block scales untouched.
void ggml_block_set_scale_fields(GGMLType t, uint8_t* blk, float d, float m);

}  // namespace moetool
