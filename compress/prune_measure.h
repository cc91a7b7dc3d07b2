// compress/prune_measure.h — prune's `reconstruct` method: which experts a layer can lose, measured
// rather than estimated. Layer by layer over the calibration text (engine/layer_sweep.h), experts are
// removed one at a time (greedy backward elimination, as NAEE enumerates expert subsets by their
// reconstruction loss): each step re-runs the layer once per remaining candidate with that expert
// also taken out of routing (engine/masked_experts.h: its tokens go to their next choices, exactly
// as in the pruned checkpoint) and drops the one whose removal changes the layer's output least,
// Σ‖h_out − h_out(full)‖². The next layer is then calibrated on this layer pruned, so its choice sees
// the inputs the pruned model will give it. Cost: about (E − K)·E/2 re-runs of each MoE layer over
// at most max_tokens calibration tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "compress/prune_plan.h"
#include "engine/weights.h"

namespace moetool {

struct ReconstructOptions {
  int64_t max_tokens = 8192;                         // calibration tokens each re-run uses
  std::function<void(const std::string&)> progress;  // one line per layer
};

// The kept experts of every MoE layer (req.method is ignored; keep, top_k, n_group and protect
// apply as in plan_prune). score[e]: the output error its removal caused (dropped experts) or would
// cause at the last step (kept ones) — larger is more important.
std::vector<LayerPrunePlan> plan_by_reconstruction(std::shared_ptr<const WeightSource> w,
                                                   const std::vector<std::vector<int32_t>>& chunks,
                                                   const PruneRequest& req, const ReconstructOptions& o);

}  // namespace moetool
