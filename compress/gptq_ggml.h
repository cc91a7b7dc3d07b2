// compress/gptq_ggml.h — GPTQ with ggml's block quantizers as the rounding step: the weights are
// encoded straight into a ggml type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) that llama.cpp
// loads unchanged, while each element's rounding error is spread over the input columns not yet
// quantized as in compress/gptq.h:  e = (w_k − ŵ_k) / U_kk,  W[:, k+1:] −= e · U[k, k+1:].
//
// When the sweep reaches the first column of a ggml block (32 inputs, 256 for the K-quants), that
// block's scales (d, and min / sub-block scales where the type has them) are chosen by ggml's own
// block quantizer (formats/ggml_quants.h: the reference one, or the importance-weighted one with
// diag(H)/nsamples as the imatrix) from the block's already-updated weights — exactly as ggml
// would choose them for those values. The block's scale fields are then fixed and every element,
// in turn, takes the level of that grid nearest to its current (updated) value
// (formats/ggml_levels.h), its error feeding the columns after it. So every block is a block ggml
// itself could have written, and decodes bit for bit through llama.cpp's dequantizers.
//
// Scale refit (refit_scales): once every level is fixed, each block's f16 scale fields (d, and the
// min / dmin where the type has one) are moved, block after block, to the least-squares optimum of
// the layer-output error tr(ΔW H ΔWᵀ) (undamped H) given all the other blocks — the decoded values
// are linear in those fields — and kept only where the f16-rounded, exactly decoded change lowers
// it. The K-quants' 6-bit sub-block scales and the levels stay as they are.
//
// Act-order reorders whole blocks only (by decreasing Σ diag(H) over the block; columns inside a
// block keep their order), so the encoded layout stays the type's own. Lazy batch updates use a
// batch that holds whole blocks. H and U in double, updates in float32 (compress/gptq_internal.h).
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "compress/gptq.h"
#include "formats/ggml_types.h"

namespace moetool {

struct GPTQGGMLOptions {
  double damp = 0.01;         // λ = damp · mean(diag H) added to the diagonal
  bool act_order = false;     // process whole blocks by decreasing Σ diag(H)
  bool importance = true;     // block scales by the importance-weighted quantizer (imatrix = diag(H)/nsamples)
  int64_t block_size = 256;   // lazy batch width, rounded up to whole ggml blocks
  bool refit_scales = true;   // after the sweep: least-squares block scale fields (see above)
};

// Whether gptq_quantize_ggml encodes this type.
bool gptq_ggml_supports(GGMLType t);

// GPTQ of W [rows, cols] (row-major: rows = outputs, cols = inputs, a multiple of the type's block
// size) with H [cols, cols] = Σ_t x_t x_tᵀ over `nsamples` calibration rows. Returns rows ×
// ggml_row_size(t, cols) bytes: each row encoded in type t, blocks in the original column order.
// Dead columns (H_jj = 0) are encoded as 0. stats (optional) as compress/gptq.h's, measured on the
// decoded matrix. Throws naming `what` on an unsupported type, a column count that is not whole
// blocks, non-finite W or H, a negative diagonal, or a Hessian that stays singular.
std::vector<uint8_t> gptq_quantize_ggml(const float* W, int64_t rows, int64_t cols, const double* H,
                                        int64_t nsamples, GGMLType t, const GPTQGGMLOptions& o,
                                        GPTQStats* stats = nullptr, std::string_view what = {});

// The scale refit above on its own, for any encoded rows: out holds rows × ggml_row_size(t, cols)
// bytes of type t (with levels), Wd [rows, cols] the target weights, H [cols, cols] the undamped
// Hessian. Each block's d (and m) moves to its least-squares optimum where that lowers the loss.
// Returns Σ_r Δ_r H Δ_rᵀ (Δ = Wd − decoded) after the refit. Also used by compress/autoround_ggml.h.
double ggml_refit_scale_fields(const float* Wd, int64_t rows, int64_t cols, GGMLType t, const double* H,
                               std::vector<uint8_t>& out);

}  // namespace moetool
