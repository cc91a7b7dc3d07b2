// formats/ggml_blocks.h — ggml's block layouts and the one decoder of each (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K, and the F16/BF16 plain types), shared by the CPU dequantizers (formats/ggml_quants.cc)
// and the CUDA kernels (kernels/cuda/quant_cuda.cu). Header-only: every function is `__host__ __device__`
// inline under nvcc (MOETOOL_HD) and plain inline elsewhere, without allocation, exceptions or library
// calls, so the code a GPU runs is the code the CPU tests check against ggml.
//
// A block type B is a struct of layout constants (kType, kName, kBytes, kElems, byte offsets of its
// fields) and a three-step decoder: B::head(blk) decodes the block's own scale fields, B::sub(head, blk,
// s) what every element of sub-block s needs (kSub elements share one scale and min; the block's head
// where the block is one sub-block), B::value(sub, blk, r, l) element l of run r: a run is kRun
// consecutive elements (element r·kRun + l of the block, inside sub-block r·kRun / kSub) whose bits
// sit at the same place of consecutive bytes, so that a loop over l reads bytes in order and
// vectorizes. block_value<B> decodes one element (a GPU thread's work), decode_blocks<B> whole blocks
// (the CPU loop: each head and sub-block head once, each run a vector loop). The values are those of
// ggml's dequantize_row_* bit for bit: the order of float operations is ggml's, and every product
// that a sum follows is exact in float32, so contraction into fused multiply-adds cannot change them.
#pragma once

#include <cstdint>

#include "formats/ggml_types.h"

#if defined(__CUDACC__)
#define MOETOOL_HD __host__ __device__ __forceinline__
#else
#define MOETOOL_HD inline
#endif

namespace moetool::ggml {

// ---- scalars -----------------------------------------------------------------------------------

// The bits of a value as another type of the same size.
template <class To, class From>
MOETOOL_HD To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast between types of different sizes");
  union {
    From from;
    To to;
  } c{v};
  return c.to;
}
MOETOOL_HD float bits_to_float(uint32_t u) { return bit_cast<float>(u); }
MOETOOL_HD uint32_t float_to_bits(float f) { return bit_cast<uint32_t>(f); }

// Little-endian loads from any byte address (block fields are not aligned).
MOETOOL_HD uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
MOETOOL_HD uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// IEEE half → float32, exact, subnormals included (NaN payloads kept).
MOETOOL_HD float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | (mant << 13));  // inf / nan
  if (exp == 0) {  // zero or subnormal: mant · 2⁻²⁴, exact
    const float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}
// bfloat16 → float32 (exact).
MOETOOL_HD float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }
// The f16 stored at p.
MOETOOL_HD float f16_at(const uint8_t* p) { return half_to_float(load_u16(p)); }

// The low (high = 0) or high (high = 1) nibble of a byte.
MOETOOL_HD int nibble(uint8_t b, int high) { return (b >> (4 * high)) & 0xF; }

// 6-bit scale and min of sub-block s (0 ≤ s < 8) from a Q4_K/Q5_K block's packed scales[12].
MOETOOL_HD void k4_scale_min(const uint8_t* sc12, int s, int* sc, int* m) {
  if (s < 4) {
    *sc = sc12[s] & 63;
    *m = sc12[s + 4] & 63;
  } else {
    *sc = (sc12[s + 4] & 0xF) | ((sc12[s - 4] >> 6) << 4);
    *m = (sc12[s + 4] >> 4) | ((sc12[s] >> 6) << 4);
  }
}

// What the elements of a block or sub-block share: a scale, a min (added; 0 where the format has none)
// and the fifth bits of a Q5_0/Q5_1 block.
struct Head {
  float d = 0, m = 0;
  uint32_t qh = 0;
};
// The sub-block step of a block type that is one sub-block (kSub = kElems): the block's head.
struct WholeBlock {
  MOETOOL_HD static Head sub(const Head& h, const uint8_t*, int) { return h; }
};

// ---- 32-element blocks (f16 d first) -----------------------------------------------------------
// 4-bit levels: 16 bytes qs, element l of run 0 in the low nibble of qs[l], of run 1 in the high one.

