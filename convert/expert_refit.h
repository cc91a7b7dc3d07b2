// convert/expert_refit.h — closed-form refit of factorized experts' down projections for a fixed
// routing (the first local stage towards a factorized MoE that keeps the dense model's quality).
//
// On calibration tokens t with the dense FFN's intermediate activations a_t [I] and output
// y_t = down·a_t, the MoE block gives ŷ_t = G·z_t, where z_t [I] keeps the shared neurons' activations,
// the routed neurons of the chosen experts weighted by their routing weight w_te, and zeros the rest;
// G [H, I] holds every expert's effective down columns (routed: stored as is; shared: before the
// family's shared scale). The refit solves, in double,
//   G = argmin ‖Y − G·Z‖² + λ·‖G − G0‖²,   λ = ridge · mean diag(ZᵀZ),
// a ridge towards the construction G0 (routed columns down × top-k, shared columns down), so columns of
// experts calibration never routes to stay as constructed, and the calibration error never exceeds
// G0's: ‖Y − G·Z‖² ≤ J(G) ≤ J(G0) = ‖Y − G0·Z‖². Memory: ZᵀZ is I × I doubles.
#pragma once

#include <cstdint>
#include <vector>

#include "convert/split.h"

namespace moetool {

struct DownRefit {
  std::vector<float> G;  // [H, I] effective down columns after the refit
  double err_before = 0, err_after = 0;  // ‖Y − G·Z‖² / ‖Y‖² with G0 and with G
  double lambda = 0;                     // the absolute ridge used
};

// A[T, I]: activations; down[H, I]: the dense down_proj; groups: routed experts' neurons; shared:
// shared neurons; sel[t] (k experts) and w[t] (their weights): the routing of each token; k: top-k
// (the construction's routed scale). ridge ≥ 0 relative to mean diag(ZᵀZ).
DownRefit refit_down(const float* A, int64_t T, int64_t I, const float* down, int64_t H, const NeuronGroups& groups,
                     const std::vector<int64_t>& shared, const std::vector<std::vector<int32_t>>& sel,
                     const std::vector<std::vector<float>>& w, int64_t k, double ridge = 1e-3);

}  // namespace moetool
