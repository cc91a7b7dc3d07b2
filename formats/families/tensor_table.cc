// formats/families/tensor_table.cc — the standard llama-like tensor table: the HF name of every role (as
// the family's TensorNaming and features allow) and every tensor a config's checkpoint holds, with shapes.
#include <utility>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool::fam {

std::string LlamaLikeFamily::tensor_name(Role r, int64_t layer, int64_t expert) const {
  auto need = [&](unsigned feature) {
    if (!(spec_.features & feature)) fail(spec_.name, ": no tensor with role '", role_name(r), "' in this family");
  };
  switch (r) {
    case Role::Embed: return "model.embed_tokens.weight";
    case Role::LmHead: return "lm_head.weight";
    case Role::FinalNorm: return "model.norm.weight";
    default: break;
  }
  check(layer >= 0, spec_.name, ": role '", role_name(r), "' needs a layer index");
  check(is_expert_role(r) == (expert >= 0), spec_.name, ": role '", role_name(r),
        is_expert_role(r) ? "' needs an expert index" : "' takes no expert index");
  const std::string L = str("model.layers.", layer, ".");
  const std::string A = L + "self_attn.";
  const std::string M = L + "mlp.";
  const std::string B = L + spec_.naming.moe_block + ".";
  switch (r) {
    case Role::AttnNorm: return L + "input_layernorm.weight";
    case Role::FfnNorm: return L + "post_attention_layernorm.weight";
    case Role::Q: need(kMha | kMla); return A + "q_proj.weight";
    case Role::K: need(kMha); return A + "k_proj.weight";
    case Role::V: need(kMha); return A + "v_proj.weight";
    case Role::O: need(kMha | kMla); return A + "o_proj.weight";
    case Role::QBias: need(kAttnBias); return A + "q_proj.bias";
    case Role::KBias: need(kAttnBias); return A + "k_proj.bias";
    case Role::VBias: need(kAttnBias); return A + "v_proj.bias";
    case Role::OBias: need(kOBias); return A + "o_proj.bias";
    case Role::QNorm: need(kQkNorm); return A + "q_norm.weight";
    case Role::KNorm: need(kQkNorm); return A + "k_norm.weight";
    case Role::QA: need(kMla); return A + "q_a_proj.weight";
    case Role::QANorm: need(kMla); return A + "q_a_layernorm.weight";
    case Role::QB: need(kMla); return A + "q_b_proj.weight";
    case Role::KVA: need(kMla); return A + "kv_a_proj_with_mqa.weight";
    case Role::KVANorm: need(kMla); return A + "kv_a_layernorm.weight";
    case Role::KVB: need(kMla); return A + "kv_b_proj.weight";
    case Role::Gate: need(kDenseFfn); return M + "gate_proj.weight";
    case Role::Up: need(kDenseFfn); return M + "up_proj.weight";
    case Role::Down: need(kDenseFfn); return M + "down_proj.weight";
    case Role::GateBias: need(kMlpBias); return M + "gate_proj.bias";
    case Role::UpBias: need(kMlpBias); return M + "up_proj.bias";
    case Role::DownBias: need(kMlpBias); return M + "down_proj.bias";
    case Role::Router: need(kMoe); return B + "gate.weight";
    case Role::RouterBias: need(kRouterBias); return B + "gate.e_score_correction_bias";
    case Role::ExpertGate: need(kMoe); return str(B, "experts.", expert, ".", spec_.naming.expert_gate, ".weight");
    case Role::ExpertUp: need(kMoe); return str(B, "experts.", expert, ".", spec_.naming.expert_up, ".weight");
    case Role::ExpertDown: need(kMoe); return str(B, "experts.", expert, ".", spec_.naming.expert_down, ".weight");
    case Role::SharedGate: need(kShared); return B + spec_.naming.shared_block + ".gate_proj.weight";
    case Role::SharedUp: need(kShared); return B + spec_.naming.shared_block + ".up_proj.weight";
    case Role::SharedDown: need(kShared); return B + spec_.naming.shared_block + ".down_proj.weight";
    case Role::SharedExpertGate: need(kSharedGate); return B + "shared_expert_gate.weight";
    default: break;
  }
  fail(spec_.name, ": unknown role ", static_cast<int>(r));
}

