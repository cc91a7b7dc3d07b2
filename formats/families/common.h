// formats/families/common.h — what the family files share: a family is one `Spec` (its names, HF
// defaults, which of the shared llama-like config.json keys and tensors it has, how `moetool synth` builds
// one, its GGUF form) plus hooks for the keys only it has; LlamaLikeFamily turns a Spec into a Family.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "formats/families/config_reader.h"
#include "formats/family.h"
#include "formats/gguf_config.h"
#include "formats/model_config.h"

namespace moetool {

// The families, one per file under formats/families/ (listed by registry.cc).
const Family& llama_family();
const Family& mistral_family();
const Family& qwen2_family();
const Family& qwen3_family();
const Family& mixtral_family();
const Family& qwen2_moe_family();
const Family& qwen3_moe_family();
const Family& olmoe_family();
const Family& deepseek_v3_family();

namespace fam {

// HF defaults of the shared keys that differ between families (the values transformers' config class
// uses when config.json omits the key).
struct BaseDefaults {
  int64_t max_positions = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  // When num_key_value_heads is missing; nullopt (or null) = num_attention_heads.
  std::optional<int64_t> kv_heads = std::nullopt;
  std::optional<int64_t> head_dim = std::nullopt;  // default head_dim; nullopt = hidden_size / num_attention_heads
  std::optional<int64_t> bos = std::nullopt, eos = std::nullopt;  // default token ids
};

// How a family's config.json carries head_dim.
enum class HeadDimKey {
  Always,          // read when present; always written
  WhenNotDerived,  // read; written only when it is not hidden_size / num_attention_heads (mixtral, qwen2_moe)
  Never,           // neither read nor written (olmoe: always hidden/heads; deepseek_v3: from the MLA dims)
};

// Which attention biases a family has and the key that turns them on.
enum class BiasKey {
  None,           // none (or the family's own hook refuses them)
  QkvAlways,      // q/k/v biases always, none on o_proj; no key (qwen2)
  QkvBias,        // q/k/v biases as "qkv_bias" says (default true), none on o_proj (qwen2_moe)
  AttentionBias,  // q/k/v and o_proj biases as "attention_bias" says (default false)
};

// Sliding window of the qwen kind: which layers slide when layer_types is absent (as transformers' config).
enum class QwenSlidingRule {
  FromMaxWindowLayers,  // qwen2, qwen3: layer i slides iff i >= max_window_layers
  OddBelowMaxWindow,    // qwen2_moe: layer i slides iff (i + 1) % 2 == 1 and i < max_window_layers
  AllLayers,            // qwen3_moe: every layer
};

// A family's sliding-window keys.
struct SlidingKeys {
  enum class Kind {
    None,
    Plain,  // mistral/mixtral: one `sliding_window` key (null = none), every layer
    Qwen,   // applies only when use_sliding_window is true; layers from layer_types or `qwen_rule`
  } kind = Kind::None;
  std::optional<int64_t> plain_default = std::nullopt;  // Plain: the window when the key is missing
  QwenSlidingRule qwen_rule = QwenSlidingRule::FromMaxWindowLayers;
};

// Which layers are MoE layers.
enum class MoePlacement {
  EveryLayer,
  // l is MoE iff l is not in mlp_only_layers and (l + 1) % decoder_sparse_step == 0 (qwen2_moe, qwen3_moe);
  // written back as decoder_sparse_step 1 and mlp_only_layers = the dense layers (any placement).
  SparseStep,
  FirstKDense,  // layers >= first_k_dense_replace (deepseek_v3): dense layers must come first
};

// A family's MoE keys: the expert count, num_experts_per_tok, the expert width, norm_topk_prob, the layer
// placement and a sigmoid-gated shared expert.
struct MoeKeys {
  const char* experts = "num_experts";  // the expert count, written back under this name
  // Its other spelling, erased on write so it cannot contradict; read instead of `experts` when that is
  // absent and `reads_alias` (transformers' attribute_map).
  const char* alias = "num_local_experts";
  bool reads_alias = true;
  int64_t default_top_k = 8;
  const char* width = "moe_intermediate_size";  // nullptr: experts are intermediate_size wide
  bool norm_topk_key = true;       // false: no norm_topk_prob key, always norm_topk_default
  bool norm_topk_default = false;
  MoePlacement placement = MoePlacement::EveryLayer;
  int64_t first_k_dense_default = 0;       // FirstKDense: first_k_dense_replace when missing
  const char* shared_width = nullptr;      // the gated shared expert's width key (required); nullptr: none
  // SoftmaxTopK families are checked on write here (no router bias, shared expert as the keys say);
  // a family with another routing checks its own settings.
  RoutingKind routing = RoutingKind::SoftmaxTopK;
};

// What `moetool synth` builds beyond synth_base (the family's default eps, attention biases on when the
// family's default has them, its q/k norms, all layers dense, bos 1, eos 2), and with MoE keys synth_moe
// on every layer. Hooks (Spec::synth_own) add the rest.
struct SynthStyle {
  std::optional<double> rope_theta = std::nullopt;  // nullopt: the family's default
  bool tied = false;
  int64_t head_dim_factor = 1;       // head_dim = factor × hidden / heads
  bool sliding_window = false;       // a short window (max_positions / 32, at least 2) on every layer
  bool norm_topk_prob = false;       // MoE: renormalise the top-k weights
  int64_t shared_factor = 0;         // MoE: a gated shared expert this many times the expert width (0: none)
};

// Which tensors a family's checkpoints can hold (tensor_name refuses the others).
enum Feature : unsigned {
  kMha = 1u << 0,         // q/k/v/o_proj
  kAttnBias = 1u << 1,    // q/k/v_proj.bias
  kOBias = 1u << 2,       // o_proj.bias
  kQkNorm = 1u << 3,      // self_attn.q_norm / k_norm
  kMla = 1u << 4,         // deepseek MLA projections (and o_proj, plain q_proj)
  kDenseFfn = 1u << 5,    // mlp.{gate,up,down}_proj
  kMlpBias = 1u << 6,     // their biases
  kMoe = 1u << 7,         // router and routed experts
  kRouterBias = 1u << 8,  // router e_score_correction_bias
  kShared = 1u << 9,      // shared expert FFN
  kSharedGate = 1u << 10, // its sigmoid gate
};

// How a family spells its MoE tensors (everything else is the same in every family here).
struct TensorNaming {
  std::string moe_block = "mlp";  // module holding router + experts ("block_sparse_moe" for mixtral)
  std::string expert_gate = "gate_proj", expert_up = "up_proj", expert_down = "down_proj";
  std::string shared_block = "shared_expert";  // "shared_experts" for deepseek_v3
  // Module of router + experts in transformers' fused-expert layout (always "mlp").
  std::string fused_block = "mlp";
};

// One family. The shared keys are read in this order: base keys (parse_base), attention biases, sliding
// window, MoE keys, then parse_own; written back in the same order after the shared checks.
struct Spec {
  std::string name;          // HF model_type
  std::string architecture;  // HF architectures[0]
  unsigned features = 0;     // Feature bits; kMoe makes it an MoE family (then `moe` is set)
  TensorNaming naming = {};
  BaseDefaults defaults = {};
  HeadDimKey head_dim_key = HeadDimKey::Always;
  BiasKey bias = BiasKey::None;
  QkNorm qk_norm = QkNorm::None;  // always this (no key)
  SlidingKeys sliding = {};
  std::optional<MoeKeys> moe = std::nullopt;
  SynthStyle synth = {};
  // llama.cpp's form of the family (hf_model_type / hf_architecture are filled in from the names);
  // nullopt when moetool cannot export it to a GGUF that llama.cpp runs.
  std::optional<GGUFArchDesc> gguf = std::nullopt;
  // The family's own keys: read after the shared ones (before validation), written after them (checking
  // what the family requires), and its synthetic config's own features.
  void (*parse_own)(const ConfigReader& r, ModelConfig& c) = nullptr;
  void (*write_own)(const ModelConfig& c, nlohmann::json& j) = nullptr;
  void (*synth_own)(const SynthSizes& s, ModelConfig& c) = nullptr;
};

// A family with the standard llama-like config keys and tensor table, as its Spec says.
class LlamaLikeFamily final : public Family {
 public:
  explicit LlamaLikeFamily(Spec spec);
  std::string name() const override { return spec_.name; }
  std::string architecture() const override { return spec_.architecture; }
  bool is_moe() const override { return (spec_.features & kMoe) != 0; }
  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override;
  nlohmann::json to_config_json(const ModelConfig& c) const override;
  std::vector<TensorSlot> tensors(const ModelConfig& c) const override;
  std::string tensor_name(Role r, int64_t layer = -1, int64_t expert = -1) const override;
  FusedExpertNames fused_expert_names(int64_t layer) const override;
  ModelConfig synth_config(const SynthSizes& s) const override;
  const GGUFArch* gguf_arch() const override { return gguf_.get(); }

