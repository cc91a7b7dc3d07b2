// formats/family.h — one model family (llama, mixtral, qwen2_moe, ...): its config.json keys and its
// table of Hugging Face tensor names <-> roles. Each family is defined in exactly one file under
// formats/families/; nothing else in moetool switches on the family name. The registry
// (formats/families/registry.cc) lists them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/model_config.h"

namespace moetool {

class GGUFArch;  // formats/gguf_config.h

// What a tensor is for. Layer-level roles carry a layer index; expert roles also an expert index.
enum class Role {
  Embed, LmHead, FinalNorm,                                   // model-level
  AttnNorm, FfnNorm,                                          // per layer
  Q, K, V, O, QBias, KBias, VBias, OBias, QNorm, KNorm,       // attention
  QA, QANorm, QB, KVA, KVANorm, KVB,                          // MLA attention (deepseek_v3)
  Gate, Up, Down, GateBias, UpBias, DownBias,                 // dense FFN
  Router, RouterBias,                                         // MoE router [E, H], correction bias [E]
  ExpertGate, ExpertUp, ExpertDown,                           // routed expert e
  SharedGate, SharedUp, SharedDown, SharedExpertGate,         // shared expert; its sigmoid gate [1, H]
};
const char* role_name(Role r);
// A 2-D weight matrix (embedding, head, attention, FFN and expert linears; not routers or norms).
bool is_matrix_role(Role r);
// A routed expert's linear (ExpertGate, ExpertUp, ExpertDown).
bool is_expert_role(Role r);

// One tensor a model of this config must have.
struct TensorSlot {
  Role role;
  int64_t layer = -1;   // -1 for model-level tensors
  int64_t expert = -1;  // -1 unless a routed-expert role
  std::string name;     // HF name, e.g. "model.layers.3.mlp.experts.7.down_proj.weight"
  Shape shape;          // PyTorch order, e.g. [out_features, in_features]
};

// Fused ("packed") expert tensors: transformers v5's in-memory layout, found in checkpoints saved by
// versions that did not convert back (v5.23's save_pretrained writes per-expert names again):
// gate_up [E, 2·I, H] (gate rows first, then up rows) and down [E, H, I].
struct FusedExpertNames {
  std::string gate_up;  // e.g. "model.layers.3.mlp.experts.gate_up_proj"
  std::string down;     // e.g. "model.layers.3.mlp.experts.down_proj"
  // The router weight's name in that layout; differs from tensor_name(Role::Router) only where
  // transformers renames the MoE block (mixtral: block_sparse_moe.gate -> mlp.gate).
  std::string router;
};

// Sizes for synthetic models (moetool synth); families fill in their own features around them.
struct SynthSizes {
  int64_t vocab = 512, hidden = 64, layers = 2, heads = 4, kv_heads = 2, intermediate = 128;
  int64_t experts = 4, top_k = 2, expert_intermediate = 64, max_positions = 512;
};

class Family {
 public:
  virtual ~Family() = default;
  virtual std::string name() const = 0;          // HF model_type
  virtual std::string architecture() const = 0;  // HF architectures[0], e.g. "MixtralForCausalLM"
  virtual bool is_moe() const = 0;

  // Parses config.json into a ModelConfig. Throws moetool::Error naming `path` and the key when a
  // required key is missing or has a wrong type/value.
  virtual ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const = 0;
  // The config.json for a ModelConfig of this family (inverse of parse_config for the keys it reads).
  virtual nlohmann::json to_config_json(const ModelConfig& c) const = 0;
  // Every tensor a checkpoint of this config holds, in a canonical order (model-level first, then
  // layer by layer), in the per-expert layout. Tied embeddings: only Embed (no LmHead).
  virtual std::vector<TensorSlot> tensors(const ModelConfig& c) const = 0;
  // The HF name of one tensor.
  virtual std::string tensor_name(Role r, int64_t layer = -1, int64_t expert = -1) const = 0;
  // Names of the fused expert tensors of MoE layer `layer` (empty strings for dense families).
  virtual FusedExpertNames fused_expert_names(int64_t layer) const = 0;
  // A config of this family with the given sizes, exercising the family's distinctive features.
  virtual ModelConfig synth_config(const SynthSizes& s) const = 0;
  // The family's form in llama.cpp's GGUF files (architecture, keys, tensor names), defined in the
  // family's own file; nullptr when moetool cannot export it to a GGUF that llama.cpp runs.
  virtual const GGUFArch* gguf_arch() const { return nullptr; }
};

// The registry of supported families.
const Family& family_by_name(const std::string& model_type);  // throws for an unsupported one
std::vector<const Family*> all_families();
// Parses a config.json object: looks up its model_type and calls that family's parse_config. Throws
// moetool::Error naming `path` for a missing/unsupported model_type.
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& path);

}  // namespace moetool
