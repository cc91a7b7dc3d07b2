// compress/bit_alloc.h — mixed precision: which storage (bit width or ggml type) every routed
// expert and every other linear gets under a budget of average bits per weight, chosen exactly by a
// multiple-choice knapsack (compress/mckp.h) in MC-MoE's formulation:
//
//   minimise Σ_units cost(u, c_u)   s.t. Σ_units bits(u, c_u) ≤ B · params(scope)
//   cost(u, c) = f_u^α · w_u^β · ε_u(c)^γ      (α = β = 1, γ = 2 by default; γ = 1 is MC-MoE's form)
//
// f_u is the unit's activation frequency (share of calibration tokens routed to the expert; 1 for
// attention and other always-on linears), w_u its mean routing weight (1 for always-on linears), and
// ε_u(c) the measured output error when that unit alone is stored as c:
//   routed expert e: RMS over its routed tokens of ‖E_e^c(x) − E_e(x)‖ (the expert's contribution to
//                    the MoE block output before its routing weight), relative to the RMS of the
//                    block's output over all tokens;
//   other linear:    the layer re-run with that linear alone stored as c (on the first calibration
//                    chunks): relative change of its sub-layer's output — the attention output for
//                    attention linears, the FFN / MoE block output for dense FFN and shared-expert
//                    linears. (A linear's own relative output error ‖(W^c − W)Xᵀ‖/‖W Xᵀ‖ overrates
//                    q/k/v, whose errors softmax damps: on TinyStories it made --bpw worse than
//                    uniform widths.)
// The scope is the routed experts' weights (default) or every quantizable linear (all_weights; also
// used for models without routed experts). Shared experts and attention never get fewer bits than
// the routed experts' parameter-weighted average: a linear constraint of the knapsack when they are
// in scope, otherwise the cheapest storage at or above that average after the solve. Experts that
// calibration never routed a token to have no measurable error (ε = 0) and are reported as such.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compress/int_quant.h"
#include "compress/mckp.h"
#include "formats/ggml_types.h"
#include "engine/engine.h"

