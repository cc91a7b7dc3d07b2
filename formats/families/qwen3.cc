// formats/families/qwen3.cc — the qwen3 family (Qwen3ForCausalLM): explicit head_dim (default 128, not
// hidden/heads), per-head q/k RMSNorm (weight [head_dim]), q/k/v/o biases when attention_bias, qwen
// sliding-window keys as qwen2.
#include "formats/families/common.h"

namespace moetool {

const Family& qwen3_family() {
  static const fam::LlamaLikeFamily f({
      .name = "qwen3",
      .architecture = "Qwen3ForCausalLM",
      .features = fam::kMha | fam::kAttnBias | fam::kOBias | fam::kQkNorm | fam::kDenseFfn,
      .defaults = {.max_positions = 32768, .kv_heads = 32, .head_dim = 128},  // transformers Qwen3Config
      .bias = fam::BiasKey::AttentionBias,
      .qk_norm = QkNorm::PerHead,
      .sliding = {.kind = fam::SlidingKeys::Kind::Qwen, .qwen_rule = fam::QwenSlidingRule::FromMaxWindowLayers},
      // Qwen3-0.6B-style: head_dim twice hidden/heads, q/k norms, tied embeddings, theta 1e6.
      .synth = {.rope_theta = 1000000.0, .tied = true, .head_dim_factor = 2},
      // llama.cpp "qwen3": NEOX RoPE, per-head attn_q_norm / attn_k_norm, head size in key_length.
      .gguf = GGUFArchDesc{.arch = "qwen3", .qk_norm = true},
  });
  return f;
}

}  // namespace moetool