// Q8_0, 34 B: f16 d; i8 qs[32]. x = q·d.
struct BlockQ8_0 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::Q8_0;
  static constexpr const char* kName = "Q8_0";
  static constexpr int kBytes = 34, kElems = 32, kSub = 32, kRun = 32, kQs = 2;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b), 0, 0}; }
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int, int l) {
    return static_cast<float>(static_cast<int8_t>(b[kQs + l])) * h.d;
  }
};
// Q4_0, 18 B: f16 d; u8 qs[16]. x = (q − 8)·d.
struct BlockQ4_0 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::Q4_0;
  static constexpr const char* kName = "Q4_0";
  static constexpr int kBytes = 18, kElems = 32, kSub = 32, kRun = 16, kQs = 2;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b), 0, 0}; }
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    return static_cast<float>(nibble(b[kQs + l], r) - 8) * h.d;
  }
};
// Q4_1, 20 B: f16 d, m; u8 qs[16]. x = q·d + m.
struct BlockQ4_1 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::Q4_1;
  static constexpr const char* kName = "Q4_1";
  static constexpr int kBytes = 20, kElems = 32, kSub = 32, kRun = 16, kQs = 4;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b), f16_at(b + 2), 0}; }
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    return static_cast<float>(nibble(b[kQs + l], r)) * h.d + h.m;
  }
};
// The fifth bit of element j of a Q5_0/Q5_1 block (bit j of qh), as 0 or 16.
MOETOOL_HD int q5_high(uint32_t qh, int j) { return static_cast<int>((qh >> j) & 1u) << 4; }
// Q5_0, 22 B: f16 d; u32 qh (bit j = fifth bit of element j); u8 qs[16]. x = (q − 16)·d.
struct BlockQ5_0 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::Q5_0;
  static constexpr const char* kName = "Q5_0";
  static constexpr int kBytes = 22, kElems = 32, kSub = 32, kRun = 16, kQh = 2, kQs = 6;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b), 0, load_u32(b + kQh)}; }
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    return static_cast<float>((nibble(b[kQs + l], r) | q5_high(h.qh >> (16 * r), l)) - 16) * h.d;
  }
};
// Q5_1, 24 B: f16 d, m; u32 qh; u8 qs[16]. x = q·d + m.
struct BlockQ5_1 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::Q5_1;
  static constexpr const char* kName = "Q5_1";
  static constexpr int kBytes = 24, kElems = 32, kSub = 32, kRun = 16, kQh = 4, kQs = 8;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b), f16_at(b + 2), load_u32(b + kQh)}; }
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    return static_cast<float>(nibble(b[kQs + l], r) | q5_high(h.qh >> (16 * r), l)) * h.d + h.m;
  }
};

// ---- K-quants: 256-element super-blocks --------------------------------------------------------

// The head and sub-block heads of a Q4_K/Q5_K block (f16 d @0, dmin @2, scales[12] @4): d and dmin;
// for sub-block s d·sc and dmin·m, the products ggml's dequantize_row_q{4,5}_K form first.
struct K4Scales {
  static constexpr int kScales = 4;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b), f16_at(b + 2), 0}; }
  MOETOOL_HD static Head sub(const Head& h, const uint8_t* b, int s) {
    int sc, m;
    k4_scale_min(b + kScales, s, &sc, &m);
    return {h.d * static_cast<float>(sc), h.m * static_cast<float>(m), 0};
  }
};
// Q4_K, 144 B: f16 d, dmin; u8 scales[12] (8 × 6-bit scale and min); u8 qs[128]. Sub-block (and run)
// s: the low (s even) or high (s odd) nibbles of qs[32·(s/2) .. 32·(s/2) + 31]. x = (d·sc)·q − dmin·m.
struct BlockQ4_K : K4Scales {
  static constexpr GGMLType kType = GGMLType::Q4_K;
  static constexpr const char* kName = "Q4_K";
  static constexpr int kBytes = 144, kElems = 256, kSub = 32, kRun = 32, kQs = 16;
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    return h.d * static_cast<float>(nibble(b[kQs + 32 * (r >> 1) + l], r & 1)) - h.m;
  }
};
// Q5_K, 176 B: f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]. Q4_K's element with a fifth bit:
// bit s of qh[l] for element l of sub-block s.
struct BlockQ5_K : K4Scales {
  static constexpr GGMLType kType = GGMLType::Q5_K;
  static constexpr const char* kName = "Q5_K";
  static constexpr int kBytes = 176, kElems = 256, kSub = 32, kRun = 32, kQh = 16, kQs = 48;
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    const int hi = (b[kQh + l] & (1 << r)) ? 16 : 0;
    return h.d * static_cast<float>(nibble(b[kQs + 32 * (r >> 1) + l], r & 1) | hi) - h.m;
  }
};
// Q6_K, 210 B: u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d. Halves of 128 elements; in a half, quarter
// c of 32 takes the low (c = 0, 1) or high (c = 2, 3) nibbles of ql[32·(c mod 2) + l] and bits 2c, 2c+1
// of qh[l] (l < 32); sub-block s (16 elements, also the run) has scale s. x = (d·scale)·(q − 32).
struct BlockQ6_K {
  static constexpr GGMLType kType = GGMLType::Q6_K;
  static constexpr const char* kName = "Q6_K";
  static constexpr int kBytes = 210, kElems = 256, kSub = 16, kRun = 16, kQl = 0, kQh = 128, kScales = 192, kD = 208;
  MOETOOL_HD static Head head(const uint8_t* b) { return {f16_at(b + kD), 0, 0}; }
  MOETOOL_HD static Head sub(const Head& h, const uint8_t* b, int s) {
    return {h.d * static_cast<float>(static_cast<int8_t>(b[kScales + s])), 0, 0};
  }
  MOETOOL_HD static float value(const Head& h, const uint8_t* b, int r, int l) {
    const int half = r >> 3, c = (r >> 1) & 3, i = 16 * (r & 1) + l;
    const int lo = nibble(b[kQl + 64 * half + 32 * (c & 1) + i], c >> 1);
    const int q = (lo | (((b[kQh + 32 * half + i] >> (2 * c)) & 3) << 4)) - 32;
    return h.d * static_cast<float>(q);
  }
};

