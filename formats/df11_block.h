// formats/df11_block.h — the DF11 block decoder and block hash (formats/df11.h's layout), shared by the
// CPU decoder (formats/df11.cc) and the CUDA engine's (kernels/cuda/df11_cuda.cu): `__host__ __device__`
// inline under nvcc (MOETOOL_HD), no allocation, no exceptions, so the code the GPU runs is the code
// the CPU tests check.
#pragma once

#include <cstdint>

#include "formats/ggml_blocks.h"  // MOETOOL_HD

namespace moetool::df11 {

inline constexpr int kMaxCodeBits = 16;

// What decode_block found in a block (0: nothing wrong).
enum BlockStatus : int32_t { kBlockOk = 0, kBlockBadCode = 1, kBlockBadLength = 2, kBlockBadHash = 3 };

// A 64-bit hash of n BF16 values: four at a time (one little-endian 64-bit word: xor, multiply by an
// odd constant, xor-shift — one multiply per four values), the tail one by one.
MOETOOL_HD uint64_t block_hash(const uint16_t* v, int64_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ static_cast<uint64_t>(n);
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const uint64_t w = static_cast<uint64_t>(v[i]) | static_cast<uint64_t>(v[i + 1]) << 16 |
                       static_cast<uint64_t>(v[i + 2]) << 32 | static_cast<uint64_t>(v[i + 3]) << 48;
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  for (; i < n; ++i) h = ((h ^ v[i]) * 0xc4ceb9fe1a85ec53ull) ^ (h >> 29);
  return h;
}

// Decodes one block: `count` exponents from the code bytes [p, end) (MSB-first) through `table`
// (2^16 entries, (code length << 8) | exponent for every 16-bit prefix, 0 where no code starts so),
// joined with sign and mantissa sm[i] = sign << 7 | mantissa into out[i] = BF16 bits. kBlockBadCode
// when a prefix has no code or a code runs past the block's bytes; kBlockBadLength when more than the
// last byte's padding is left over.
MOETOOL_HD int32_t decode_block(const uint16_t* table, const uint8_t* p, const uint8_t* end, const uint8_t* sm,
                                int64_t count, uint16_t* out) {
  uint64_t acc = 0;  // MSB-aligned bit buffer
  int bits = 0;
  for (int64_t i = 0; i < count; ++i) {
    while (bits <= 56 && p < end) {
      acc |= static_cast<uint64_t>(*p++) << (56 - bits);
      bits += 8;
    }
    const uint16_t t = table[acc >> (64 - kMaxCodeBits)];
    const int len = t >> 8;
    if (len == 0 || len > bits) return kBlockBadCode;
    acc <<= len;
    bits -= len;
    const uint8_t s = sm[i];
    out[i] = static_cast<uint16_t>(((s & 0x80) << 8) | ((t & 0xff) << 7) | (s & 0x7f));
  }
  return p != end || bits >= 8 ? kBlockBadLength : kBlockOk;
}

}  // namespace moetool::df11
