// formats/ggml_levels.cc — level grids of encoded ggml blocks and in-place level writes (see
// ggml_levels.h). The scales come from formats/ggml_blocks.h's head/sub-block decoders, so the grid
// and the dequantizer cannot disagree; the level bit positions mirror each block's value().
#include "formats/ggml_levels.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/ggml_blocks.h"

namespace moetool {
namespace {

using namespace ggml;

// Stores the low nibble of v in the low (high = 0) or high (high = 1) half of *b.
void set_nibble(uint8_t* b, int high, int v) {
  const int shift = 4 * high;
  *b = static_cast<uint8_t>((*b & ~(0xF << shift)) | ((v & 0xF) << shift));
}
void set_bit(uint8_t* b, int bit, int v) { *b = static_cast<uint8_t>(v ? (*b | (1 << bit)) : (*b & ~(1 << bit))); }

// The fixed part of a type's grid: range and offset; whether the sub-block min is added (+1) or
// subtracted (−1, the K-quants' dmin·m).
struct Range {
  int qmin, qmax, offset, min_sign;
};
Range range_of(GGMLType t) {
  switch (t) {
    case GGMLType::Q8_0: return {-127, 127, 0, 0};
    case GGMLType::Q4_0: return {0, 15, -8, 0};
    case GGMLType::Q4_1: return {0, 15, 0, 1};
    case GGMLType::Q5_0: return {0, 31, -16, 0};
    case GGMLType::Q5_1: return {0, 31, 0, 1};
    case GGMLType::Q4_K: return {0, 15, 0, -1};
    case GGMLType::Q5_K: return {0, 31, 0, -1};
    case GGMLType::Q6_K: return {0, 63, -32, 0};
    default: fail("ggml level grid: type ", ggml_type_name(t), " has no levels (expected a Q*_0/_1 or Q4_K/Q5_K/Q6_K type)");
  }
}

}  // namespace

int GGMLBlockLevels::nearest(int j, float x) const {
  const float s = scale[j];
  if (s == 0 || !std::isfinite(s)) return std::clamp(-offset, qmin, qmax);
  const float t = (x - min[j]) / s - static_cast<float>(offset);
  const int q = static_cast<int>(std::clamp(std::nearbyint(t), static_cast<float>(qmin), static_cast<float>(qmax)));
  // nearbyint rounds half to even; the grid's neighbours decide ties and float rounding in t.
  int best = q;
  float be = std::fabs(x - value(j, q));
  for (int c : {q - 1, q + 1}) {
    if (c < qmin || c > qmax) continue;
    const float e = std::fabs(x - value(j, c));
    if (e < be || (e == be && c < best)) best = c, be = e;
  }
  return best;
}

bool ggml_has_levels(GGMLType t) {
  switch (t) {
    case GGMLType::Q8_0: case GGMLType::Q4_0: case GGMLType::Q4_1: case GGMLType::Q5_0: case GGMLType::Q5_1:
    case GGMLType::Q4_K: case GGMLType::Q5_K: case GGMLType::Q6_K: return true;
    default: return false;
  }
}

void ggml_block_levels(GGMLType t, const uint8_t* blk, GGMLBlockLevels* out) {
  const Range rg = range_of(t);
  out->qmin = rg.qmin, out->qmax = rg.qmax, out->offset = rg.offset;
  with_block(t, [&](auto b) {
    using B = decltype(b);
    const Head head = B::head(blk);
    for (int s = 0; s < B::kElems / B::kSub; ++s) {
      const Head h = B::sub(head, blk, s);
      const float m = rg.min_sign > 0 ? h.m : rg.min_sign < 0 ? -h.m : 0.0f;
      for (int j = s * B::kSub; j < (s + 1) * B::kSub; ++j) out->scale[j] = h.d, out->min[j] = m;
    }
  });
}

void ggml_block_set_level(GGMLType t, uint8_t* blk, int j, int q) {
  const Range rg = range_of(t);
  if (q < rg.qmin || q > rg.qmax) fail("ggml level ", q, " outside ", ggml_type_name(t), "'s range [", rg.qmin, ", ", rg.qmax, "]");
  switch (t) {
    case GGMLType::Q8_0:
      blk[BlockQ8_0::kQs + j] = static_cast<uint8_t>(static_cast<int8_t>(q));
      return;
    case GGMLType::Q4_0: case GGMLType::Q4_1: {
      const int qs = t == GGMLType::Q4_0 ? BlockQ4_0::kQs : BlockQ4_1::kQs;
      set_nibble(blk + qs + j % 16, j / 16, q);
      return;
    }
    case GGMLType::Q5_0: case GGMLType::Q5_1: {
      const bool z = t == GGMLType::Q5_0;
      set_nibble(blk + (z ? BlockQ5_0::kQs : BlockQ5_1::kQs) + j % 16, j / 16, q);
      set_bit(blk + (z ? BlockQ5_0::kQh : BlockQ5_1::kQh) + j / 8, j % 8, q >> 4);  // bit j of the LE u32
      return;
    }
    case GGMLType::Q4_K: case GGMLType::Q5_K: {
      const int r = j / 32, l = j % 32;
      const bool k4 = t == GGMLType::Q4_K;
      set_nibble(blk + (k4 ? BlockQ4_K::kQs : BlockQ5_K::kQs) + 32 * (r >> 1) + l, r & 1, q);
      if (!k4) set_bit(blk + BlockQ5_K::kQh + l, r, q >> 4);
      return;
    }
    case GGMLType::Q6_K: {
      const int r = j / 16, l = j % 16, half = r >> 3, c = (r >> 1) & 3, i = 16 * (r & 1) + l;
      set_nibble(blk + BlockQ6_K::kQl + 64 * half + 32 * (c & 1) + i, c >> 1, q);
      uint8_t* h = blk + BlockQ6_K::kQh + 32 * half + i;
      *h = static_cast<uint8_t>((*h & ~(3 << (2 * c))) | (((q >> 4) & 3) << (2 * c)));
      return;
    }
    default: range_of(t);  // throws
  }
}

int ggml_block_level(GGMLType t, const uint8_t* blk, int j) {
  switch (t) {
    case GGMLType::Q8_0: return static_cast<int8_t>(blk[BlockQ8_0::kQs + j]);
    case GGMLType::Q4_0: return nibble(blk[BlockQ4_0::kQs + j % 16], j / 16);
    case GGMLType::Q4_1: return nibble(blk[BlockQ4_1::kQs + j % 16], j / 16);
    case GGMLType::Q5_0: return nibble(blk[BlockQ5_0::kQs + j % 16], j / 16) | q5_high(load_u32(blk + BlockQ5_0::kQh), j);
    case GGMLType::Q5_1: return nibble(blk[BlockQ5_1::kQs + j % 16], j / 16) | q5_high(load_u32(blk + BlockQ5_1::kQh), j);
    case GGMLType::Q4_K: return nibble(blk[BlockQ4_K::kQs + 32 * (j / 64) + j % 32], (j / 32) & 1);
    case GGMLType::Q5_K: {
      const int r = j / 32, l = j % 32;
      return nibble(blk[BlockQ5_K::kQs + 32 * (r >> 1) + l], r & 1) | (((blk[BlockQ5_K::kQh + l] >> r) & 1) << 4);
    }
    case GGMLType::Q6_K: {
      const int r = j / 16, l = j % 16, half = r >> 3, c = (r >> 1) & 3, i = 16 * (r & 1) + l;
      return nibble(blk[BlockQ6_K::kQl + 64 * half + 32 * (c & 1) + i], c >> 1) |
             (((blk[BlockQ6_K::kQh + 32 * half + i] >> (2 * c)) & 3) << 4);
    }
    default: range_of(t); return 0;  // throws
  }
}

namespace {
// Byte offsets of d and of m (−1: none) in a block.
std::pair<int, int> scale_offsets(GGMLType t) {
  switch (t) {
    case GGMLType::Q8_0: case GGMLType::Q4_0: case GGMLType::Q5_0: return {0, -1};
    case GGMLType::Q4_1: case GGMLType::Q5_1: case GGMLType::Q4_K: case GGMLType::Q5_K: return {0, 2};
    case GGMLType::Q6_K: return {BlockQ6_K::kD, -1};
    default: range_of(t); return {0, -1};  // throws
  }
}
void store_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  p[0] = static_cast<uint8_t>(h & 0xFF);
  p[1] = static_cast<uint8_t>(h >> 8);
}
}  // namespace

GGMLScaleFields ggml_block_scale_fields(GGMLType t, const uint8_t* blk) {
  const auto [od, om] = scale_offsets(t);
  GGMLScaleFields f;
  f.d = f16_at(blk + od);
  if (om >= 0) f.m = f16_at(blk + om), f.has_m = true;
  return f;
}

void ggml_block_set_scale_fields(GGMLType t, uint8_t* blk, float d, float m) {
  const auto [od, om] = scale_offsets(t);
  store_f16(blk + od, d);
  if (om >= 0) store_f16(blk + om, m);
}

}  // namespace moetool
