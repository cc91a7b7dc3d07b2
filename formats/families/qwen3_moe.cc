// formats/families/qwen3_moe.cc — the qwen3_moe family (Qwen3MoeForCausalLM): qwen3 attention (head_dim
// key, default hidden/heads here; per-head q/k RMSNorm; q/k/v/o biases when attention_bias), MoE layers
// placed by decoder_sparse_step / mlp_only_layers like qwen2_moe but without a shared expert; softmax →
// top-k → renormalised when norm_topk_prob.
//
// Fused layout (transformers v5 conversion_mapping.py: qwen3_moe = qwen2_moe's): "model.layers.N.mlp.experts.
// gate_up_proj" [E, 2I, H] (gate rows first) and "model.layers.N.mlp.experts.down_proj" [E, H, I].
#include "formats/families/common.h"

namespace moetool {

const Family& qwen3_moe_family() {
  static const fam::LlamaLikeFamily f({
      .name = "qwen3_moe",
      .architecture = "Qwen3MoeForCausalLM",
      .features = fam::kMha | fam::kAttnBias | fam::kOBias | fam::kQkNorm | fam::kDenseFfn | fam::kMoe,
      // transformers Qwen3MoeConfig (its class has no head_dim field: the attention falls back to
      // hidden_size / num_attention_heads when config.json has none).
      .defaults = {.max_positions = 32768, .kv_heads = 4},
      .bias = fam::BiasKey::AttentionBias,
      .qk_norm = QkNorm::PerHead,
      .sliding = {.kind = fam::SlidingKeys::Kind::Qwen, .qwen_rule = fam::QwenSlidingRule::AllLayers},
      .moe = fam::MoeKeys{.placement = fam::MoePlacement::SparseStep},
      // Qwen3-30B-A3B-style: head_dim twice hidden/heads, q/k norms, norm_topk_prob true, decoder_sparse_step 1
      // and (with more than 2 layers) the last layer dense via mlp_only_layers.
      .synth = {.rope_theta = 1000000.0, .head_dim_factor = 2, .norm_topk_prob = true},
      // llama.cpp "qwen3moe": qwen3 attention, every layer MoE, top-k weights renormalised.
      .gguf = GGUFArchDesc{.arch = "qwen3moe", .moe = true, .expert_ff_key = true, .qk_norm = true,
                           .dense_layers_ok = false},
      .synth_own =
          [](const SynthSizes&, ModelConfig& c) {
            if (c.num_layers > 2) c.layer_kinds.back() = LayerKind::Dense;
          },
  });
  return f;
}

}  // namespace moetool
