// compress/merge.h — the merge job: E routed experts per MoE layer become K by merging groups of
// similar experts, so what the dropped experts knew is kept in the survivors (MC-SMoE, HC-SMoE).
// One calibration sweep (engine/layer_sweep.h) gives per layer the routing frequency of each expert,
// the router logits and the MoE block's inputs; experts are grouped (compress/merge_group.h) by the
// cosine similarity of their router-logit columns, of their outputs on the same calibration tokens, or
// of their weights; each group's members are aligned to the leader neuron by neuron and averaged with
// their frequencies as weights (compress/merge_align.h); the merged expert takes the leader's router
// row, or a row fitted by ridge least squares (kernels/ridge.h) to the group's combined logit
// log Σ_{m ∈ group} exp(logit_m) on the sample tokens, so it is chosen where any member was. The output is a checkpoint of the same family with K experts (compress/expert_rewrite.h): a
// group of one is its source expert byte for byte.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/merge_group.h"
#include "kernels/device.h"

namespace moetool::merge {

struct Options {
  std::string model, output;
  int64_t experts = 0;                   // K per MoE layer
  std::string method = "msmoe";          // msmoe (dominant grouping) | hc (hierarchical clustering) |
                                         // sub-moe (hc grouping, joint-SVD merge: compress/merge_svd.h)
  double rank_fraction = 0.5;            // sub-moe: rank kept of each group's joint SVD (1: full)
  std::string group_by;                  // router-logits | outputs | weights ("": msmoe → router-logits, else outputs)
  std::string align = "permutation";     // permutation | none
  std::string router = "leader";         // leader (MC-SMoE) | fit (ridge least squares to the members' combined logit)
  std::vector<std::string> calib_texts;  // tokenized and chunked one after another
  std::string calib_stats;               // or saved `moetool calibrate` statistics (router logits; MoE
                                         // inputs from --hidden for --group-by outputs and --router fit)
  int64_t ctx = 256, chunks = 0;
  int64_t similarity_tokens = 1024;      // tokens whose router logits / expert outputs are compared (and
                                         // on which --router fit is fitted)
  bool dry_run = false, overwrite = false;
  uint64_t max_shard_bytes = 0;
  DeviceOptions device;                  // where calibration and sub-moe's joint SVDs (cuSOLVER) run
  std::map<std::string, std::string> metadata;
  std::function<void(const std::string&)> progress;
};

struct LayerMerge {
  int64_t layer = -1;
  std::vector<double> freq;        // [E] routed (token, expert) pairs in calibration
  std::vector<MergeGroup> groups;  // K, in output order
  std::vector<double> similarity;  // [E, E] what the grouping used
  std::vector<float> router;       // --router fit: [K, H] fitted rows
  double router_r2 = 0;            // their R² on held-out sample tokens
};

struct Result {
  std::string model, output, method, group_by, align, router;
  int64_t num_experts = 0, experts = 0, top_k = 0, calib_tokens = 0;
  std::vector<LayerMerge> layers;
  std::vector<std::string> warnings, files;
  uint64_t bytes = 0;
  int64_t params = 0, source_params = 0;
  double seconds = 0, align_seconds = 0, svd_seconds = 0;
  int64_t aligned_members = 0, moved_neurons = 0;  // --align permutation: members aligned, neurons not in place
  bool written = false;
  nlohmann::ordered_json to_json() const;
  std::string table() const;  // groups per layer with frequencies and similarities (--dry-run)
};

// Runs the job (writes nothing with dry_run). Throws moetool::Error (one line) on bad input: a dense
// model, K out of range (K < top-k or K > E), no calibration (or both kinds), statistics of another
// model or without what the options need, an unknown option value.
Result run(const Options& o);

}  // namespace moetool::merge
