// compress/lowrank_shared.h — the factorisations of `moetool svd` that span a layer's experts:
// shared-basis (MoLAE / Sub-MoE: the experts of one projection share one basis on the hidden-size
// side — V [r, H] of gate/up, U [H, r] of down — found by one SVD of the experts stacked with
// weights √f_e, so Σ_e f_e ‖W_e − Ŵ_e‖_F² is minimal; each expert keeps only its coefficients, the
// projection of W_e on the basis), and delta (D²MoE: a base = the f-weighted mean expert, each
// expert = base + a low-rank factorisation of its difference).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/lowrank.h"

namespace moetool::svd {

// Which side of W [rows, cols] the experts share: the input side (V [r, cols] shared, each expert
// U_e = W_e·Vᵀ [rows, r]) or the output side (U [rows, r] shared, each expert V_e = Uᵀ·W_e [r, cols]).
enum class SharedSide { Input, Output };

// The spectrum of the stacked, weighted experts (W_e [rows, cols] each, weights f_e ≥ 0): error2(r)
// is Σ_e f_e ‖W_e − Ŵ_e(r)‖_F² with Ŵ_e the projection on the top-r shared basis. max_rank ≤ the
// shared side's dimension. With `gram` (input side only: the layer's pooled routed-input Gram
// Σ_e X_eᵀX_e [cols, cols]) the stack is whitened like the whitened method (SVD of [√f_e W_e]·S,
// S·Sᵀ = gram damped), so the basis minimises Σ_e f_e ‖(W_e − Ŵ_e)·S‖_F² — the error on the inputs.
lowrank::Decomposition shared_decomposition(const std::vector<const float*>& W, const std::vector<double>& f,
                                            int64_t rows, int64_t cols, SharedSide side, int64_t max_rank,
                                            const lowrank::SvdOptions& opt, const double* gram = nullptr);

// The rank-r factors from such a decomposition: `shared` (V [r, cols] or U [rows, r]) and per expert
// its own factor (U_e [rows, r] or V_e [r, cols]), so that W_e ≈ U_e·V (or U·V_e). Whitened (gram
// given, input side): U_e = W_e·G·Vᵀ·(V·G·Vᵀ)⁻¹, the best coefficients in the metric of the damped
// Gram G (= W_e·S·Vr when S·Sᵀ = G exactly); `damp` as in the decomposition.
void shared_factors(const lowrank::Decomposition& d, int64_t r, SharedSide side, const std::vector<const float*>& W,
                    int64_t rows, int64_t cols, std::vector<float>& shared, std::vector<std::vector<float>>& own,
                    const double* gram = nullptr, double damp = 0);

// Σ_e f_e W_e / Σ_e f_e (equal weights when Σ f_e = 0), [rows, cols].
std::vector<float> weighted_mean(const std::vector<const float*>& W, const std::vector<double>& f, int64_t rows,
                                 int64_t cols);

}  // namespace moetool::svd
