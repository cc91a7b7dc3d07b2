// formats/families/common.h — what the family files share: typed config.json readers whose errors name
// the file and the key, the keys every llama-like family has (parse and write back), RoPE and sliding
// window keys, and the standard llama-like tensor table, parametrised by a small naming descriptor and
// feature set so each family file only states what is distinctive about it.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/family.h"
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

// Reads typed values from one JSON object of a config file. Errors read
// "<path>: key '<prefix><key>': expected <what>, got <type> <value>" or "<path>: missing required key '...'".
// "Absent" below means the key is missing or null (HF treats both as "use the default").
class ConfigReader {
 public:
  ConfigReader(const nlohmann::json& j, std::string path, std::string prefix = "");

  const nlohmann::json& object() const { return j_; }
  const std::string& path() const { return path_; }
  bool has(const char* key) const;      // present and not null
  bool contains(const char* key) const;  // present, maybe null
  const nlohmann::json& at(const char* key) const;  // must be present
  std::string key_name(const char* key) const { return prefix_ + key; }
  // The first of `keys` that is present (not null), else the first: for keys transformers aliases
  // (attribute_map), e.g. {"num_experts", "num_local_experts"} — v5 saves some under the alias.
  const char* pick(std::initializer_list<const char*> keys) const;

  int64_t positive(const char* key) const;                      // required integer > 0
  int64_t positive_or(const char* key, int64_t def) const;      // absent -> def
  int64_t nonneg_or(const char* key, int64_t def) const;        // integer >= 0; absent -> def
  std::optional<int64_t> opt_positive(const char* key) const;   // absent -> nullopt
  double number(const char* key) const;                         // required number
  double number_or(const char* key, double def) const;
  std::optional<double> opt_number(const char* key) const;
  double positive_number_or(const char* key, double def) const;  // number > 0
  bool bool_or(const char* key, bool def) const;
  std::string string_or(const char* key, const std::string& def) const;
  std::vector<int64_t> nonneg_list_or_empty(const char* key) const;  // list of integers >= 0
  // A token id: an integer, a list of integers (the first is taken), or null (nullopt).
  // Absent (missing) -> def.
  std::optional<int64_t> token_id(const char* key, std::optional<int64_t> def) const;

  [[noreturn]] void bad(const char* key, const std::string& expected, const nlohmann::json& got) const;
  [[noreturn]] void missing(const char* key) const;
  [[noreturn]] void invalid(const char* key, const std::string& why) const;  // "<path>: key 'k': why"

 private:
  int64_t integer(const char* key, const nlohmann::json& v, int64_t min, const char* what) const;
  const nlohmann::json& j_;
  std::string path_, prefix_;
};

// "string \"abc\"", "number 1.5", "null", ... (truncated) — how errors show a JSON value.
std::string describe(const nlohmann::json& v);

// HF defaults of the shared keys that differ between families (the values transformers' config class
// uses when config.json omits the key).
struct BaseDefaults {
  int64_t max_positions = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<int64_t> kv_heads;  // when num_key_value_heads is missing; nullopt (or null) = num_attention_heads
  bool reads_head_dim = true;       // the family honours a head_dim key
  std::optional<int64_t> head_dim;  // default head_dim; nullopt = hidden_size / num_attention_heads
  std::optional<int64_t> bos, eos;  // default token ids
  bool writes_head_dim = true;      // write head_dim back (families that read it)
};

// Reads what every family shares: model_type (must match `f`), vocab_size, hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
// max_position_embeddings, rms_norm_eps, rope_theta + rope_scaling / rope_parameters,
// tie_word_embeddings (default false in every family here), hidden_act (must be silu), bos/eos ids.
// Sets family, raw, and layer_kinds (all Dense; MoE families overwrite).
ModelConfig parse_base(const ConfigReader& r, const Family& f, const BaseDefaults& d);
// Checks the cross-key invariants (heads/kv heads, MoE counts and groups, MLA dims, layer kinds),
// throwing an error that names `path` and the keys involved.
void validate(const ModelConfig& c, const std::string& path);
// The shared keys as config.json: starts from c.raw (so keys moetool does not model survive), drops
// rope_parameters/quantization_config/layer_types (rewritten or no longer true), then writes every key
// parse_base reads plus model_type, architectures and hidden_act.
nlohmann::json base_json(const ModelConfig& c, const Family& f, const BaseDefaults& d);

// RoPE: rope_theta and rope_scaling, or transformers v5's rope_parameters (rope_theta inside).
void parse_rope(const ConfigReader& r, double default_theta, ModelConfig& c);
void write_rope(const ModelConfig& c, nlohmann::json& j);

// Sliding window of the mistral/mixtral kind: one `sliding_window` key (null = none), every layer.
void parse_plain_sliding(const ConfigReader& r, std::optional<int64_t> def, ModelConfig& c);
void write_plain_sliding(const ModelConfig& c, nlohmann::json& j);

// Sliding window of the qwen kind: applies only when use_sliding_window is true; which layers is
// given by layer_types when present, otherwise by the family's rule (as in transformers' config).
enum class QwenSlidingRule {
  FromMaxWindowLayers,  // qwen2, qwen3: layer i slides iff i >= max_window_layers
  OddBelowMaxWindow,    // qwen2_moe: layer i slides iff (i + 1) % 2 == 1 and i < max_window_layers
  AllLayers,            // qwen3_moe: every layer
};
void parse_qwen_sliding(const ConfigReader& r, QwenSlidingRule rule, ModelConfig& c);
void write_qwen_sliding(const ModelConfig& c, QwenSlidingRule rule, nlohmann::json& j);

// qwen2_moe / qwen3_moe MoE layer placement: layer l is MoE iff l is not in mlp_only_layers and
// num_experts > 0 and (l + 1) % decoder_sparse_step == 0. Reads num_experts (or its alias
// num_local_experts when `alias_ok`: qwen3_moe's config maps one to the other), num_experts_per_tok,
// moe_intermediate_size, norm_topk_prob (default false), decoder_sparse_step, mlp_only_layers.
// num_experts_per_tok defaults to `default_top_k` (the family's HF default).
void parse_qwen_moe(const ConfigReader& r, bool alias_ok, int64_t default_top_k, ModelConfig& c);
// Writes them back (decoder_sparse_step 1 and mlp_only_layers = the dense layers: any placement);
// drops a num_local_experts alias from raw so it cannot contradict num_experts.
void write_qwen_moe(const ModelConfig& c, nlohmann::json& j);

// A llama-like config of the given sizes (head_dim = hidden / heads, all layers dense, eps 1e-6,
// theta 10000, bos 1, eos 2); families add their features.
ModelConfig synth_base(const Family& f, const SynthSizes& s);

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

// A family with the standard llama-like tensor table. Subclasses implement parse_config,
// to_config_json and synth_config.
class LlamaLikeFamily : public Family {
 public:
  LlamaLikeFamily(std::string name, std::string architecture, bool moe, unsigned features,
                  TensorNaming naming = {});
  std::string name() const override { return name_; }
  std::string architecture() const override { return architecture_; }
  bool is_moe() const override { return moe_; }
  std::vector<TensorSlot> tensors(const ModelConfig& c) const override;
  std::string tensor_name(Role r, int64_t layer = -1, int64_t expert = -1) const override;
  FusedExpertNames fused_expert_names(int64_t layer) const override;

 protected:
  // Throws unless c belongs to this family.
  void check_family(const ModelConfig& c) const;

 private:
  std::string name_, architecture_;
  bool moe_;
  unsigned features_;
  TensorNaming naming_;
};

}  // namespace fam
}  // namespace moetool
