// formats/model_config.h — the family-independent description of a model, parsed from config.json
// by the family's own code (formats/families/<family>.cc). Everything downstream (inspect, synth,
// the inference engine, convert, compress) reads this, never config.json keys directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace moetool {

// RoPE frequency scaling (HF `rope_scaling` / `rope_parameters`).
struct RopeScaling {
  enum class Type { Default, Linear, Dynamic, Llama3, Yarn };
  Type type = Type::Default;
  double factor = 1.0;
  // llama3
  double low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 0;
  // yarn
  double beta_fast = 32.0, beta_slow = 1.0;
  // Absent and present-with-a-value differ in transformers (the mscale ratio is used only when both
  // are given and non-zero), so both stay optional.
  std::optional<double> mscale, mscale_all_dim;
  std::optional<double> attention_factor;

  bool operator==(const RopeScaling&) const = default;
};

enum class LayerKind { Dense, Moe };

// How a MoE router turns logits into expert choices and weights.
enum class RoutingKind {
  SoftmaxTopK,          // softmax over all experts, top-k, optional renormalisation (mixtral, qwen*, olmoe)
  SigmoidGroupLimited,  // sigmoid scores, + correction bias for selection, group-limited top-k (deepseek_v3)
};

struct MoeConfig {
  int64_t num_experts = 0;          // routed experts per MoE layer
  int64_t top_k = 0;                // experts per token
  int64_t expert_intermediate = 0;  // FFN width of one routed expert
  RoutingKind routing = RoutingKind::SoftmaxTopK;
  bool norm_topk_prob = false;      // renormalise the top-k weights to sum to 1
  double routed_scaling_factor = 1.0;
  int64_t n_group = 1, topk_group = 1;  // group-limited selection (deepseek_v3)
  bool router_bias = false;         // e_score_correction_bias present (deepseek_v3)
  // Shared experts: total width of the always-on shared FFN (0 = none) and whether a
  // sigmoid(shared_expert_gate · x) scales it (qwen2_moe) or it is ungated (deepseek_v3).
  int64_t shared_intermediate = 0;
  int64_t n_shared_experts = 0;     // deepseek_v3's count (width = n × expert_intermediate)
  bool shared_gated = false;

  bool operator==(const MoeConfig&) const = default;
};

// Multi-head latent attention (deepseek_v3).
struct MlaConfig {
  int64_t q_lora_rank = 0;  // 0: q is a plain projection
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0, qk_rope_head_dim = 0, v_head_dim = 0;
  // HF `rope_interleave` (default true): the rope part of q/k is stored interleaved (pairs 2i, 2i+1)
  // and transformers de-interleaves it before rotate-half RoPE.
  bool rope_interleave = true;

  bool operator==(const MlaConfig&) const = default;
};

enum class QkNorm {
  None,
  PerHead,  // RMSNorm over head_dim, weight [head_dim] (qwen3, qwen3_moe)
  Full,     // RMSNorm over the whole projection, weight [heads·head_dim] (olmoe)
};

struct ModelConfig {
  std::string family;  // HF model_type: "llama", "mixtral", ...
  int64_t vocab_size = 0, hidden_size = 0, num_layers = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;  // deepseek_v3: head_dim = qk_rope_head_dim (as HF)
  int64_t intermediate_size = 0;  // dense FFN width (dense layers of MoE models too)
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  RopeScaling rope;
  bool tie_word_embeddings = false;
  bool attention_bias = false;   // q/k/v biases (qwen2: always; llama: attention_bias)
  bool o_bias = false;           // o_proj bias (llama attention_bias=true also biases o_proj)
  bool mlp_bias = false;         // llama mlp_bias
  QkNorm qk_norm = QkNorm::None;
  std::optional<int64_t> sliding_window;  // tokens; nullopt = full attention
  // Which layers use sliding_window (qwen2/qwen3 apply it to some layers only). Size num_layers when
  // sliding_window is set, empty otherwise; read it through window_for_layer().
  std::vector<bool> sliding_layers;
  std::optional<double> clip_qkv;          // olmoe
  std::optional<MoeConfig> moe;
  std::optional<MlaConfig> mla;
  std::vector<LayerKind> layer_kinds;  // size num_layers
  std::optional<int64_t> bos_token_id, eos_token_id;
  nlohmann::json raw;  // config.json as read (kept for writing back unknown keys)

  bool is_moe_layer(int64_t l) const { return layer_kinds.at(static_cast<size_t>(l)) == LayerKind::Moe; }
  // The MoE layers' indices, ascending.
  std::vector<int64_t> moe_layer_ids() const {
    std::vector<int64_t> out;
    for (int64_t l = 0; l < num_layers; ++l)
      if (is_moe_layer(l)) out.push_back(l);
    return out;
  }
  // The attention window of layer l (nullopt: full causal attention).
  std::optional<int64_t> window_for_layer(int64_t l) const {
    if (!sliding_window) return std::nullopt;
    if (!sliding_layers.empty() && !sliding_layers.at(static_cast<size_t>(l))) return std::nullopt;
    return sliding_window;
  }
};

}  // namespace moetool
