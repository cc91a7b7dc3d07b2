// convert/factorize.h — `moetool convert factorize`: each dense FFN's intermediate neurons are split
// into N equal groups that become N experts (gate/up rows and down columns move together), optionally
// with the most often active neurons kept as an always-on shared expert, and a router per layer:
// centroid (weights only), a closed-form ridge fit on calibration text, random or zero. down_proj is
// scaled by top-k, so with top-k = N and equal weights (zero router) the MoE is the dense model, and
// with top-k < N and near-equal weights it is the sum of the chosen experts (the others dropped).
#pragma once

#include <cstdint>
#include <string>

#include "convert/common.h"
#include "convert/report.h"
#include "convert/split.h"

namespace moetool {

enum class FactorRouter { Centroid, Fit, Random, Zero };
FactorRouter parse_factor_router(const std::string& s);  // "centroid" | "fit" | "random" | "zero"
const char* factor_router_name(FactorRouter r);

struct FactorizeOptions : ConvertOptions {  // progress: also one line per calibration layer
  SplitMethod split = SplitMethod::KMeans;
  bool kmeans_on_up = false;      // cluster up_proj rows instead of gate_proj rows
  FactorRouter router = FactorRouter::Centroid;
  double shared_neurons_pct = 0;  // % of neurons kept as a shared expert
  // Calibration: text (tokenised with the model's tokenizer, chunks of ctx tokens) or a saved file
  // from `moetool calibrate --hidden --activations`.
  std::string calib_text, calib_stats;
  int64_t ctx = 512, chunks = 0;
  int64_t max_fit_tokens = 8192;  // calibration tokens used for splits and fits (evenly subsampled)
  // With calibration and top-k < experts: refit the experts' down projections in closed form for the
  // router's routing (convert/expert_refit.h).
  bool refit = true;
  double refit_ridge = 0.3;  // relative to mean diag(ZᵀZ)
};

ConvertReport factorize(const std::string& dense_path, const std::string& out_dir, const FactorizeOptions& opt);

}  // namespace moetool
