// formats/gptq_pack.h — an IntQuantized matrix (formats/int_codec.h) as the four tensors of a GPTQ
// "v1" checkpoint linear, exactly as AutoGPTQ / GPTQModel / transformers / vLLM store and read them:
//
//   qweight int32 [cols·bits/32, rows]   for each output r, the q[r, i] of i = 0 .. cols−1 as one
//                                        little-endian bit stream down the column: q[r, i] occupies
//                                        bits i·bits .. i·bits+bits−1 of the stream, bit b of the
//                                        stream is bit b % 32 of qweight[b / 32, r]. For 2/4/8 bits
//                                        that is "input i0+k at bit k·bits of the word"; for 3 bits
//                                        32 values fill 3 words, values 10 and 21 straddling words.
//   qzeros  int32 [ngroups, rows·bits/32]  (zero − 1) of every output, the same bit stream along
//                                        the output dim (the v1 off-by-one; zero = 0 cannot be stored)
//   scales  f16   [ngroups, rows]
//   g_idx   int32 [cols]                 group of each input column
//
//   dequant: W[r, i] = scales[g_idx[i], r] · (q[r, i] − (stored_zero[g_idx[i], r] + 1))
//
// Verified against (1) AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py `QuantLinear.pack`
// (commit 179776bd): qweight[row] |= intweight[j] << (bits·(j − i)) for 2/4/8 bits, the 3-bit branch
// writes value 10 at bit 30 of word 0 and its top bit at bit 0 of word 1, value 21 at bit 31 of
// word 1 and its top two bits in word 2 (a sequential bit stream), `zeros -= 1` before packing qzeros
// along the output dim, and its torch forward adds 1 back to the unpacked zeros; (2) vLLM
// csrc/quantization/gptq/q_gemm.cu `reconstruct_gptq_kernel` (commit 03b2ee5e): value row + s/bit
// at shift s of qweight[row·bits/32, column], zero_offset = 1 for the v1 format, and
// w = (q − (zero + 1)) · scale with the group g_idx[row].
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "formats/int_codec.h"

namespace moetool {

struct GPTQTensors {
  int64_t rows = 0, cols = 0, ngroups = 0;
  int bits = 4;
  std::vector<int32_t> qweight;   // [cols·bits/32, rows]  q packed along the input dim, little-endian bit stream
  std::vector<int32_t> qzeros;    // [ngroups, rows·bits/32] (zero − 1, the v1 off-by-one), packed the same way
  std::vector<uint16_t> scales;   // [ngroups, rows] f16 bits
  std::vector<int32_t> g_idx;     // [cols]
};

// Throws when cols·bits or rows·bits is not a multiple of 32, on a zero outside 1 .. 2^bits (the
// v1 layout stores zero − 1 in `bits` bits), a q beyond 2^bits − 1, a g_idx out of range or a scale
// that is not finite in f16.
GPTQTensors gptq_pack(const IntQuantized& q);

// Inverse. Sym only affects nothing here: zeros are stored explicitly (spec.sym is reported true
// when every zero is 2^(bits−1); spec.group_size is cols / ngroups, −1 for one group). Validates
// bits, shapes, g_idx values and scales (finite), naming `what`. The arrays must hold the sizes
// above (the caller knows the tensors' shapes; formats/ checks them).
IntQuantized gptq_unpack(int bits, int64_t rows, int64_t cols, const int32_t* qweight, const int32_t* qzeros,
                         const uint16_t* scales, const int32_t* g_idx, int64_t ngroups, std::string_view what = {});
IntQuantized gptq_unpack(const GPTQTensors& t, std::string_view what = {});

// Validates a GPTQ linear's parameters (bits 2..8, positive shape, cols·bits and rows·bits multiples
// of 32, 1 ≤ ngroups ≤ cols) and g_idx[cols] values in 0 .. ngroups − 1, naming `what`.
void check_gptq_shape(int bits, int64_t rows, int64_t cols, int64_t ngroups, std::string_view what = {});
void check_gptq_g_idx(const int32_t* g_idx, int64_t cols, int64_t ngroups, std::string_view what = {});

// The value at index i of a little-endian bit stream of `bits`-bit values whose 32-bit words are
// words[w · stride] (stride = rows for qweight columns, 1 for qzeros rows).
inline uint32_t gptq_stream_get(const int32_t* words, int64_t stride, int64_t i, int bits) {
  const int64_t p = i * bits;
  const int64_t w = p >> 5;
  const int off = static_cast<int>(p & 31);
  uint32_t v = static_cast<uint32_t>(words[w * stride]) >> off;
  if (off + bits > 32) v |= static_cast<uint32_t>(words[(w + 1) * stride]) << (32 - off);
  return v & ((1u << bits) - 1u);
}

}  // namespace moetool