namespace moetool {

// One storage choice for a linear: integer groups (GPTQ layout) or a ggml block type.
struct QuantCandidate {
  std::string name;  // "int4", "Q4_K"
  bool ggml = false;
  GGMLType type = GGMLType::F32;
  IntQuantSpec spec;
  bool fits(int64_t rows, int64_t cols) const;
  uint64_t bytes(int64_t rows, int64_t cols) const;
  // out[rows, cols] = dequantize(quantize(W)) (RTN / ggml reference rounding).
  void roundtrip(const float* W, int64_t rows, int64_t cols, float* out) const;
  // The same rounding kept in its stored form (GPTQ tensors or ggml blocks, multiplied in place): the
  // round trip's values at the candidate's bytes.
  std::shared_ptr<const WeightMatrix> stored(const float* W, int64_t rows, int64_t cols, const std::string& name) const;
};

// A matrix stored as candidate `cand` by an encoder other than the candidate's own rounding (GPTQ
// or AutoRound over ggml blocks): its encoded bytes (rows · ggml_row_size), rows in the
// checkpoint's layout, or nullopt where that encoder has none (the candidate's rounding then).
using AllocEncoded =
    std::function<std::optional<std::vector<uint8_t>>(size_t cand, Role role, int64_t layer, int64_t expert)>;

// Matrix (role, layer, expert) = W [rows, cols] stored as candidate k of `cands` and read back into
// out [rows, cols]: `encoded`'s bytes where it has them, else the candidate's round trip.
void candidate_roundtrip(const AllocEncoded& encoded, const std::vector<QuantCandidate>& cands, size_t k, Role role,
                         int64_t layer, int64_t expert, const float* W, int64_t rows, int64_t cols, float* out);
// The same in its stored form (QuantCandidate::stored).
std::shared_ptr<const WeightMatrix> candidate_stored(const AllocEncoded& encoded, const std::vector<QuantCandidate>& cands,
                                                     size_t k, Role role, int64_t layer, int64_t expert, const float* W,
                                                     int64_t rows, int64_t cols, const std::string& name);

// Linears that share one storage choice.
struct AllocUnit {
  std::string name;                 // "layer 3 expert 7", "layer 0 q", "layer 1 experts down"
  int64_t layer = -1;
  int64_t expert = -1;              // −1 always-on linear; ≥ 0 one routed expert; −2 every expert of the layer
  std::vector<Role> roles;
  bool routed = false;
  int64_t params = 0;               // weights in the unit
  int64_t rows = 0, cols = 0;       // of the first linear (for reports)
  int64_t tokens = 0;               // calibration rows it saw
  double freq = 1, weight = 1;      // f and w of the cost
  std::vector<double> error;        // ε per candidate (NaN: candidate does not fit)
  std::vector<uint64_t> bytes;      // stored bytes per candidate (0: does not fit)
  std::vector<double> cost;         // per candidate
};

struct AllocOptions {
  std::vector<QuantCandidate> candidates;
  double bpw = 4.5;                 // budget, average bits per weight over the scope
  bool all_weights = false;         // scope: every quantizable linear (else the routed experts)
  double alpha = 1.0, beta = 1.0;   // exponents of frequency and routing weight
  // Exponent of the error: 2 sums squared errors (independent perturbations add in quadrature;
  // measured on TinyStories, the linear form, gamma 1, gave allocations worse than uniform widths).
  double gamma = 2.0;
  bool per_role_experts = false;    // GGUF: one unit per (layer, role) holding every expert
  // GPTQ for vLLM: one choice per fused group — q/k/v, gate/up (dense or shared expert), and every
  // routed expert of a layer (expert −2); a group's cost is the sum of its members' costs.
  bool fused_groups = false;
  // Always-on linears are measured by re-running their layer once per candidate on the first
  // calibration chunks up to this many tokens.
  int64_t rerun_tokens = 4096;
  // "output": ε is the unit's relative output error above and the cost f^α · w^β · ε^γ; "kld" (the
  // command's default): measure_alloc_units leaves ε to measure_unit_kld (compress/bit_alloc_kld.h),
  // the end-to-end KLD of the model with the unit alone stored as the candidate, and the cost is ε.
  std::string sensitivity = "output";
  int64_t kld_tokens = 8192;        // calibration tokens the KLDs are measured on
  // Measured around an anchor, its rounded matrices are kept in their stored form for all the passes
  // while they take at most this many bytes (beyond, the rest are rounded again in every pass).
  int64_t anchor_cache_bytes = int64_t{2} << 30;
  // Measure the solved allocation and every uniform candidate that fits the budget end to end (KLD
  // on the calibration tokens) and keep the best (check_allocation; the command does by default).
  bool check = true;
  // Each unit measured as it will be written: for GGUF --method gptq|autoround every matrix's
  // encoding in every ggml candidate (compress/quantize_gguf_gptq.h, encode_gguf_candidates); empty:
  // the candidates' own rounding.
  AllocEncoded encoded;
  std::function<void(const std::string&)> progress;  // one line per layer
};

// Pass 1: runs the calibration chunks layer by layer through the float model and measures ε of
// every unit at every candidate.
std::vector<AllocUnit> measure_alloc_units(const Engine& eng, const std::vector<std::vector<int32_t>>& chunks,
                                           const AllocOptions& o);

// An assignment measured end to end (AllocOptions::check).
struct AllocTrial {
  std::string name;      // "allocation", "uniform int4"
  double bpw_scope = 0;  // bits per weight over the scope
  double kld = 0;        // mean KLD on the calibration tokens
};

struct Allocation {
  std::vector<AllocUnit> units;
  std::vector<int> choice;           // candidate index per unit (−1: no candidate fits, stays float)
  bool all_weights = false;
  double budget_bits = 0;            // B · params(scope)
  double bpw_scope = 0;              // achieved over the scope
  double bpw_linears = 0;            // achieved over every allocated linear
  double routed_avg_bpw = 0;         // parameter-weighted average over the routed experts
  double total_cost = 0;
  MckpSolution solution;
  std::vector<std::string> notes;
  std::vector<AllocTrial> trials;    // the solved allocation first, then uniform candidates
  std::string used = "allocation";   // the trial `choice` holds
};

// Pass 2: sets costs from the options and solves. Throws (naming the budget and the smallest
// feasible one) when no assignment fits the budget.
Allocation solve_allocation(std::vector<AllocUnit> units, const AllocOptions& o);

// Given every in-scope unit's choice in a.choice, gives out-of-scope always-on linears the cheapest
// storage at or above the routed experts' average and sets the achieved sizes and total cost.
void finish_allocation(Allocation& a, const AllocOptions& o);

}  // namespace moetool
