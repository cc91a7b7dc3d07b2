// formats/families/qwen3_moe.cc — the qwen3_moe family (Qwen3MoeForCausalLM): qwen3 attention (head_dim
// key, default hidden/heads here; per-head q/k RMSNorm; q/k/v/o biases when attention_bias), MoE layers
// placed by decoder_sparse_step / mlp_only_layers like qwen2_moe but without a shared expert; softmax →
// top-k → renormalised when norm_topk_prob.
//
// Fused layout (transformers v5 conversion_mapping.py: qwen3_moe = qwen2_moe's): "model.layers.N.mlp.experts.
// gate_up_proj" [E, 2I, H] (gate rows first) and "model.layers.N.mlp.experts.down_proj" [E, H, I].
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers Qwen3MoeConfig defaults (its class has no head_dim field: the attention falls back to
// hidden_size / num_attention_heads when config.json has none).
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 32768;
  d.rms_norm_eps = 1e-6;
  d.rope_theta = 10000.0;
  d.kv_heads = 4;
  return d;
}

class Qwen3Moe final : public fam::LlamaLikeFamily {
 public:
  Qwen3Moe()
      : LlamaLikeFamily("qwen3_moe", "Qwen3MoeForCausalLM", true,
                        fam::kMha | fam::kAttnBias | fam::kOBias | fam::kQkNorm | fam::kDenseFfn | fam::kMoe) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    c.attention_bias = c.o_bias = r.bool_or("attention_bias", false);
    c.qk_norm = QkNorm::PerHead;
    fam::parse_qwen_sliding(r, fam::QwenSlidingRule::AllLayers, c);
    fam::parse_qwen_moe(r, true, 8, c);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(c.attention_bias == c.o_bias, "qwen3_moe: q/k/v and o_proj biases come together (attention_bias)");
    check(c.qk_norm == QkNorm::PerHead, "qwen3_moe: attention always has per-head q/k norms");
    check(c.moe.has_value() && c.moe->shared_intermediate == 0 && !c.moe->router_bias &&
              c.moe->routing == RoutingKind::SoftmaxTopK,
          "qwen3_moe: softmax top-k routing without shared experts");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    j["attention_bias"] = c.attention_bias;
    fam::write_qwen_sliding(c, fam::QwenSlidingRule::AllLayers, j);
    fam::write_qwen_moe(c, j);
    return j;
  }

  // Qwen3-30B-A3B-style: head_dim twice hidden/heads, q/k norms, norm_topk_prob true, decoder_sparse_step 1
  // and (with more than 2 layers) the last layer dense via mlp_only_layers.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.head_dim = 2 * (s.hidden / s.heads);
    c.qk_norm = QkNorm::PerHead;
    c.rope_theta = 1000000.0;
    MoeConfig m;
    m.num_experts = s.experts;
    m.top_k = std::min(s.top_k, s.experts);
    m.expert_intermediate = s.expert_intermediate;
    m.norm_topk_prob = true;
    c.moe = m;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Moe);
    if (c.num_layers > 2) c.layer_kinds.back() = LayerKind::Dense;
    return c;
  }

  // llama.cpp "qwen3moe": qwen3 attention, every layer MoE, top-k weights renormalised.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "qwen3moe", .moe = true, .expert_ff_key = true, .qk_norm = true,
                                          .dense_layers_ok = false, .hf_model_type = "qwen3_moe",
                                          .hf_architecture = "Qwen3MoeForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& qwen3_moe_family() {
  static const Qwen3Moe f;
  return f;
}

}  // namespace moetool
