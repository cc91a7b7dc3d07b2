// formats/families/olmoe.cc — the olmoe family (OlmoeForCausalLM): llama attention with RMSNorm over the
// whole q projection (q_norm [hidden]) and k projection (k_norm [kv_heads·head_dim]) before RoPE, q/k/v
// clamped to ±clip_qkv when set, q/k/v/o biases when attention_bias; every layer MoE ("mlp.gate",
// "mlp.experts.E.{gate,up,down}_proj", intermediate_size per expert), softmax → top-k → renormalised when
// norm_topk_prob (default false). head_dim is always hidden/heads.
//
// Fused layout (transformers v5 conversion_mapping.py: olmoe = qwen2_moe's): "model.layers.N.mlp.experts.
// gate_up_proj" [E, 2I, H] (gate rows first) and "model.layers.N.mlp.experts.down_proj" [E, H, I].
#include "core/error.h"
#include "formats/families/common.h"

namespace moetool {

const Family& olmoe_family() {
  static const fam::LlamaLikeFamily f({
      .name = "olmoe",
      .architecture = "OlmoeForCausalLM",
      .features = fam::kMha | fam::kAttnBias | fam::kOBias | fam::kQkNorm | fam::kMoe,
      .defaults = {.max_positions = 4096, .rms_norm_eps = 1e-5, .eos = 50279},  // transformers OlmoeConfig
      .head_dim_key = fam::HeadDimKey::Never,
      .bias = fam::BiasKey::AttentionBias,
      .qk_norm = QkNorm::Full,
      .moe = fam::MoeKeys{.width = nullptr},
      .parse_own =
          [](const fam::ConfigReader& r, ModelConfig& c) {
            c.clip_qkv = r.opt_number("clip_qkv");
            if (c.clip_qkv && !(*c.clip_qkv > 0)) r.bad("clip_qkv", "a positive number or null", r.at("clip_qkv"));
          },
      .write_own =
          [](const ModelConfig& c, nlohmann::json& j) {
            check(c.hidden_size % c.num_heads == 0 && c.head_dim == c.hidden_size / c.num_heads,
                  "olmoe: head_dim is always hidden_size / num_attention_heads");
            j["clip_qkv"] = c.clip_qkv ? nlohmann::json(*c.clip_qkv) : nlohmann::json(nullptr);
          },
      // OLMoE-1B-7B-style (but GQA, so k_norm is narrower than q_norm): full-width q/k norms, clip_qkv set,
      // norm_topk_prob false, eps 1e-5.
      .synth_own = [](const SynthSizes&, ModelConfig& c) { c.clip_qkv = 8.0; },
  });
  return f;
}

}  // namespace moetool