FusedExpertNames LlamaLikeFamily::fused_expert_names(int64_t layer) const {
  if (!is_moe()) return {};
  check(layer >= 0, spec_.name, ": fused expert names need a layer index");
  const std::string B = str("model.layers.", layer, ".", spec_.naming.fused_block, ".");
  return {B + "experts.gate_up_proj", B + "experts.down_proj", B + "gate.weight"};
}

std::vector<TensorSlot> LlamaLikeFamily::tensors(const ModelConfig& c) const {
  check_family(c);
  validate(c, spec_.name);
  const int64_t H = c.hidden_size, V = c.vocab_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads;
  std::vector<TensorSlot> out;
  auto add = [&](Role r, int64_t layer, int64_t expert, Shape shape) {
    for (int64_t d : shape) check(d > 0, spec_.name, ": non-positive dimension for '", role_name(r), "'");
    out.push_back({r, layer, expert, tensor_name(r, layer, expert), std::move(shape)});
  };
  add(Role::Embed, -1, -1, {V, H});
  add(Role::FinalNorm, -1, -1, {H});
  if (!c.tie_word_embeddings) add(Role::LmHead, -1, -1, {V, H});

  for (int64_t l = 0; l < c.num_layers; ++l) {
    add(Role::AttnNorm, l, -1, {H});
    if (c.mla) {
      const MlaConfig& a = *c.mla;
      const int64_t qk = a.qk_nope_head_dim + a.qk_rope_head_dim;
      if (a.q_lora_rank > 0) {
        add(Role::QA, l, -1, {a.q_lora_rank, H});
        add(Role::QANorm, l, -1, {a.q_lora_rank});
        add(Role::QB, l, -1, {nh * qk, a.q_lora_rank});
      } else {
        add(Role::Q, l, -1, {nh * qk, H});
      }
      add(Role::KVA, l, -1, {a.kv_lora_rank + a.qk_rope_head_dim, H});
      add(Role::KVANorm, l, -1, {a.kv_lora_rank});
      add(Role::KVB, l, -1, {nh * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank});
      add(Role::O, l, -1, {H, nh * a.v_head_dim});
    } else {
      add(Role::Q, l, -1, {nh * hd, H});
      if (c.attention_bias) add(Role::QBias, l, -1, {nh * hd});
      add(Role::K, l, -1, {nkv * hd, H});
      if (c.attention_bias) add(Role::KBias, l, -1, {nkv * hd});
      add(Role::V, l, -1, {nkv * hd, H});
      if (c.attention_bias) add(Role::VBias, l, -1, {nkv * hd});
      add(Role::O, l, -1, {H, nh * hd});
      if (c.o_bias) add(Role::OBias, l, -1, {H});
      if (c.qk_norm == QkNorm::PerHead) {
        add(Role::QNorm, l, -1, {hd});
        add(Role::KNorm, l, -1, {hd});
      } else if (c.qk_norm == QkNorm::Full) {
        add(Role::QNorm, l, -1, {nh * hd});
        add(Role::KNorm, l, -1, {nkv * hd});
      }
    }
    add(Role::FfnNorm, l, -1, {H});
    if (!c.is_moe_layer(l)) {
      const int64_t I = c.intermediate_size;
      add(Role::Gate, l, -1, {I, H});
      if (c.mlp_bias) add(Role::GateBias, l, -1, {I});
      add(Role::Up, l, -1, {I, H});
      if (c.mlp_bias) add(Role::UpBias, l, -1, {I});
      add(Role::Down, l, -1, {H, I});
      if (c.mlp_bias) add(Role::DownBias, l, -1, {H});
      continue;
    }
    const MoeConfig& m = *c.moe;
    const int64_t E = m.num_experts, I = m.expert_intermediate;
    add(Role::Router, l, -1, {E, H});
    if (m.router_bias) add(Role::RouterBias, l, -1, {E});
    for (int64_t e = 0; e < E; ++e) {
      add(Role::ExpertGate, l, e, {I, H});
      add(Role::ExpertUp, l, e, {I, H});
      add(Role::ExpertDown, l, e, {H, I});
    }
    if (m.shared_intermediate > 0) {
      const int64_t S = m.shared_intermediate;
      add(Role::SharedGate, l, -1, {S, H});
      add(Role::SharedUp, l, -1, {S, H});
      add(Role::SharedDown, l, -1, {H, S});
      if (m.shared_gated) add(Role::SharedExpertGate, l, -1, {1, H});
    }
  }
  return out;
}

}  // namespace moetool::fam
