// formats/families/olmoe.cc — the olmoe family (OlmoeForCausalLM): llama attention with RMSNorm over the
// whole q projection (q_norm [hidden]) and k projection (k_norm [kv_heads·head_dim]) before RoPE, q/k/v
// clamped to ±clip_qkv when set, q/k/v/o biases when attention_bias; every layer MoE ("mlp.gate",
// "mlp.experts.E.{gate,up,down}_proj", intermediate_size per expert), softmax → top-k → renormalised when
// norm_topk_prob (default false). head_dim is always hidden/heads.
//
// Fused layout (transformers v5 conversion_mapping.py: olmoe = qwen2_moe's): "model.layers.N.mlp.experts.
// gate_up_proj" [E, 2I, H] (gate rows first) and "model.layers.N.mlp.experts.down_proj" [E, H, I].
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool {
namespace {

// transformers OlmoeConfig defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 4096;
  d.rms_norm_eps = 1e-5;
  d.rope_theta = 10000.0;
  d.reads_head_dim = false;
  d.writes_head_dim = false;
  d.eos = 50279;
  return d;
}

class Olmoe final : public fam::LlamaLikeFamily {
 public:
  Olmoe()
      : LlamaLikeFamily("olmoe", "OlmoeForCausalLM", true,
                        fam::kMha | fam::kAttnBias | fam::kOBias | fam::kQkNorm | fam::kMoe) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    c.attention_bias = c.o_bias = r.bool_or("attention_bias", false);
    c.qk_norm = QkNorm::Full;
    c.clip_qkv = r.opt_number("clip_qkv");
    if (c.clip_qkv && !(*c.clip_qkv > 0)) r.bad("clip_qkv", "a positive number or null", j.at("clip_qkv"));
    MoeConfig m;
    m.num_experts = r.positive(r.pick({"num_experts", "num_local_experts"}));  // attribute_map alias
    m.top_k = r.positive_or("num_experts_per_tok", 8);
    m.expert_intermediate = c.intermediate_size;
    m.norm_topk_prob = r.bool_or("norm_topk_prob", false);
    c.moe = m;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Moe);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(c.attention_bias == c.o_bias, "olmoe: q/k/v and o_proj biases come together (attention_bias)");
    check(c.qk_norm == QkNorm::Full, "olmoe: attention always has full-width q/k norms");
    check(c.hidden_size % c.num_heads == 0 && c.head_dim == c.hidden_size / c.num_heads,
          "olmoe: head_dim is always hidden_size / num_attention_heads");
    check(c.moe.has_value() && std::all_of(c.layer_kinds.begin(), c.layer_kinds.end(),
                                           [](LayerKind k) { return k == LayerKind::Moe; }),
          "olmoe: every layer is a MoE layer");
    const MoeConfig& m = *c.moe;
    check(m.shared_intermediate == 0 && !m.router_bias && m.routing == RoutingKind::SoftmaxTopK,
          "olmoe: softmax top-k routing without shared experts");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    j.erase("head_dim");
    j["attention_bias"] = c.attention_bias;
    j["clip_qkv"] = c.clip_qkv ? nlohmann::json(*c.clip_qkv) : nlohmann::json(nullptr);
    j["intermediate_size"] = m.expert_intermediate;
    j.erase("num_local_experts");
    j["num_experts"] = m.num_experts;
    j["num_experts_per_tok"] = m.top_k;
    j["norm_topk_prob"] = m.norm_topk_prob;
    return j;
  }

  // OLMoE-1B-7B-style (but GQA, so k_norm is narrower than q_norm): full-width q/k norms, clip_qkv set,
  // norm_topk_prob false, eps 1e-5.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.rms_norm_eps = 1e-5;
    c.qk_norm = QkNorm::Full;
    c.clip_qkv = 8.0;
    c.intermediate_size = s.expert_intermediate;
    MoeConfig m;
    m.num_experts = s.experts;
    m.top_k = std::min(s.top_k, s.experts);
    m.expert_intermediate = s.expert_intermediate;
    m.norm_topk_prob = false;
    c.moe = m;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Moe);
    return c;
  }
};

}  // namespace

const Family& olmoe_family() {
  static const Olmoe f;
  return f;
}

}  // namespace moetool
