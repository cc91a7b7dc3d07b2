// formats/families/qwen2_moe.cc — the qwen2_moe family (Qwen2MoeForCausalLM): qwen2 attention (q/k/v
// biases; transformers v5 adds a `qkv_bias` key, default true), MoE layers placed by decoder_sparse_step /
// mlp_only_layers (the others are dense "mlp" FFNs of intermediate_size), softmax → top-k →
// renormalised only when norm_topk_prob, plus a shared expert of shared_expert_intermediate_size scaled
// by sigmoid(shared_expert_gate · x).
//
// Fused layout (transformers v5 conversion_mapping.py "qwen2_moe"): "model.layers.N.mlp.experts.gate_up_proj"
// [E, 2I, H] = cat(gate_proj, up_proj) along dim 1 (gate first) and "...mlp.experts.down_proj" [E, H, I];
// router "mlp.gate.weight", shared expert and its gate keep their names.
#include "formats/families/common.h"

namespace moetool {

const Family& qwen2_moe_family() {
  static const fam::LlamaLikeFamily f({
      .name = "qwen2_moe",
      .architecture = "Qwen2MoeForCausalLM",
      .features = fam::kMha | fam::kAttnBias | fam::kDenseFfn | fam::kMoe | fam::kShared | fam::kSharedGate,
      .defaults = {.max_positions = 32768, .kv_heads = 16},  // transformers Qwen2MoeConfig
      .head_dim_key = fam::HeadDimKey::WhenNotDerived,
      .bias = fam::BiasKey::QkvBias,
      .sliding = {.kind = fam::SlidingKeys::Kind::Qwen, .qwen_rule = fam::QwenSlidingRule::OddBelowMaxWindow},
      .moe = fam::MoeKeys{.reads_alias = false, .default_top_k = 4, .placement = fam::MoePlacement::SparseStep,
                          .shared_width = "shared_expert_intermediate_size"},
      // Qwen1.5-MoE-A2.7B-style: q/k/v biases, every layer MoE with a gated shared expert (4× the expert
      // width, like 5632 = 4 × 1408), norm_topk_prob false.
      .synth = {.shared_factor = 4},
      // llama.cpp "qwen2moe": every layer MoE, expert_feed_forward_length, a sigmoid-gated shared
      // expert (ffn_*_shexp, ffn_gate_inp_shexp), top-k weights not renormalised.
      .gguf = GGUFArchDesc{.arch = "qwen2moe", .moe = true, .expert_ff_key = true, .shared_expert = true,
                           .topk_norm = GGUFArchDesc::TopkNorm::Never, .attn_bias_always = true,
                           .dense_layers_ok = false},
  });
  return f;
}

}  // namespace moetool
