// formats/int_codec.h — the storage of group-wise integer weights (what a GPTQ checkpoint holds,
// formats/gptq_pack.h packs it): W[r, j] ≈ (q[r, j] − zero[g, r]) · scale[g, r] with g = g_idx[j],
// q in 0 .. 2^bits − 1, one f16 scale and integer zero per (row, group of input columns). The
// quantizers that produce it (RTN, importance-weighted, GPTQ) live in compress/.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace moetool {

struct IntQuantSpec {
  int bits = 4;              // 2..8
  int64_t group_size = 128;  // 32..256 typically; -1 = one group per row (whole input dimension)
  bool sym = true;           // symmetric: zero = 2^(bits-1) (GPTQ's convention); asymmetric: min/max
};

// Throws (naming `what`) on bits outside 2..8, group_size not -1 and < 1, cols not a multiple of
// group_size, or a non-positive shape.
void check_int_spec(const IntQuantSpec& s, int64_t rows, int64_t cols, std::string_view what = {});

// Groups per row: cols / group_size, or 1 for group_size -1.
int64_t int_quant_ngroups(const IntQuantSpec& s, int64_t cols);
// The spec a linear with `cols` inputs is stored with: the group size when it divides cols, else one
// group per row (−1) — the fallback a GPTQ checkpoint records per module in `dynamic`.
IntQuantSpec int_spec_for_cols(IntQuantSpec s, int64_t cols);

// W[rows, cols] ≈ (q − zero) · scale, per (row, group). Group g of column j is g_idx[j].
struct IntQuantized {
  IntQuantSpec spec;
  int64_t rows = 0, cols = 0, ngroups = 0;
  std::vector<uint8_t> q;       // [rows, cols] in 0 .. 2^bits − 1
  std::vector<float> scales;    // [ngroups, rows] (already rounded to f16 precision: what the file stores)
  std::vector<int32_t> zeros;   // [ngroups, rows] in 0 .. 2^bits − 1 (moetool's quantizers: 1 .. 2^bits − 1;
                                // read from a v1 checkpoint: 1 .. 2^bits, which the file can express)
  std::vector<int32_t> g_idx;   // [cols]; j / group_size unless act-order GPTQ permuted it
};

// W[rows, cols] = (q − zero) · scale.
void int_dequantize(const IntQuantized& q, float* W);

// Bytes of the GPTQ tensors of one linear: qweight (cols·bits/32 × rows int32) + qzeros (ngroups ×
// rows·bits/32 int32) + f16 scales (ngroups × rows) + g_idx (cols int32). Packed sizes round up to
// whole int32 words where rows·bits or cols·bits is not a multiple of 32 (gptq_pack refuses those).
uint64_t int_quant_bytes(const IntQuantSpec& s, int64_t rows, int64_t cols);
// Bits per weight of that storage: 8 · int_quant_bytes / (rows · cols).
double int_quant_bpw(const IntQuantSpec& s, int64_t rows, int64_t cols);

}  // namespace moetool
