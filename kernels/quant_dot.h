// kernels/quant_dot.h — integer dot products for quantized weights, as ggml multiplies them: the
// activations are quantized to int8 per block of 32 (ggml's Q8_0: d = max|x| / 127, q = round(x / d)),
// the weight's levels are multiplied by them in int32 (AVX-512 VNNI `vpdpbusd`, AVX2 `vpmaddubsw`, or
// a scalar loop; chosen at run time), and only each 32-element block's sum meets a float scale.
//
// Every ggml type with a level grid (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) is first unpacked
// to one form, row by row: element i of 32-block j decodes to
//     w = a_{j,h} · (q_i − o) + b_j,   q_i ∈ [0, 255] (u8), h = i / 16 (the 16-element half)
// with a per-type offset o (Q8_0 128 — its int8 level + 128 —, Q4_0 8, Q5_0 16, Q6_K 32, others 0),
// a per half (the two halves differ only for Q6_K's 16-element sub-blocks) and b per block (Q4_1,
// Q5_1's min, the K-quants' −dmin·m; 0 elsewhere). Then, with x̂ = dx · p the quantized activation,
//     y = Σ_j Σ_h (a_{j,h} · dx_j) · I_{j,h} + Σ_j b_j · (dx_j · Σ_i p_i),   I_{j,h} = Σ_{i∈h} (q_i − o) · p_i
// with I exact in int32. The difference to the float path (ops on the decoded weights) is the
// activation rounding, |x − x̂| ≤ dx/2 per element, plus float rounding of the few sums per block; the
// bound tests/quant_dot_test.cc checks against float64 is derived there.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "formats/ggml_types.h"

namespace moetool {

// The instruction set a dot product runs on.
enum class DotPath { Scalar, Avx2, Avx512Vnni };
const char* dot_path_name(DotPath p);
bool dot_path_supported(DotPath p);  // this CPU (and this build) can run it
DotPath best_dot_path();             // the fastest supported

// How the CPU engine multiplies quantized ggml weights (kernels/linear_quant.cc): Float dequantizes
// tiles of rows and calls sgemm (the exact product of the decoded weights and the float activations);
// Int8 runs the integer dot products above. Process-wide; the library default is Float, the CLI's
// checking commands choose Int8 unless told `--dot float`.
enum class QuantDot { Float, Int8 };
void set_quant_dot(QuantDot d);
QuantDot quant_dot();
const char* quant_dot_name(QuantDot d);
QuantDot parse_quant_dot(const std::string& name);  // "float" | "int8"; throws otherwise

// Whether ggml type t has the integer path (the types listed above).
bool ggml_int8_dot_supported(GGMLType t);
// The offset o of t's unpacked levels (see above).
int ggml_int8_offset(GGMLType t);

// Both sides are stored in panels of 4 (rows or tokens; the last panel padded with zeros, which add
// nothing), block-interleaved, so the 4 × 4 micro-kernel walks two pointers:
//   weight panel P, block j, at byte (P·nb + j)·256: q of its 4 rows (4 × 32 u8), then a (4 × 8 f32)
//   token panel T, block j, at byte (T·nb + j)·272: p of its 4 tokens (4 × 32 i8), init (4 × 8 i32),
//                                                   dx (4 f32)
// Use the accessors; `sum` and `b` are plain [n, nb] / [rows, nb].
inline constexpr int64_t kWeightPanelBlock = 256, kActPanelBlock = 272;

// Activations X [n, cols] quantized per 32 (cols a multiple of 32), per token t and block j: p ∈
// [−127, 127], dx, sum = dx · Σ_i p_i (for the b_j terms), init = −o · Σ p over half h in lane 4h, 0
// in the other lanes.
struct Q8Acts {
  int64_t n = 0, nb = 0;
  std::vector<uint8_t> panels;  // ⌈n/4⌉ · nb · kActPanelBlock bytes
  std::vector<float> sum;       // [n, nb]
  const uint8_t* block(int64_t t, int64_t j) const {
    return panels.data() + ((t / 4) * nb + j) * kActPanelBlock;
  }
  const int8_t* p(int64_t t, int64_t j) const { return reinterpret_cast<const int8_t*>(block(t, j)) + 32 * (t % 4); }
  const int32_t* init(int64_t t, int64_t j) const {
    return reinterpret_cast<const int32_t*>(block(t, j) + 128) + 8 * (t % 4);
  }
  float d(int64_t t, int64_t j) const { return reinterpret_cast<const float*>(block(t, j) + 256)[t % 4]; }
};
// Quantizes X for a weight of offset o (reuses out's buffers).
void quantize_acts(const float* X, int64_t n, int64_t cols, int offset, Q8Acts* out);

// Weight rows in the unpacked form above.
struct U8Rows {
  int64_t rows = 0, nb = 0;
  int offset = 0;
  bool has_b = false;
  std::vector<uint8_t> panels;  // ⌈rows/4⌉ · nb · kWeightPanelBlock bytes
  std::vector<float> b;         // [rows, nb]   (all 0 unless has_b)
  const uint8_t* block(int64_t r, int64_t j) const {
    return panels.data() + ((r / 4) * nb + j) * kWeightPanelBlock;
  }
  const uint8_t* q(int64_t r, int64_t j) const { return block(r, j) + 32 * (r % 4); }
  // a_{j,0} in lanes 0..3, a_{j,1} in lanes 4..7
  const float* a(int64_t r, int64_t j) const {
    return reinterpret_cast<const float*>(block(r, j) + 128) + 8 * (r % 4);
  }
  // For a producer that fills the panels itself (after reset).
  uint8_t* q(int64_t r, int64_t j) { return const_cast<uint8_t*>(std::as_const(*this).q(r, j)); }
  float* a(int64_t r, int64_t j) { return const_cast<float*>(std::as_const(*this).a(r, j)); }
  // Sizes the buffers for rows × nb blocks; the padding rows of the last panel and b are zeroed.
  void reset(int64_t rows, int64_t nb, int offset, bool has_b);
};
// Unpacks `rows` rows of `cols` elements of ggml type t from `data` (rows · ggml_row_size bytes);
// t must be supported. Reuses out's buffers.
void unpack_ggml_rows(GGMLType t, const uint8_t* data, int64_t rows, int64_t cols, U8Rows* out);

// Y[n, rows] = X[n, cols] · Wᵀ + beta · Y on the integer path, for a matrix whose rows r0 .. r0 + m − 1
// `unpack(r0, m, &tile)` writes in the unpacked form (levels of offset `offset`): the activations are
// quantized once, then each thread unpacks tiles of ≈ 256 KiB (≤ 64 rows, a multiple of 4), which stay in
// L2 while every token passes. Buffers are per thread and kept, so a long run allocates them once.
void int8_matmul(const float* X, int64_t n, int64_t rows, int64_t cols, int offset, float* Y, float beta,
                 const std::function<void(int64_t r0, int64_t m, U8Rows* tile)>& unpack);

// Y[t · ldy + r] = Σ over the row r of W and token t of X (the formula above) + beta · Y[t · ldy + r],
// for every row of W and token of X (W.nb == X.nb; X quantized for W.offset). Single-threaded.
void dot_rows(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta, DotPath path);

}  // namespace moetool
