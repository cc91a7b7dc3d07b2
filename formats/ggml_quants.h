// formats/ggml_quants.h — ggml's block formats: quantize float32 rows into, and dequantize rows
// from, exactly the byte layouts llama.cpp reads (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K),
// plus the F32/F16/BF16 pass-through types. Without an importance vector the quantizers reproduce
// ggml's reference (`quantize_row_*_ref`) quantizers: same input, same bytes.
//
// With an importance vector (Σx² per input column from calibration: llama.cpp's imatrix, one
// value per column, shared by every row) Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K use
// llama.cpp's importance-weighted quantizers (ggml's quantize_row_*_impl): each block's scale (and
// min) is searched to minimise Σ w_j (x_j − x̂_j)² with w_j = imp_j · sqrt(σ² + x_j²) (σ² = Σx²/n of
// the row; of the 256-element super-block, doubled, for Q4_K/Q5_K; w_j = imp_j for Q6_K), and the
// K-quants' 6-bit sub-block scales and mins are fitted with the same weights (make_qp_quants).
// The output has the same layout and decodes with the same dequantizer; it is byte-identical to
// ggml's imatrix path (ggml_quantize_chunk with quant_weights; checked against the ggml of
// llama-cpp-python in tests/quant_imatrix_test.cc) except where a block's importance is all zero:
// ggml then has nothing to fit it to (a Q4_0 block gets scale 0 and decodes to zeros), moetool uses
// uniform importance for that block.
// Q8_0 ignores the importance, as llama.cpp does (its 8-bit grid leaves nothing to trade), and so
// do F32/F16/BF16. A NaN, infinite or negative importance value, or a vector whose length is not
// n_per_row, is an error naming `what`.
//
// Block layouts (little-endian, f16 = IEEE half; QK_K = 256; formats/ggml_blocks.h has the decoder of
// each, which the CUDA kernels run too):
//   Q8_0  34 B / 32:  f16 d; i8 qs[32]                              x = q·d
//   Q4_0  18 B / 32:  f16 d; u8 qs[16] (j low nibble, j+16 high)     x = (q−8)·d
//   Q4_1  20 B / 32:  f16 d, m; u8 qs[16]                            x = q·d + m
//   Q5_0  22 B / 32:  f16 d; u32 qh (bit j = 5th bit of q_j); u8 qs[16]   x = (q−16)·d
//   Q5_1  24 B / 32:  f16 d, m; u32 qh; u8 qs[16]                    x = q·d + m
//   Q4_K 144 B / 256: f16 d, dmin; u8 scales[12] (8 × 6-bit scale and min); u8 qs[128]
//   Q5_K 176 B / 256: f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
//   Q6_K 210 B / 256: u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
//
// Every function throws moetool::Error (prefixed with `what`) on a row length that is not a
// multiple of the type's block size, an unsupported type, a NaN or infinite input, or a value too
// large for the format (a block scale, or an F16 value, that would overflow half precision).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "formats/ggml_types.h"

namespace moetool {

// Whether quantize_rows / dequantize_rows handle this type.
bool ggml_quant_supported(GGMLType t);
// Whether dequantize_rows handles this type (a superset: also F64 and the integer-free plain types).
bool ggml_dequant_supported(GGMLType t);

// Throws unless `t` is supported and n_per_row is a positive multiple of its block size.
void check_quant_row(GGMLType t, int64_t n_per_row, std::string_view what = {});

// The type llama.cpp's llama-quantize uses instead of `t` for rows of n_per_row elements when
// n_per_row is not a multiple of t's block size (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0,
// Q2_K / Q3_K → Q4_0; F16 when even that does not divide the row). `t` itself when it fits.
GGMLType ggml_fallback_type(GGMLType t, int64_t n_per_row);

// Whether quantize_rows uses an importance vector for this type (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
// Q5_K, Q6_K); false for Q8_0 and the plain types, which ignore it.
bool ggml_quant_uses_importance(GGMLType t);

// src[nrows, n_per_row] float32 → dst (nrows · ggml_row_size(t, n_per_row) bytes). Rows are
// quantized in parallel (OpenMP). `importance` (n_per_row values, importance[j] for input column j;
// may be null) selects the importance-weighted quantizers; null selects ggml's reference ones.
void quantize_rows(GGMLType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                   const float* importance = nullptr, std::string_view what = {});
// The same with a length-checked importance vector (always used; its size must be n_per_row).
void quantize_rows(GGMLType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                   std::span<const float> importance, std::string_view what = {});
// dst[nrows, n_per_row] float32 from nrows rows of t. In parallel over rows.
void dequantize_rows(GGMLType t, const void* src, float* dst, int64_t nrows, int64_t n_per_row,
                     std::string_view what = {});

// One row of n values (a multiple of the block size), single-threaded, for callers that parallelise
// themselves (GPTQ quantizes block by block): as quantize_rows with `importance` (n values, may be
// null), without its argument checks; a value the format cannot hold throws naming `what`.
void quantize_row(GGMLType t, const float* src, void* dst, int64_t n, const float* importance,
                  std::string_view what = {});
// One row, single-threaded (for callers that parallelise themselves). No argument checks beyond
// the type: n must already be a multiple of the block size (see check_quant_row).
void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n);

// The largest possible |x − dequantize(quantize(x))| of an element, relative to the largest |x|
// of its block, for the reference quantizers (a loose bound used by tests and reports): half a
// quantization step plus the f16 rounding of the scales. 0 for F32.
double ggml_quant_error_bound(GGMLType t);

// Bits per weight of a type (8 · bytes per block / elements per block).
double ggml_bits_per_weight(GGMLType t);

}  // namespace moetool
