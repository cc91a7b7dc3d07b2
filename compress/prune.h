// compress/prune.h — the prune job: scores every routed expert from one calibration run (or saved
// statistics), protects super experts, keeps K experts per MoE layer (compress/prune_plan.h),
// optionally slims the kept experts to their most important intermediate neurons (SlimMoE's width
// pruning without distillation: neuron j of an expert scores ‖a_j‖₂ · Σ_i |W_down[i, j]| with a_j its
// activation over the expert's routed calibration tokens), and writes a checkpoint of the same family
// that stock loaders run (compress/expert_rewrite.h). Kept expert ids per layer and the method go into
// the output's metadata.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/prune_plan.h"
#include "engine/calibrate.h"
#include "kernels/device.h"

namespace moetool::prune {

struct Options {
  std::string model, output;
  int64_t keep = 0;             // K per layer; 0: from keep_fraction
  double keep_fraction = 0;     // K = round(F · E)
  std::string method = "reap";  // reap | easy-ep | frequency | reconstruct | random
  std::vector<std::string> calib_texts;  // tokenized and chunked one after another
  std::string calib_stats;               // saved `moetool calibrate` statistics instead
  int64_t ctx = 256, chunks = 0;         // calibration chunking (chunks: at most this many per file; 0 all)
  uint64_t seed = 0;                     // --method random
  int64_t max_measure_tokens = 8192;     // --method reconstruct: calibration tokens per layer re-run
  std::string protect = "auto";          // auto | off | LAYER:EXPERT,...
  SuperExpertRule super_rule;
  double slim = 0;                       // fraction of each kept expert's neurons to remove
  bool dry_run = false, overwrite = false;
  uint64_t max_shard_bytes = 0;
  DeviceOptions device;                  // where calibration runs
  std::map<std::string, std::string> metadata;       // provenance
  std::function<void(const std::string&)> progress;  // one line per calibrated / written layer
};

struct Result {
  std::string model, output, method;
  int64_t num_experts = 0, keep = 0, top_k = 0;
  int64_t expert_intermediate = 0, slim_intermediate = 0;  // before / after --slim
  int64_t calib_tokens = 0;
  std::vector<LayerPrunePlan> layers;
  std::vector<SuperExpert> super_experts;
  std::vector<ExpertId> protect;
  std::vector<int64_t> budget;         // --dry-run: a per-layer budget with the same total (table only)
  std::vector<std::string> warnings;
  std::vector<std::string> files;
  uint64_t bytes = 0;
  int64_t params = 0, source_params = 0;
  double seconds = 0;
  bool written = false;
  nlohmann::ordered_json to_json() const;
  std::string table() const;  // the per-layer table printed by --dry-run and the summary
};

// Runs the job (writes nothing with dry_run). Throws moetool::Error (one line) on bad input: a dense
// model, K out of range, a statistics file of another model, unknown expert ids, a method that needs
// calibration without it.
Result run(const Options& o);

// Per-layer expert scores (compress/prune_plan.h) from calibration statistics.
std::vector<ExpertLayerScores> expert_scores(const CalibrationStats& st, const ModelConfig& c);

}  // namespace moetool::prune