// ---- plain 16-bit types (a "block" of one element) --------------------------------------------

struct BlockF16 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::F16;
  static constexpr const char* kName = "F16";
  static constexpr int kBytes = 2, kElems = 1, kSub = 1, kRun = 1;
  MOETOOL_HD static Head head(const uint8_t*) { return {}; }
  MOETOOL_HD static float value(const Head&, const uint8_t* b, int, int) { return f16_at(b); }
};
struct BlockBF16 : WholeBlock {
  static constexpr GGMLType kType = GGMLType::BF16;
  static constexpr const char* kName = "BF16";
  static constexpr int kBytes = 2, kElems = 1, kSub = 1, kRun = 1;
  MOETOOL_HD static Head head(const uint8_t*) { return {}; }
  MOETOOL_HD static float value(const Head&, const uint8_t* b, int, int) { return bf16_to_float(load_u16(b)); }
};

// ---- decoding ----------------------------------------------------------------------------------

// Element j (0 ≤ j < B::kElems) of the block at b.
template <class B>
MOETOOL_HD float block_value(const uint8_t* b, int j) {
  return B::value(B::sub(B::head(b), b, j / B::kSub), b, j / B::kRun, j % B::kRun);
}

// Loop hints for decode_blocks (results do not depend on them): unroll the sub-blocks, so that the
// bit positions of every run are constants, and vectorize each run.
#if defined(__CUDACC__) || defined(__clang__)
#define MOETOOL_UNROLL_SUBBLOCKS _Pragma("unroll")
#else
#define MOETOOL_UNROLL_SUBBLOCKS _Pragma("GCC unroll 16")
#endif
#if defined(_OPENMP) && !defined(__CUDACC__)
#define MOETOOL_SIMD_RUN _Pragma("omp simd")
#else
#define MOETOOL_SIMD_RUN
#endif

// y[0 .. nblocks · B::kElems) from nblocks consecutive blocks at b (y must not overlap them).
template <class B>
MOETOOL_HD void decode_blocks(const uint8_t* __restrict__ b, float* __restrict__ y, int64_t nblocks) {
  for (int64_t i = 0; i < nblocks; ++i, b += B::kBytes, y += B::kElems) {
    const Head head = B::head(b);
    MOETOOL_UNROLL_SUBBLOCKS
    for (int s = 0; s < B::kElems / B::kSub; ++s) {
      const Head h = B::sub(head, b, s);
      for (int r = s * (B::kSub / B::kRun); r < (s + 1) * (B::kSub / B::kRun); ++r)
        MOETOOL_SIMD_RUN
        for (int l = 0; l < B::kRun; ++l) y[r * B::kRun + l] = B::value(h, b, r, l);
    }
  }
}

// f(B{}) for the block type of t; false (f not called) when t has none here.
template <class F>
bool with_block(GGMLType t, F&& f) {
  switch (t) {
    case GGMLType::Q8_0: f(BlockQ8_0{}); return true;
    case GGMLType::Q4_0: f(BlockQ4_0{}); return true;
    case GGMLType::Q4_1: f(BlockQ4_1{}); return true;
    case GGMLType::Q5_0: f(BlockQ5_0{}); return true;
    case GGMLType::Q5_1: f(BlockQ5_1{}); return true;
    case GGMLType::Q4_K: f(BlockQ4_K{}); return true;
    case GGMLType::Q5_K: f(BlockQ5_K{}); return true;
    case GGMLType::Q6_K: f(BlockQ6_K{}); return true;
    case GGMLType::F16: f(BlockF16{}); return true;
    case GGMLType::BF16: f(BlockBF16{}); return true;
    default: return false;
  }
}

}  // namespace moetool::ggml
