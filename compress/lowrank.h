// compress/lowrank.h — the svd job: every routed expert matrix W [out, in] of an MoE (with targets
// "all-linears" every other linear too, dense models included) becomes low rank, U [out, r]·V [r, in],
// with r chosen per matrix from a parameter budget. Methods (shared-basis and delta: experts only):
//   plain        truncated SVD of W (Eckart–Young on the weights);
//   whitened     SVD-LLM / ASVD: SVD of W·S with S·Sᵀ the damped Gram XᵀX of the matrix's calibration
//                inputs (an expert's routed tokens), folded back so U·V multiplies raw inputs — the
//                truncation minimises the error on real activations;
//   shared-basis MoLAE / Sub-MoE: per layer and projection one basis on the hidden-size side (V of
//                gate/up, U of down) from the SVD of the experts stacked with weights √(routing share),
//                each expert keeping only its coefficients (compress/lowrank_shared.h); calibrated, the
//                gate/up basis is whitened on the layer's pooled routed-input Gram;
//   delta        D²MoE: base = the routing-weighted mean expert, each expert = base + a low-rank
//                factorisation of its difference (whitened when calibration is given).
// Ranks: --rank R for all, or --ratio P: the exact knapsack (compress/lowrank_plan.h) over a rank grid
// per target minimises Σ w·err²(r)/‖W‖² (the relative, whitened where calibrated, truncation error,
// w the expert's share of routed tokens) with the stored parameters ≤ P × the targets' parameters;
// "dense" (the matrix kept as is) is a choice too. Output: the moetool.lowrank/1 layout
// (formats/lowrank.h: <M>.weight_u / .weight_v, shared factors stored once, a "lowrank" block in
// config.json), which moetool runs directly, or with `materialize` standard dense experts
// (W' = U·V) that stock loaders read. Calibration: text swept layer by layer (Grams of one layer held
// at a time; swept twice, for the ranks and for the writing) or `moetool calibrate --gram` statistics.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/family.h"
#include "kernels/device.h"

namespace moetool::svd {

struct Options {
  std::string model, output;
  double ratio = 0;                    // fraction of the targets' parameters kept, (0, 1]
  int64_t rank = 0;                    // or one rank for every target matrix
  std::string method = "whitened";     // plain | whitened | shared-basis | delta
  // "experts" (the routed experts' matrices) or "all-linears" (also attention, dense and shared-expert
  // MLPs: plain or whitened SVD each, weight 1 in the knapsack — every token uses them).
  std::string targets = "experts";
  std::vector<std::string> calib_texts;
  std::string calib_stats;             // saved `moetool calibrate --gram` statistics instead
  int64_t ctx = 256, chunks = 0;
  double damp = 0.01;                  // whitening: Gram + damp·mean(diag)·I
  int64_t rank_steps = 32;             // ranks per target the knapsack chooses from
  int64_t rank_multiple = 1;           // ...each a multiple of this (8: factors pack into int4 GPTQ)
  uint64_t seed = 0;                   // randomized SVD probes
  bool materialize = false, dry_run = false, overwrite = false;
  uint64_t max_shard_bytes = 0;
  DeviceOptions device;                // calibration and SVDs
  std::map<std::string, std::string> metadata;
  std::function<void(const std::string&)> progress;
};

// One target matrix (or, for shared-basis, one layer's expert projection: expert = -1 and an expert
// role; a non-expert linear of --targets all-linears has expert = -1 and its own role).
struct TargetResult {
  std::string module;
  int64_t layer = -1, expert = -1;
  Role role = Role::ExpertGate;
  int64_t rows = 0, cols = 0;
  int64_t rank = -1;           // -1: kept dense
  double params = 0;           // stored parameters (shared-basis: the basis and every expert's factor)
  double rel_error = 0;        // err²(r) / ‖W‖² (whitened: on the calibration inputs)
};

struct Result {
  std::string model, output, method;
  double ratio = 0;
  int64_t rank = 0;
  bool materialized = false, calibrated = false;
  int64_t calib_tokens = 0;
  std::vector<TargetResult> targets;
  double target_params = 0, kept_params = 0;  // the targets' parameters before / stored after
  std::string solver;
  std::vector<std::string> warnings, files;
  uint64_t bytes = 0;
  double seconds = 0, svd_seconds = 0;
  bool written = false;
  nlohmann::ordered_json to_json() const;
  std::string table() const;  // ranks per layer and projection, the budget (--dry-run)
};

// Runs the job (writes nothing with dry_run). Throws moetool::Error (one line) on bad input: a dense
// model, neither or both of --ratio / --rank, a ratio outside (0, 1], a rank above min(out, in),
// --method whitened without calibration, statistics of another model or without Gram matrices,
// an unknown method, an existing output.
Result run(const Options& o);

}  // namespace moetool::svd
