// compress/expert_pool.h — the calibration-coverage guard of GPTQ on MoE models. The router sees
// every token of a layer; an expert sees only the tokens routed to it, and one that calibration
// reaches with too few tokens has no usable Hessian. The pool keeps an evenly spaced sample of the
// layer's MoE-block inputs (the router's input, every token) with the router's probabilities, and
// such an expert's Hessians are its own tokens' plus the pool's run through the expert, each pooled
// token weighted by the probability p_te = softmax(router logits)_e the router gives the expert
// (soft routing: tokens the router nearly sent to it count most) — gate/up: Σ_t p_te x xᵀ; down:
// Σ_t p_te a aᵀ with a = silu(x·W_gateᵀ)·(x·W_upᵀ) computed with the expert's own weights.
// (Unweighted pooling, GPTQModel's "every token to every expert", measured worse than rounding
// without importance on tinymoe-3domain's code text when calibrated on stories alone: the stories
// tokens are not what a code expert sees.)
#pragma once

#include <cstdint>
#include <vector>

#include "engine/weights.h"

namespace moetool {

class ExpertPool {
 public:
  explicit ExpertPool(int64_t max_rows = 4096) : cap_(max_rows) {}
  // Offers rows X[n, cols] and their router logits[n, E] (null: every probability 1); keeps every
  // stride-th row seen, halving the sample (and doubling the stride) whenever it is full, so the
  // pool stays evenly spaced over the whole calibration set.
  void add(const float* X, int64_t n, int64_t cols, const float* logits = nullptr, int64_t E = 0);
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  const std::vector<float>& data() const { return x_; }
  // The router's probability of expert e for kept row r (1 without logits).
  float prob(int64_t r, int64_t e) const { return E_ ? p_[static_cast<size_t>(r * E_ + e)] : 1.0f; }

 private:
  int64_t cap_, cols_ = 0, rows_ = 0, stride_ = 1, seen_ = 0, E_ = 0;
  std::vector<float> x_;  // [rows_, cols_]
  std::vector<float> p_;  // [rows_, E_] softmax of the router logits
};

// Σ over the pool, weighted by the router's probability of the expert, of the input second moments
// of expert `expert`'s linear `role` (ExpertGate / ExpertUp: the pooled rows; ExpertDown: the
// expert's activations of them), full [cols, cols] row-major, symmetric.
std::vector<double> pooled_hessian(const ExpertPool& pool, const WeightSource& w, Role role, int64_t layer,
                                   int64_t expert);

}  // namespace moetool
