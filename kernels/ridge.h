// kernels/ridge.h — ridge least squares from inputs X[T, H] to per-token targets Y[T, E] that a
// softmax reads (so each token's targets are centred first: a shift shared by all outputs does not
// matter), the regularisation chosen on held-out tokens. Routers are fitted with it: convert's
// factorized experts (targets: each expert's output norm) and merge's merged experts (targets: the
// members' combined logit).
#pragma once

#include <cstdint>
#include <vector>

namespace moetool {

struct RidgeRouter {
  std::vector<float> W;  // [E, H]
  double r2 = 0;         // on held-out tokens (every fifth), of the per-token-centred targets
  double lambda = 0;     // chosen regularisation, relative to tr(XᵀX)/H
};

// Least squares with a ridge penalty from X[T, H] to Y[T, E] (centred per token first: the softmax
// ignores a shift shared by all experts); λ chosen on held-out tokens from a small grid, then refitted
// on all tokens.
RidgeRouter fit_ridge_router(const std::vector<float>& X, int64_t T, int64_t H, const std::vector<double>& Y,
                             int64_t E);

}  // namespace moetool
