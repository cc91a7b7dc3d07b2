// convert/router_fit.h — routers for factorized experts and how well they route: the weights-only
// centroid router (each expert's mean normalised gate row), a ridge least-squares router fitted in
// closed form from calibration hidden states to each expert's output norm (R² on held-out tokens), and
// a probe that replays the MoE block on calibration tokens to measure the reconstruction error of a
// router at a given top-k and to pick the logit scale (softmax temperature) that minimises it.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ridge.h"

#include "convert/split.h"

namespace moetool {

// Rows [E, H]: the mean of the L2-normalised gate rows gate[i, :] (gate is [I, H]) of each group.
std::vector<float> centroid_router(const float* gate, int64_t H, const NeuronGroups& groups);

// Calibration view of one FFN layer after splitting: router inputs and every expert's output.
class RoutingProbe {
 public:
  // X[T, H]: router inputs (the FFN-normed residual stream); A[T, I]: the dense FFN's intermediate
  // activations for the same tokens; down[H, I]: the dense down_proj (unscaled); groups: the routed
  // experts' neurons; shared: the shared expert's neurons (may be empty).
  RoutingProbe(std::vector<float> X, int64_t T, int64_t H, const float* A, int64_t I, const float* down,
               const NeuronGroups& groups, const std::vector<int64_t>& shared);

  int64_t tokens() const { return T_; }
  int64_t experts() const { return E_; }
  const std::vector<float>& inputs() const { return X_; }  // [T, H]
  // ‖u_e(t)‖: norm of expert e's (unscaled) contribution on token t, [T, E].
  std::vector<double> output_norms() const;

  // ‖dense − MoE‖² / ‖dense‖² over the tokens for router rows R[E, H] × scale, top-k = k with
  // renormalised weights and routed down_proj × k (the factorized layout); ties broken by index.
  double recon_error(const std::vector<float>& R, double scale, int64_t k) const;
  // The same with the k experts of largest true output norm and equal weights (a routing upper bound).
  double oracle_error(int64_t k) const;

  // The routing of every token by router rows R[E, H] (logits as given): the top-k experts (ties by
  // index) and their renormalised softmax weights.
  void routing(const std::vector<float>& R, int64_t k, std::vector<std::vector<int32_t>>& sel,
               std::vector<std::vector<float>>& w) const;

  // The scale in a log grid around 1/std(logits) that minimises recon_error (the selection does not
  // depend on it; only the weights do). Returns {scale, error}.
  std::pair<double, double> best_scale(const std::vector<float>& R, int64_t k) const;

 private:
  double error_for(const std::vector<std::vector<int32_t>>& sel, const std::vector<std::vector<float>>& w,
                   int64_t k) const;
  std::vector<double> logits(const std::vector<float>& R) const;  // [T, E] unscaled
  double error_at(const std::vector<double>& Z, double scale, int64_t k) const;
  void route(const std::vector<double>& Z, double scale, int64_t k, std::vector<std::vector<int32_t>>& sel,
             std::vector<std::vector<float>>& w) const;
  std::vector<float> X_;
  int64_t T_, H_, E_;
  std::vector<double> gram_;  // [T, E+1, E+1]: Gram matrix of (u_1 … u_E, u_shared) per token
};

}  // namespace moetool
