// formats/families/mixtral.cc — the mixtral family (MixtralForCausalLM): mistral attention with every
// layer a sparse MoE block "block_sparse_moe" (router "gate" [E, H]; experts w1 = gate, w3 = up, w2 =
// down, intermediate_size per expert), softmax → top-k → always renormalised.
//
// Fused layout (transformers v5, conversion_mapping.py "mixtral" + MixtralExperts): the block is renamed
// "mlp" (router "model.layers.N.mlp.gate.weight"), experts become "model.layers.N.mlp.experts.gate_up_proj"
// [E, 2I, H] = cat(w1, w3) along dim 1 (gate rows first; forward does .chunk(2) -> gate, up) and
// "model.layers.N.mlp.experts.down_proj" [E, H, I] = stacked w2.
#include "formats/families/common.h"

namespace moetool {

const Family& mixtral_family() {
  static const fam::LlamaLikeFamily f({
      .name = "mixtral",
      .architecture = "MixtralForCausalLM",
      .features = fam::kMha | fam::kMoe,
      .naming = {.moe_block = "block_sparse_moe", .expert_gate = "w1", .expert_up = "w3", .expert_down = "w2"},
      // transformers MixtralConfig.
      .defaults = {.max_positions = 4096 * 32, .rms_norm_eps = 1e-5, .rope_theta = 1000000.0, .kv_heads = 8,
                   .bos = 1, .eos = 2},
      .head_dim_key = fam::HeadDimKey::WhenNotDerived,
      .sliding = {.kind = fam::SlidingKeys::Kind::Plain},
      // MixtralSparseMoeBlock always renormalises the top-k weights; experts are intermediate_size wide.
      .moe = fam::MoeKeys{.experts = "num_local_experts", .alias = "num_experts", .default_top_k = 2,
                          .width = nullptr, .norm_topk_key = false, .norm_topk_default = true},
      // Mixtral-8x7B-style: every layer MoE, GQA, theta 1e6, eps 1e-5, no sliding window.
      .synth = {.norm_topk_prob = true},
      // llama.cpp "llama" with experts: ffn_{gate,up,down}_exps stacked, router ffn_gate_inp,
      // feed_forward_length = the expert width, top-k weights renormalised.
      .gguf = GGUFArchDesc{.arch = "llama", .permute_qk = true, .moe = true},
  });
  return f;
}

}  // namespace moetool
