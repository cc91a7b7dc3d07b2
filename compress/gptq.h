// compress/gptq.h — GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers"), the algorithm of the reference gptq.py and GPTQModel:
// columns of W [rows = out, cols = in] are quantized one at a time (in blocks of `block_size` with
// lazy batch updates), each column's rounding error being spread over the columns not yet quantized
// through the upper Cholesky factor U of H⁻¹ (H + λI = Hessian Σ_t x_t x_tᵀ of the layer inputs,
// H⁻¹ = UᵀU):  e = (w_k − ŵ_k) / U_kk,  W[:, k+1:] −= e · U[k, k+1:].
// Group parameters (compress/int_quant.h's min/max quantizer) are found when a group's first
// column is reached, from the already-updated weights of that group (with act-order: the group is
// `group_size` consecutive columns in processing order, and g_idx records it); static_groups takes
// them from the unpermuted groups of the original W up front. One group per row: from W up front.
// Unlike the reference, a block always holds whole groups (block_size is rounded up to a multiple
// of group_size), so a group's parameters always see all updates made to it so far.
//
// Numerics: H and U in double — U = R⁻¹ from the "reverse" Cholesky H + λI = RRᵀ (R upper), which
// is the upper Cholesky factor of (H + λI)⁻¹ without forming the inverse (LAPACK dpotrf + dtrtri
// for large H) — the weight updates in float32 (as the reference). Rows are processed in parallel
// chunks. The result is in the IntQuantized layout of RTN.
#pragma once

#include <cstdint>
#include <string_view>

#include "compress/int_quant.h"

namespace moetool {

struct GPTQOptions {
  IntQuantSpec spec;
  double damp = 0.01;          // λ = damp · mean(diag H) added to the diagonal
  bool act_order = false;      // process columns by decreasing diag(H) (desc_act); g_idx then records groups
  bool static_groups = false;  // with act_order: group params from the unpermuted groups up front
  int64_t block_size = 128;    // lazy batch updates
};

struct GPTQStats {
  // ‖(W − Ŵ) Xᵀ‖_F² / nsamples = tr((W − Ŵ) H (W − Ŵ)ᵀ) / nsamples with the undamped H (dead
  // columns, whose inputs are all zero, contribute nothing): the mean over calibration rows of the
  // squared output error. Obtained without another pass from GPTQ's own accounting, Σ e² =
  // tr(ΔW (H + λI) ΔWᵀ) (exact for the sequential algorithm), minus λ‖ΔW‖_F².
  double loss = 0;
  double damp_used = 0;       // the damp fraction finally used (o.damp, ×10 per failed Cholesky)
  double lambda = 0;          // the absolute λ added to diag(H)
  int64_t dead_columns = 0;   // columns with H_jj = 0 (their weights are set to 0, as in the reference)
};

// GPTQ: H[cols, cols] = Σ_t x_t x_tᵀ over `nsamples` calibration rows (row-major, double; symmetric).
// Dead columns (H_jj = 0) get H_jj = 1 and W[:, j] = 0 as in the reference. If the Cholesky of the
// damped Hessian or of its inverse fails, damping is raised ×10 (up to 4 times) and damp_used
// reports it. Returns the quantized matrix in the same IntQuantized layout as RTN. Throws naming
// `what` on a bad spec, non-finite W or H, a negative diagonal, or a Hessian that stays singular.
IntQuantized gptq_quantize(const float* W, int64_t rows, int64_t cols, const double* H, int64_t nsamples,
                           const GPTQOptions& o, GPTQStats* stats = nullptr, std::string_view what = {});

}  // namespace moetool
