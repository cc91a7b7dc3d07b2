// formats/families/qwen2.cc — the qwen2 family (Qwen2ForCausalLM): q/k/v biases always (o_proj none),
// a sliding window only when use_sliding_window is true and then only on layers >= max_window_layers
// (or as layer_types says).
#include "formats/families/common.h"

namespace moetool {

const Family& qwen2_family() {
  static const fam::LlamaLikeFamily f({
      .name = "qwen2",
      .architecture = "Qwen2ForCausalLM",
      .features = fam::kMha | fam::kAttnBias | fam::kDenseFfn,
      .defaults = {.max_positions = 32768, .kv_heads = 32},  // transformers Qwen2Config
      .bias = fam::BiasKey::QkvAlways,  // Qwen2Attention: q/k/v_proj bias=True, o_proj bias=False
      .sliding = {.kind = fam::SlidingKeys::Kind::Qwen, .qwen_rule = fam::QwenSlidingRule::FromMaxWindowLayers},
      // Qwen2.5-0.5B-style: q/k/v biases, tied embeddings, theta 1e6.
      .synth = {.rope_theta = 1000000.0, .tied = true},
      // llama.cpp "qwen2": NEOX RoPE (no permutation), q/k/v biases.
      .gguf = GGUFArchDesc{.arch = "qwen2", .attn_bias_always = true},
  });
  return f;
}

}  // namespace moetool