 private:
  void check_family(const ModelConfig& c) const;  // throws unless c is of this family
  Spec spec_;
  std::unique_ptr<GGUFArch> gguf_;
};

// ---------------------------------------------------------------------------------------------------
// The shared keys, as LlamaLikeFamily reads and writes them (config_keys.cc, rope_sliding_keys.cc).

// Reads what every family shares: model_type (must match), vocab_size, hidden_size, intermediate_size,
// num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim, max_position_embeddings,
// rms_norm_eps, rope_theta + rope_scaling / rope_parameters, tie_word_embeddings (default false in every
// family here), hidden_act (must be silu), bos/eos ids. Sets family, raw, and layer_kinds (all Dense).
ModelConfig parse_base(const ConfigReader& r, const Spec& f);
// Checks the cross-key invariants (heads/kv heads, MoE counts and groups, MLA dims, layer kinds),
// throwing an error that names `path` and the keys involved.
void validate(const ModelConfig& c, const std::string& path);
// The shared keys as config.json: starts from c.raw (so keys moetool does not model survive), drops
// rope_parameters/quantization_config/layer_types (rewritten or no longer true), then writes every key
// parse_base reads plus model_type, architectures and hidden_act.
nlohmann::json base_json(const ModelConfig& c, const Spec& f);

// Attention biases and q/k norms as the Spec says; the check throws unless c has them that way.
void parse_attention(const ConfigReader& r, const Spec& f, ModelConfig& c);
void check_attention(const ModelConfig& c, const Spec& f);
void write_attention(const ModelConfig& c, const Spec& f, nlohmann::json& j);

// MoE keys (sets c.moe and the layer kinds); the check throws unless c can be written with them.
void parse_moe(const ConfigReader& r, const MoeKeys& k, ModelConfig& c);
void check_moe(const ModelConfig& c, const Spec& f);
void write_moe(const ModelConfig& c, const MoeKeys& k, nlohmann::json& j);

// RoPE: rope_theta and rope_scaling, or transformers v5's rope_parameters (rope_theta inside).
void parse_rope(const ConfigReader& r, double default_theta, ModelConfig& c);
void write_rope(const ModelConfig& c, nlohmann::json& j);

// Sliding-window keys of either kind; the writers throw for a placement the keys cannot express.
void parse_sliding(const ConfigReader& r, const SlidingKeys& k, ModelConfig& c);
void write_sliding(const ModelConfig& c, const SlidingKeys& k, nlohmann::json& j);

// ---------------------------------------------------------------------------------------------------
// Synthetic configs (synth_config.cc)

// A llama-like config of the given sizes as the Spec's SynthStyle says (all layers dense).
ModelConfig synth_base(const Spec& f, const SynthSizes& s);
// The MoE part of a synthetic config: s.experts experts of s.expert_intermediate, top-min(top_k, experts),
// with `routing`, the style's norm_topk_prob and gated shared expert.
MoeConfig synth_moe(const SynthSizes& s, const SynthStyle& style, RoutingKind routing);

}  // namespace fam
}  // namespace moetool
