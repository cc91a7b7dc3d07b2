// formats/families/deepseek_v3.cc — the deepseek_v3 family (DeepseekV3ForCausalLM): multi-head latent
// attention (q_a_proj → q_a_layernorm → q_b_proj, or a plain q_proj when q_lora_rank is null;
// kv_a_proj_with_mqa → kv_a_layernorm → kv_b_proj; o_proj), rope on qk_rope_head_dim dims (interleaved
// unless rope_interleave is false); layers < first_k_dense_replace are dense FFNs of intermediate_size, the
// rest MoE: sigmoid router "mlp.gate" + "mlp.gate.e_score_correction_bias" [E] for selection, group-limited
// top-k (n_group, topk_group), weights renormalised when norm_topk_prob and × routed_scaling_factor, plus
// ungated "mlp.shared_experts" of width n_shared_experts × moe_intermediate_size.
//
// Fused layout (transformers v5 conversion_mapping.py: deepseek_v3 = qwen2_moe's): "model.layers.N.mlp.
// experts.gate_up_proj" [E, 2I, H] (gate rows first) and "model.layers.N.mlp.experts.down_proj" [E, H, I];
// router weight and bias keep their names.
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool {
namespace {

// MLA, the routing beyond the shared MoE keys, and the remote-code keys transformers ignores.
void parse_own(const fam::ConfigReader& r, ModelConfig& c) {
  // transformers' q_a_proj / kv_a_proj_with_mqa / o_proj take bias=attention_bias; moetool has no roles
  // for the first two, and no released DeepSeek-V3 checkpoint uses it.
  if (r.bool_or("attention_bias", false))
    r.invalid("attention_bias", "true is not supported for deepseek_v3 (MLA projection biases)");

  MlaConfig a;
  a.q_lora_rank = r.contains("q_lora_rank") ? r.opt_positive("q_lora_rank").value_or(0) : 1536;
  a.kv_lora_rank = r.positive("kv_lora_rank");
  a.qk_nope_head_dim = r.positive("qk_nope_head_dim");
  a.qk_rope_head_dim = r.positive("qk_rope_head_dim");
  a.v_head_dim = r.positive("v_head_dim");
  a.rope_interleave = r.bool_or("rope_interleave", true);
  c.mla = a;
  c.head_dim = a.qk_rope_head_dim;

  // Remote-code keys transformers ignores: accept only the values its implementation hard-codes.
  if (const std::string s = r.string_or("scoring_func", "sigmoid"); s != "sigmoid")
    r.invalid("scoring_func", str("unsupported '", s, "' (deepseek_v3 scores experts with 'sigmoid')"));
  if (const std::string t = r.string_or("topk_method", "noaux_tc"); t != "noaux_tc")
    r.invalid("topk_method", str("unsupported '", t, "' (deepseek_v3 selects with 'noaux_tc')"));
  if (const int64_t f = r.positive_or("moe_layer_freq", 1); f != 1)
    r.invalid("moe_layer_freq", str("unsupported ", f, " (transformers makes every layer >= first_k_dense_replace MoE)"));

  MoeConfig& m = *c.moe;
  m.routed_scaling_factor = r.positive_number_or("routed_scaling_factor", 2.5);
  m.n_group = r.positive_or("n_group", 8);
  m.topk_group = r.positive_or("topk_group", 4);
  m.router_bias = true;
  m.n_shared_experts = r.positive_or("n_shared_experts", 1);
  m.shared_intermediate = m.n_shared_experts * m.expert_intermediate;
  m.shared_gated = false;
}

void write_own(const ModelConfig& c, nlohmann::json& j) {
  check(c.mla.has_value() && c.moe.has_value(), "deepseek_v3: needs MLA and MoE settings");
  check(!c.attention_bias && !c.o_bias && c.qk_norm == QkNorm::None, "deepseek_v3: MLA has no biases or q/k norms");
  const MlaConfig& a = *c.mla;
  const MoeConfig& m = *c.moe;
  check(m.routing == RoutingKind::SigmoidGroupLimited && m.router_bias && !m.shared_gated && m.n_shared_experts > 0 &&
            m.shared_intermediate == m.n_shared_experts * m.expert_intermediate,
        "deepseek_v3: sigmoid group-limited routing with bias and n_shared_experts ungated shared experts");
  j["attention_bias"] = false;
  j["q_lora_rank"] = a.q_lora_rank > 0 ? nlohmann::json(a.q_lora_rank) : nlohmann::json(nullptr);
  j["kv_lora_rank"] = a.kv_lora_rank;
  j["qk_nope_head_dim"] = a.qk_nope_head_dim;
  j["qk_rope_head_dim"] = a.qk_rope_head_dim;
  j["v_head_dim"] = a.v_head_dim;
  j["rope_interleave"] = a.rope_interleave;
  j["n_shared_experts"] = m.n_shared_experts;
  j["routed_scaling_factor"] = m.routed_scaling_factor;
  j["n_group"] = m.n_group;
  j["topk_group"] = m.topk_group;
  j["moe_layer_freq"] = 1;
  j["scoring_func"] = "sigmoid";
  j["topk_method"] = "noaux_tc";
}

// DeepSeek-V3-style at small size: q LoRA, kv LoRA, nope/rope/v head dims, yarn RoPE with
// mscale_all_dim, layer 0 dense, n_group 2 / topk_group 1, routed_scaling_factor 2.5, one shared expert.
void synth_own(const SynthSizes& s, ModelConfig& c) {
  const int64_t hd = s.hidden / s.heads;
  c.num_kv_heads = s.heads;  // MLA: every head has its own k/v (num_key_value_heads = heads)
  MlaConfig a;
  a.q_lora_rank = std::max<int64_t>(2, s.hidden / 2);
  a.kv_lora_rank = std::max<int64_t>(2, s.hidden / 4);
  a.qk_nope_head_dim = hd;
  a.qk_rope_head_dim = std::max<int64_t>(2, hd / 2 / 2 * 2);
  a.v_head_dim = hd;
  c.mla = a;
  c.head_dim = a.qk_rope_head_dim;
  c.rope.type = RopeScaling::Type::Yarn;
  // factor = max_position_embeddings / original_max_position_embeddings, as in DeepSeek-V3's config
  // (newer transformers derive the yarn attention factor from that ratio).
  c.rope.original_max_position_embeddings = std::max<int64_t>(1, s.max_positions / 4);
  c.rope.factor = static_cast<double>(s.max_positions) / static_cast<double>(c.rope.original_max_position_embeddings);
  c.rope.beta_fast = 32.0;
  c.rope.beta_slow = 1.0;
  c.rope.mscale = 1.0;
  c.rope.mscale_all_dim = 1.0;
  MoeConfig& m = *c.moe;
  m.routed_scaling_factor = 2.5;
  m.router_bias = true;
  m.n_group = s.experts % 2 == 0 && s.experts >= 4 ? 2 : 1;
  m.topk_group = 1;
  if (m.top_k > m.topk_group * (m.num_experts / m.n_group)) m.topk_group = m.n_group;
  m.n_shared_experts = 1;
  m.shared_intermediate = s.expert_intermediate;
  if (c.num_layers > 1) c.layer_kinds.front() = LayerKind::Dense;
}

}  // namespace

const Family& deepseek_v3_family() {
  static const fam::LlamaLikeFamily f({
      .name = "deepseek_v3",
      .architecture = "DeepseekV3ForCausalLM",
      .features = fam::kMla | fam::kDenseFfn | fam::kMoe | fam::kRouterBias | fam::kShared,
      .naming = {.shared_block = "shared_experts"},
      // transformers DeepseekV3Config. head_dim is not read: transformers sets it to qk_rope_head_dim.
      .defaults = {.max_positions = 4096, .kv_heads = 128, .head_dim = 1 /* replaced by qk_rope_head_dim */,
                   .bos = 0, .eos = 1},
      .head_dim_key = fam::HeadDimKey::Never,
      .moe = fam::MoeKeys{.experts = "n_routed_experts", .norm_topk_default = true,
                          .placement = fam::MoePlacement::FirstKDense, .first_k_dense_default = 3,
                          .routing = RoutingKind::SigmoidGroupLimited},
      .synth = {.norm_topk_prob = true},
      .parse_own = parse_own,
      .write_own = write_own,
      .synth_own = synth_own,
  });
  return f;
}

}  // namespace moetool
