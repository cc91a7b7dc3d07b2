// formats/inspect.h — the summary `moetool inspect` prints: architecture, per-layer structure,
// parameter counts (total and active per token; for low-rank checkpoints also the parameters really
// stored), low-rank modules, bytes by dtype, and every inconsistency between config.json and the
// tensors present.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/model.h"

namespace moetool {

struct LayerSummary {
  bool moe = false;
  int64_t routed_experts = 0, shared_experts = 0, top_k = 0;
  bool fused_layout = false;  // experts stored as fused 3-D tensors
};

// The low-rank linears of a checkpoint with a config.json lowrank block (formats/lowrank.h).
struct LowRankSummary {
  std::string format, method;
  int64_t modules = 0;                                 // modules lowrank.ranks factors
  int64_t rank_min = 0, rank_median = 0, rank_max = 0;  // over those (median: the lower middle one)
  int64_t with_base = 0;       // consistent modules with a weight_base
  int64_t shared_tensors = 0;  // stored factor tensors used by more than one module
};

struct InspectReport {
  std::string path, family, architecture;
  int64_t layers = 0, hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0, intermediate = 0;
  bool tied_embeddings = false;
  std::vector<LayerSummary> per_layer;
  int64_t params_total = 0, params_active = 0;  // from the config: every linear dense
  // Parameters the checkpoint stores: params_total with each (consistent) low-rank linear's
  // rows·cols replaced by the elements of the factor tensors it uses, a tensor shared by several
  // modules counted once. Equal to params_total without low-rank linears.
  int64_t params_stored = 0;
  std::optional<LowRankSummary> lowrank;
  // config.json's quantization_config, summarised: "block FP8 (e4m3, 128x128 blocks), 56 FP8 weights"
  // or "gptq" ("": none).
  std::string quantization;
  std::map<std::string, uint64_t> bytes_by_dtype;
  uint64_t bytes_total = 0;
  int64_t num_tensors = 0;
  int64_t num_files = 0;
  std::vector<std::string> inconsistencies;

  nlohmann::ordered_json to_json() const;
  std::string to_text() const;
};

InspectReport inspect_model(const Model& m);

// Summary of a GGUF file: architecture, version, metadata and tensor counts, bytes by ggml type.
struct GGUFSummary {
  std::string path, architecture, name;
  uint32_t version = 0, alignment = 0;
  int64_t num_kv = 0, num_tensors = 0, params = 0;
  std::map<std::string, uint64_t> bytes_by_type;
  uint64_t bytes_total = 0;
  nlohmann::ordered_json to_json() const;
  std::string to_text() const;
};
GGUFSummary inspect_gguf(const std::string& path);

}  // namespace moetool
