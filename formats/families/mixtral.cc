// formats/families/mixtral.cc — the mixtral family (MixtralForCausalLM): mistral attention with every
// layer a sparse MoE block "block_sparse_moe" (router "gate" [E, H]; experts w1 = gate, w3 = up, w2 =
// down, intermediate_size per expert), softmax → top-k → always renormalised.
//
// Fused layout (transformers v5, conversion_mapping.py "mixtral" + MixtralExperts): the block is renamed
// "mlp" (router "model.layers.N.mlp.gate.weight"), experts become "model.layers.N.mlp.experts.gate_up_proj"
// [E, 2I, H] = cat(w1, w3) along dim 1 (gate rows first; forward does .chunk(2) -> gate, up) and
// "model.layers.N.mlp.experts.down_proj" [E, H, I] = stacked w2.
#include <algorithm>

#include "core/error.h"
#include "formats/families/common.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

// transformers MixtralConfig defaults.
fam::BaseDefaults defaults() {
  fam::BaseDefaults d;
  d.max_positions = 4096 * 32;
  d.rms_norm_eps = 1e-5;
  d.rope_theta = 1000000.0;
  d.kv_heads = 8;
  d.bos = 1;
  d.eos = 2;
  return d;
}

fam::TensorNaming naming() {
  fam::TensorNaming n;
  n.moe_block = "block_sparse_moe";
  n.expert_gate = "w1";
  n.expert_up = "w3";
  n.expert_down = "w2";
  return n;
}

class Mixtral final : public fam::LlamaLikeFamily {
 public:
  Mixtral() : LlamaLikeFamily("mixtral", "MixtralForCausalLM", true, fam::kMha | fam::kMoe, naming()) {}

  ModelConfig parse_config(const nlohmann::json& j, const std::string& path) const override {
    fam::ConfigReader r(j, path);
    ModelConfig c = fam::parse_base(r, *this, defaults());
    fam::parse_plain_sliding(r, std::nullopt, c);
    MoeConfig m;
    m.num_experts = r.positive(r.pick({"num_local_experts", "num_experts"}));  // attribute_map alias
    m.top_k = r.positive_or("num_experts_per_tok", 2);
    m.expert_intermediate = c.intermediate_size;
    m.routing = RoutingKind::SoftmaxTopK;
    m.norm_topk_prob = true;  // MixtralSparseMoeBlock always renormalises the top-k weights
    c.moe = m;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Moe);
    fam::validate(c, path);
    return c;
  }

  nlohmann::json to_config_json(const ModelConfig& c) const override {
    check_family(c);
    check(c.moe.has_value() && std::all_of(c.layer_kinds.begin(), c.layer_kinds.end(),
                                           [](LayerKind k) { return k == LayerKind::Moe; }),
          "mixtral: every layer is a MoE layer");
    const MoeConfig& m = *c.moe;
    check(m.norm_topk_prob && m.routing == RoutingKind::SoftmaxTopK && m.shared_intermediate == 0 && !m.router_bias,
          "mixtral: routing is softmax top-k, renormalised, without shared experts or router bias");
    nlohmann::json j = fam::base_json(c, *this, defaults());
    j.erase("head_dim");
    if (c.head_dim != c.hidden_size / c.num_heads || c.hidden_size % c.num_heads != 0) j["head_dim"] = c.head_dim;
    fam::write_plain_sliding(c, j);
    j["intermediate_size"] = m.expert_intermediate;
    j.erase("num_experts");
    j["num_local_experts"] = m.num_experts;
    j["num_experts_per_tok"] = m.top_k;
    return j;
  }

  // Mixtral-8x7B-style: every layer MoE, GQA, theta 1e6, eps 1e-5, no sliding window.
  ModelConfig synth_config(const SynthSizes& s) const override {
    ModelConfig c = fam::synth_base(*this, s);
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 1000000.0;
    c.intermediate_size = s.expert_intermediate;
    MoeConfig m;
    m.num_experts = s.experts;
    m.top_k = std::min(s.top_k, s.experts);
    m.expert_intermediate = s.expert_intermediate;
    m.norm_topk_prob = true;
    c.moe = m;
    c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Moe);
    return c;
  }

  // llama.cpp "llama" with experts: ffn_{gate,up,down}_exps stacked, router ffn_gate_inp,
  // feed_forward_length = the expert width, top-k weights renormalised.
  const GGUFArch* gguf_arch() const override {
    static const auto g = make_gguf_arch({.arch = "llama", .permute_qk = true, .moe = true,
                                          .hf_model_type = "mixtral", .hf_architecture = "MixtralForCausalLM"});
    return g.get();
  }
};

}  // namespace

const Family& mixtral_family() {
  static const Mixtral f;
  return f;
}

}  // namespace moetool
