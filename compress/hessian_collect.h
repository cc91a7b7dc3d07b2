// compress/hessian_collect.h — the input second moments of a layer's linears during a layer sweep
// (engine/layer_sweep.h), for the calibrated quantizers (GPTQ's Hessians Σ xxᵀ, the importance
// Σx²): one accumulator per distinct input (q/k/v share q's, up shares gate's), per routed expert,
// plus the shared expert's down_proj input (which the engine does not report) and, with a pool,
// the MoE block's inputs for the coverage guard (compress/expert_pool.h).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "compress/expert_pool.h"
#include "engine/layer_sweep.h"
#include "engine/weights.h"
#include "formats/family.h"

namespace moetool {

using HessianKey = std::tuple<Role, int64_t, int64_t>;  // input role, layer, expert (−1: none)

// The role whose input a linear shares (the key its moments are kept under).
Role input_role(Role r);

struct Moments {
  int64_t count = 0;
  std::vector<double> H;  // [cols, cols] Σ xxᵀ (upper triangle while accumulating), or [cols] Σx² (diag_only)
};

// ‖(W − Wq)·Xᵀ‖_F / ‖W·Xᵀ‖_F from H = Σxxᵀ (both triangles filled, [cols, cols]):
// sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)) over at most 256 evenly spaced rows (a report figure: the full
// product would cost twice GPTQ itself). 0 when W·Xᵀ is 0.
double relative_output_error(const float* W, const float* Wq, int64_t rows, int64_t cols, const std::vector<double>& H);

// Copies the upper triangle of H [n, n] (row-major) into the lower.
void symmetrize(std::vector<double>& H, int64_t n);

// Collects the input second moments of layer `layer`'s quantizable linears (every projection of
// attention, dense FFN, routed and shared experts), per expert; diag_only keeps Σx² alone.
class HessianCollector final : public SweepObserver {
 public:
  HessianCollector(bool diag_only, const WeightSource& w, int64_t layer) : diag_(diag_only), w_(w), layer_(layer) {}
  std::map<HessianKey, Moments> moments;
  ExpertPool* pool = nullptr;  // the layer's MoE-block inputs (coverage guard), or null

  void on_linear_input(int64_t l, Role role, int64_t expert, const float* X, int64_t n, int64_t cols) override;
  void on_router(int64_t, const float* logits, const int32_t*, const float*, int64_t n, int64_t E, int64_t) override;
  // X [n, cols] added to the moments of key k (also for inputs no layer reports: the output head's).
  void add(const HessianKey& k, const float* X, int64_t n, int64_t cols);
  // Every full Hessian's lower triangle filled in (after the sweep, before use).
  void symmetrize_all();

 private:
  std::vector<float> router_x_;  // the router's input, until its logits arrive
  bool diag_;
  const WeightSource& w_;
  int64_t layer_;
  std::shared_ptr<const WeightMatrix> sg_, su_;
  std::vector<double> xd_;
};

}  // namespace moetool
