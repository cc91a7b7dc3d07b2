// convert/report.h — what a conversion did, layer by layer: expert sizes, router initialisation and
// its quality (ridge R², condition number, reconstruction error on calibration text), timings; as
// JSON (the --json summary and the --report file) and as short text.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moetool {

struct ConvertLayerReport {
  int64_t layer = 0;
  std::vector<int64_t> expert_sizes;  // intermediate width of each routed expert
  int64_t shared_size = 0;            // shared expert width (0: none)
  std::string router;                 // "random", "zero", "prompts", "centroid", "fit"
  std::optional<double> router_r2;     // ridge fit: R² of the fitted logits on the calibration tokens
  std::optional<double> router_lambda;  // ridge fit: chosen regularisation (relative to tr(XᵀX)/H)
  std::optional<double> router_scale;   // multiplier applied to the router rows (logit temperature)
  std::optional<double> router_cond;    // condition number of the router matrix (prompts)
  // On calibration tokens: ‖dense FFN − MoE block‖² / ‖dense FFN‖² at the configured top-k.
  std::optional<double> recon_rel_err;
  // The same with the top-k experts of largest true output norm, equal weights: what routing could reach.
  std::optional<double> recon_oracle_err;
  // Closed-form refit of the experts' down projections (convert/expert_refit.h): the calibration
  // error ‖Y − G·Z‖² / ‖Y‖² of the construction and after the refit, for the same routing.
  std::optional<double> refit_err_before, refit_err_after;
  // Co-activation split: fraction of the co-activation mass that stays inside groups.
  std::optional<double> coactivation_within;
  double seconds = 0;  // time to produce and write this layer
};

struct ConvertReport {
  std::string method;  // "upcycle" | "factorize"
  std::string source, output, source_family, target_family;
  int64_t layers = 0, experts = 0, top_k = 0, granularity = 1, expert_intermediate = 0, shared_intermediate = 0;
  std::string split;        // factorize: random | kmeans | coactivation
  std::string router;       // router method
  double noise = 0;         // upcycle: relative noise
  double shared_neurons_pct = 0;
  uint64_t seed = 0;
  bool exact_when_all_active = true;  // the construction reproduces the dense model with identical/all experts
  std::vector<std::string> notes;     // layout decisions worth knowing (zero biases, placeholder shared expert, ...)
  std::vector<std::string> warnings;
  std::vector<ConvertLayerReport> per_layer;
  std::vector<std::string> files;
  uint64_t bytes = 0;  // tensor data bytes written
  int64_t params_total = 0, params_active = 0;
  int64_t calibration_tokens = 0;
  double seconds = 0;

  nlohmann::ordered_json to_json() const;
  std::string to_text() const;  // one summary line per layer plus a header
};

}  // namespace moetool
