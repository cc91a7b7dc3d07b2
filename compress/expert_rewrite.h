// compress/expert_rewrite.h — the one rewriter of an MoE's routed experts that prune, merge and svd
// share: writes a checkpoint of the SAME family in which every MoE layer has K experts (the same K
// in all layers: stock loaders take one count), each either a source expert (possibly narrowed to
// some of its intermediate neurons) or a replacement the pass computes (a merged expert), with the
// router rows (and DeepSeek-V3's score-correction bias) taken from the experts kept or replaced
// by the pass, and config.json's counts updated through the family's own writer. Everything else
// (embeddings, attention, norms, dense layers, shared experts) is copied unchanged, layer by layer,
// through the checkpoint writer (formats/checkpoint_writer.h): staged, provenance in the metadata,
// moved into place only when complete. Slicing copies bytes, so a kept expert is bit-identical to
// its source whatever its dtype.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/model.h"

namespace moetool {

// What one MoE layer becomes.
struct ExpertLayerEdit {
  int64_t layer = -1;
  // Output expert j comes from source expert keep[j] (size K; for a replaced expert: the source whose
  // router row it takes when the pass gives no row of its own).
  std::vector<int64_t> keep;
  // Per output expert, the intermediate neurons it keeps (ascending, each of size expert_intermediate);
  // empty: all of them.
  std::vector<std::vector<int64_t>> neurons;
};

struct ExpertRewrite {
  int64_t num_experts = 0;          // K
  int64_t top_k = 0;                // experts per token in the output (0: the source's)
  int64_t expert_intermediate = 0;  // width of an output expert (0: the source's)
  std::vector<ExpertLayerEdit> layers;  // one per MoE layer of the source, in layer order
  // A replaced expert's weight (merge): float32 values in the output shape ([I', H] for gate/up,
  // [H, I'] for down) of (role, layer, output expert); nullopt: the source expert as edited above.
  std::function<std::optional<std::vector<float>>(Role role, int64_t layer, int64_t expert)> replace_expert;
  // A layer's router [K, H] as float32 (merge: fitted rows); nullopt: rows keep[j] of the source's.
  std::function<std::optional<std::vector<float>>(int64_t layer)> replace_router;

  bool overwrite = false;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;       // provenance (__metadata__)
  std::function<void(const std::string&)> progress;  // one line per layer
};

struct RewriteResult {
  ModelConfig config;              // the output's, as its family reads it back
  std::vector<std::string> files;  // written, relative to the output directory
  uint64_t bytes = 0;              // tensor data bytes
  int64_t params = 0, source_params = 0;
};

// The output config: the source's with the new counts, written by the family's to_config_json and
// read back (throws when the family cannot express it).
ModelConfig rewritten_config(const Model& src, const ExpertRewrite& rw);

// Checks the edit against the source (a layer per MoE layer, K entries, ids in range and distinct,
// neuron lists of the right size and in range, K ≥ top-k) and writes `out_dir`. Throws one line
// naming the layer / expert / option that is wrong, leaving nothing behind.
RewriteResult rewrite_experts(const Model& src, const ExpertRewrite& rw, const std::string& out_dir);

}  // namespace moetool
