// compress/autoround_ggml.h — AutoRound (Cheng et al., "Optimize Weight Rounding via Signed
// Gradient Descent") over ggml blocks: every element's rounding offset and every block's scale
// fields are tuned by signed gradient descent on the layer's output error over the calibration
// tokens, and the result is written as standard blocks of the type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q4_K, Q5_K, Q6_K) that llama.cpp decodes unchanged.
//
// Start: ggml's own importance-weighted block quantizer (imatrix = diag(H)/nsamples), as
// `--method imatrix` writes it. Per block (32 inputs; the K-quants' 256-input super-block) the
// parameters are α and β, multipliers of the stored f16 d and m (Q4_1/Q5_1's min, the K-quants'
// dmin); the K-quants' 6-bit sub-block scales and mins stay ggml's. Per element, an offset v is
// added before rounding, starting at the v₀ that reproduces the start block's level (within ±½ for
// ggml's rounding) and kept in v₀ ± ½. With the block's grid for the f16-rounded fields α·d, β·m
// (element j decodes level q to s_j·(q + o) + m_j, formats/ggml_levels.h),
//     q_j = clamp(round((w_j − m_j)/s_j − o + v_j), qmin, qmax),   ŵ_j = s_j·(q_j + o) + m_j.
// Objective: L = Σ_r Δ_r H Δ_rᵀ, Δ = W − Ŵ, H = Σ_t x_t x_tᵀ (undamped) — the squared output error
// summed over every calibration token, so each step sees the whole calibration set and nothing is
// sampled: the result is the same on every run and for every thread count (rows are independent,
// processed in fixed chunks of 64). Gradients by the straight-through estimator (round' = 1; 0 for
// a clamped element), with G = Δ·H:
//     ∂L/∂v_j = −2 G_j s_j,   ∂L/∂α = −2 Σ_j G_j (ŵ_j − w_j)/α  (clamped: (ŵ_j − m_j)/α),
//     ∂L/∂β = −2 Σ_{j clamped} G_j m_j/β  (a min shift is absorbed by the rounding elsewhere).
// Step t of T: p ← p − lr_t · sign(∂L/∂p), lr_t = lr·(1 − t/T) (AutoRound's SignSGD with linear
// decay; lr = 1/T by default, so no parameter moves more than ≈ ½ in all); α and β stay in
// [1 − b, 1 + b]. Each row keeps the parameters of its lowest loss over the steps, and
// the start's blocks when no step beat them — so the loss never exceeds `--method imatrix`'s. Then the
// least-squares refit of the f16 scale fields (compress/gptq_ggml.h), kept where it lowers L.
//
// Cost: T + 1 products Δ·H (rows × cols² each) per matrix, float32 (Eigen, one thread per chunk).
//
// Measured (tests/autoround_ggml_test.cc's correlated layer, 2048 calibration rows): 0.77–0.93 of
// ggml's importance-weighted rounding's output error (0.84–0.95 on held-out rows), where GPTQ over
// ggml blocks reaches 0.45–0.52 (0.53–0.61); started from GPTQ's blocks it finds almost nothing
// more (GPTQ's levels are a fixed point of the sign steps). Other step sizes (lr·T from ¼ to 2),
// more steps, or a smaller step for the scales moved these by a few percent only.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "formats/ggml_types.h"

namespace moetool {

struct AutoRoundOptions {
  int iters = 200;             // signed-gradient steps T
  double lr = 0;               // initial step; 0 → 1/T
  double scale_bound = 0.5;    // α, β ∈ [1 − b, 1 + b] (0: the scale fields are not tuned)
  bool refit_scales = true;    // least-squares scale refit afterwards
};

struct AutoRoundStats {
  double init_loss = 0;        // tr(ΔW H ΔWᵀ)/nsamples of the start (ggml's importance-weighted rounding)
  double loss = 0;             // the same of the written blocks (measured from their decoded values)
  int64_t rows_improved = 0;   // rows whose tuned blocks beat the start's
  int64_t dead_columns = 0;    // H_jj = 0: their weights are encoded as 0
};

// AutoRound of W [rows, cols] (rows = outputs, cols = inputs, whole blocks of t) with H [cols,
// cols] = Σ_t x_t x_tᵀ over `nsamples` calibration rows. Returns rows × ggml_row_size(t, cols)
// bytes. `start` (optional, rows × ggml_row_size(t, cols) bytes of t) replaces ggml's rounding as
// the starting blocks and the loss to beat (stats->init_loss is then its loss). Throws naming
// `what` on a type without a level grid (formats/ggml_levels.h), partial blocks, non-finite W or
// H, a negative diagonal, iters < 1, or a bound or step outside its range.
std::vector<uint8_t> autoround_quantize_ggml(const float* W, int64_t rows, int64_t cols, const double* H,
                                             int64_t nsamples, GGMLType t, const AutoRoundOptions& o,
                                             AutoRoundStats* stats = nullptr, std::string_view what = {},
                                             const uint8_t* start = nullptr);

}  // namespace moetool
