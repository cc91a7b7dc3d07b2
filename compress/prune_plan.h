// compress/prune_plan.h — which experts a pruned MoE keeps: expert scores per method from one
// calibration run, super-expert detection, and the kept set per layer (the same count K in every MoE
// layer, since stock loaders take one expert count). Formulas (../shared/docs/reference.md, "Expert
// compression and pruning"), for expert j of a layer, over the calibration tokens t routed to it
// (g_{j,t} its routing weight, e_{j,t} its output before that weight):
//   frequency  n_j = |{t : j ∈ top-k(t)}|
//   reap       (1/n_j) Σ_t g_{j,t} ‖e_{j,t}‖₂                                   (REAP)
//   easy-ep    Σ_t g_{j,t} ‖e_{j,t}‖₂ · max(1 − cos(h_t, h_t + Σ_i g_{i,t} e_{i,t}), 0)  (EASY-EP;
//              h_t the residual stream entering the MoE block, the sum over the routed experts)
//   random     a seeded permutation (the baseline every method must beat)
//   reconstruct  measured, not estimated: compress/prune_measure.h (greedy elimination by the layer
//              output error, layer after layer on the pruned model)
// Super experts (Su et al., "Unveiling Super Experts"): a_j = max |down_proj output| over its routed
// tokens; expert j is super when a_j is above the 99.5th percentile of all experts' a, above a tenth of
// the largest a, and — moetool's addition, because with a few dozen experts the percentile alone
// always names the largest one — at least `median_factor` times the median a (massive activations are
// orders of magnitude above the typical ones).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace moetool {

// One MoE layer's per-expert calibration figures (size E each).
struct ExpertLayerScores {
  int64_t layer = -1;
  std::vector<int64_t> tokens;       // n_j: routed (token, expert) pairs
  std::vector<double> reap;          // REAP score (0 for an expert no token reached)
  std::vector<double> easy_ep;       // EASY-EP score
  std::vector<double> max_abs_out;   // a_j: max |down_proj output| (0 when unreached)
};

enum class PruneMethod { Frequency, Reap, EasyEp, Random, Reconstruct };
PruneMethod parse_prune_method(const std::string& s);  // throws naming the accepted names
const char* prune_method_name(PruneMethod m);

struct SuperExpertRule {
  double percentile = 99.5;   // of all experts' a_j
  double frac_of_max = 0.1;   // of the largest a_j
  double median_factor = 10;  // times the median a_j
};
struct ExpertId {
  int64_t layer = -1, expert = -1;
  bool operator==(const ExpertId&) const = default;
  bool operator<(const ExpertId& o) const { return layer != o.layer ? layer < o.layer : expert < o.expert; }
};
struct SuperExpert {
  ExpertId id;
  double max_abs = 0;  // a_j
  double ratio = 0;    // a_j / median a
};
std::vector<SuperExpert> detect_super_experts(const std::vector<ExpertLayerScores>& layers,
                                              const SuperExpertRule& rule = {});

// Parses "L:E,L:E" (layer:expert pairs) for --protect-super-experts LIST; checks them against the
// model's MoE layers and expert count (an unknown layer or expert is an error naming it).
std::vector<ExpertId> parse_expert_list(const std::string& s, const std::vector<int64_t>& moe_layers,
                                        int64_t num_experts, const std::string& what);

struct PruneRequest {
  PruneMethod method = PruneMethod::Reap;
  int64_t keep = 0;                 // K per MoE layer
  int64_t top_k = 1;                // experts per token (K ≥ top_k)
  int64_t n_group = 1;              // group-limited routing: K/n_group kept in every group of E/n_group
  uint64_t seed = 0;                // random
  std::vector<ExpertId> protect;    // always kept
};

struct LayerPrunePlan {
  int64_t layer = -1;
  std::vector<double> score;        // [E] the method's score (random: the draw)
  std::vector<int64_t> keep;        // kept expert ids, ascending (the output's expert order)
  std::vector<bool> protect;        // [E]
};

// Throws (one line) when K is out of range for E experts (K < top_k, K > E) or does not divide into
// the routing groups with at least 2 per group.
void check_prune_request(int64_t E, const PruneRequest& req);

// The kept experts of every layer: the K best by score (ties: the lower id), protected experts first;
// with n_group > 1 the K/n_group best of each group. Throws (one line) when K is out of range
// (K < top_k, K > E), does not divide into the groups, or more experts are protected in a layer
// (group) than it keeps.
std::vector<LayerPrunePlan> plan_prune(const std::vector<ExpertLayerScores>& layers, const PruneRequest& req);

// A per-layer budget for the --dry-run table: `total` kept experts over all layers, each layer at
// least `min_keep`, distributed by the layers' score shares (score / layer sum), largest first.
std::vector<int64_t> per_layer_budget(const std::vector<LayerPrunePlan>& plans, int64_t total, int64_t min_keep);

}  // namespace moetool
