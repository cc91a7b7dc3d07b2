// formats/families/qwen2_moe.cc — the qwen2_moe family (Qwen2MoeForCausalLM): qwen2 attention (q/k/v
// biases; transformers v5 adds a `qkv_bias` key, default true), MoE layers placed by decoder_sparse_step /
// mlp_only_layers (the others are dense "mlp" FFNs of intermediate_size), softmax → top-k →
// renormalised only when norm_topk_prob, plus a shared expert of shared_expert_intermediate_size scaled
// by sigmoid(shared_expert_gate · x).
//
// Fused layout (transformers v5 conversion_mapping.py "qwen2_moe"): "model.layers.N.mlp.experts.gate_up_proj"
// [E, 2I, H] = cat(gate_proj, up_proj) along dim 1 (gate first) and "...mlp.experts.down_proj" [E, H, I];
// router "mlp.gate.weight", shared expert and its gate keep their names.
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers Qwen2MoeConfig defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 32768;
  d.rms_norm_eps = 1e-6;
  d.rope_theta = 10000.0;
  d.kv_heads = 16;
  return d;
}

class Qwen2Moe final : public fam::LlamaLikeFamily {
 public:
  Qwen2Moe()
      : LlamaLikeFamily("qwen2_moe", "Qwen2MoeForCausalLM", true,
                        fam::kMha | fam::kAttnBias | fam::kDenseFfn | fam::kMoe | fam::kShared | fam::kSharedGate) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    c.attention_bias = r.bool_or("qkv_bias", true);
    fam::parse_qwen_sliding(r, fam::QwenSlidingRule::OddBelowMaxWindow, c);
    fam::parse_qwen_moe(r, false, 4, c);
    MoeConfig& m = *c.moe;
    m.shared_intermediate = r.positive("shared_expert_intermediate_size");
    m.shared_gated = true;
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(!c.o_bias, "qwen2_moe: o_proj has no bias");
    check(c.moe.has_value() && c.moe->shared_intermediate > 0 && c.moe->shared_gated && !c.moe->router_bias &&
              c.moe->routing == RoutingKind::SoftmaxTopK,
          "qwen2_moe: softmax top-k routing with a gated shared expert");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    j.erase("head_dim");
    if (c.head_dim != c.hidden_size / c.num_heads || c.hidden_size % c.num_heads != 0) j["head_dim"] = c.head_dim;
    j["qkv_bias"] = c.attention_bias;
    fam::write_qwen_sliding(c, fam::QwenSlidingRule::OddBelowMaxWindow, j);
    fam::write_qwen_moe(c, j);
    j["shared_expert_intermediate_size"] = c.moe->shared_intermediate;
    return j;
  }

  // Qwen1.5-MoE-A2.7B-style: q/k/v biases, every layer MoE with a gated shared expert (4× the expert
  // width, like 5632 = 4 × 1408), norm_topk_prob false.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.attention_bias = true;
    MoeConfig m;
    m.num_experts = s.experts;
    m.top_k = std::min(s.top_k, s.experts);
    m.expert_intermediate = s.expert_intermediate;
    m.norm_topk_prob = false;
    m.shared_intermediate = 4 * s.expert_intermediate;
    m.shared_gated = true;
    c.moe = m;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Moe);
    return c;
  }

  // llama.cpp "qwen2moe": every layer MoE, expert_feed_forward_length, a sigmoid-gated shared
  // expert (ffn_*_shexp, ffn_gate_inp_shexp), top-k weights not renormalised.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "qwen2moe", .moe = true, .expert_ff_key = true,
                                          .shared_expert = true, .topk_norm = GGUFArchDesc::TopkNorm::Never,
                                          .attn_bias_always = true, .dense_layers_ok = false,
                                          .hf_model_type = "qwen2_moe", .hf_architecture = "Qwen2MoeForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& qwen2_moe_family() {
  static const Qwen2Moe f;
  return f;
}

}  // namespace moetool
