// tests/families_test.cc — the model families: config.json round trips, tensor tables (names, shapes,
// counts, exact HF names), real configs parsed with the right values, and errors naming file and key.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "core/error.h"
#include "formats/family.h"
#include "formats/model_config.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using nlohmann::json;
using testing::error_of;

// Every field of ModelConfig except raw.
void expect_same(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.family, b.family);
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.num_layers, b.num_layers);
  EXPECT_EQ(a.num_heads, b.num_heads);
  EXPECT_EQ(a.num_kv_heads, b.num_kv_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_TRUE(a.rope == b.rope);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.attention_bias, b.attention_bias);
  EXPECT_EQ(a.o_bias, b.o_bias);
  EXPECT_EQ(a.mlp_bias, b.mlp_bias);
  EXPECT_EQ(a.qk_norm, b.qk_norm);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.sliding_layers, b.sliding_layers);
  EXPECT_EQ(a.clip_qkv, b.clip_qkv);
  EXPECT_EQ(a.moe.has_value(), b.moe.has_value());
  if (a.moe && b.moe) {
    EXPECT_TRUE(*a.moe == *b.moe);
  }
  EXPECT_EQ(a.mla.has_value(), b.mla.has_value());
  if (a.mla && b.mla) {
    EXPECT_TRUE(*a.mla == *b.mla);
  }
  EXPECT_EQ(a.layer_kinds, b.layer_kinds);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_id, b.eos_token_id);
}


ModelConfig parse_as(const std::string& family, const std::string& text, const std::string& path = "cfg.json") {
  return family_by_name(family).parse_config(json::parse(text), path);
}

std::map<std::string, TensorSlot> by_name(const std::vector<TensorSlot>& slots) {
  std::map<std::string, TensorSlot> m;
  for (const auto& s : slots) m[s.name] = s;
  return m;
}

size_t count_role(const std::vector<TensorSlot>& slots, Role r) {
  size_t n = 0;
  for (const auto& s : slots) n += s.role == r;
  return n;
}

// ---------------------------------------------------------------------------------------------------

TEST(Families, RegistryListsAllNine) {
  std::vector<std::string> names;
  for (const Family* f : all_families()) names.push_back(f->name());
  EXPECT_EQ(names, (std::vector<std::string>{"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe",
                                             "qwen3_moe", "olmoe", "deepseek_v3"}));
  for (const Family* f : all_families()) {
    EXPECT_EQ(&family_by_name(f->name()), f);
    EXPECT_EQ(f->is_moe(), f->name() == "mixtral" || f->name().find("moe") != std::string::npos ||
                               f->name() == "deepseek_v3");
    EXPECT_NE(f->architecture().find("ForCausalLM"), std::string::npos);
  }
  EXPECT_STREQ(role_name(Role::SharedExpertGate), "shared_expert_gate");
  EXPECT_STREQ(role_name(Role::KVANorm), "kv_a_norm");
}

TEST(Families, UnsupportedModelTypeNamesItAndListsSupported) {
  const std::string e = error_of([] { family_by_name("gpt2"); });
  EXPECT_NE(e.find("'gpt2'"), std::string::npos) << e;
  EXPECT_NE(e.find("llama, mistral, qwen2, qwen3, mixtral, qwen2_moe, qwen3_moe, olmoe, deepseek_v3"),
            std::string::npos)
      << e;
  const std::string e2 = error_of([] { parse_model_config(json{{"model_type", "bert"}}, "/x/config.json"); });
  EXPECT_EQ(e2.rfind("/x/config.json: unsupported model_type 'bert' (supported: llama,", 0), 0u) << e2;
  const std::string e3 = error_of([] { parse_model_config(json{{"hidden_size", 4}}, "/x/config.json"); });
  EXPECT_EQ(e3, "/x/config.json: missing required key 'model_type'");
}

TEST(Families, SynthConfigRoundTripsThroughConfigJson) {
  for (const Family* f : all_families()) {
    SCOPED_TRACE(f->name());
    for (int64_t layers : {1, 2, 3}) {
      SynthSizes s;
      s.layers = layers;
      const ModelConfig c = f->synth_config(s);
      EXPECT_EQ(c.family, f->name());
      EXPECT_EQ(c.layer_kinds.size(), static_cast<size_t>(layers));
      const json j = f->to_config_json(c);
      EXPECT_EQ(j.at("model_type"), f->name());
      EXPECT_EQ(j.at("architectures"), json::array({f->architecture()}));
      EXPECT_TRUE(j.at("rope_scaling").is_null() || j.at("rope_scaling").is_object());
      // Through text, as a file would.
      const ModelConfig back = f->parse_config(json::parse(j.dump(2)), "synth/config.json");
      expect_same(c, back);
      // Writing the parsed config again gives the same JSON.
      EXPECT_EQ(f->to_config_json(back), j);
      // And parse_model_config dispatches on model_type.
      expect_same(parse_model_config(j, "synth/config.json"), c);
    }
  }
}

TEST(Families, SynthConfigsExerciseFeatures) {
  SynthSizes s;
  s.layers = 3;
  auto synth = [&](const char* n) { return family_by_name(n).synth_config(s); };
  for (const Family* f : all_families()) {
    const ModelConfig c = f->synth_config(s);
    if (f->name() != "deepseek_v3") {
      EXPECT_LT(c.num_kv_heads, c.num_heads) << f->name();
    }
    EXPECT_EQ(c.moe.has_value(), f->is_moe()) << f->name();
  }
  EXPECT_TRUE(synth("llama").tie_word_embeddings);
  EXPECT_EQ(synth("llama").rope.type, RopeScaling::Type::Llama3);
  EXPECT_TRUE(synth("mistral").sliding_window.has_value());
  EXPECT_TRUE(synth("qwen2").attention_bias);
  EXPECT_FALSE(synth("qwen2").o_bias);
  EXPECT_EQ(synth("qwen3").qk_norm, QkNorm::PerHead);
  EXPECT_NE(synth("qwen3").head_dim, s.hidden / s.heads);
  const ModelConfig q2 = synth("qwen2_moe");
  EXPECT_GT(q2.moe->shared_intermediate, 0);
  EXPECT_TRUE(q2.moe->shared_gated);
  EXPECT_FALSE(q2.moe->norm_topk_prob);
  const ModelConfig q3 = synth("qwen3_moe");
  EXPECT_EQ(q3.layer_kinds, (std::vector<LayerKind>{LayerKind::Moe, LayerKind::Moe, LayerKind::Dense}));
  EXPECT_EQ(family_by_name("qwen3_moe").to_config_json(q3).at("mlp_only_layers"), json::array({2}));
  EXPECT_EQ(synth("olmoe").qk_norm, QkNorm::Full);
  EXPECT_TRUE(synth("olmoe").clip_qkv.has_value());
  const ModelConfig ds = synth("deepseek_v3");
  EXPECT_EQ(ds.moe->n_group, 2);
  EXPECT_EQ(ds.moe->topk_group, 1);
  EXPECT_EQ(ds.moe->routed_scaling_factor, 2.5);
  EXPECT_GT(ds.mla->q_lora_rank, 0);
  EXPECT_EQ(ds.layer_kinds, (std::vector<LayerKind>{LayerKind::Dense, LayerKind::Moe, LayerKind::Moe}));
  const json dj = family_by_name("deepseek_v3").to_config_json(ds);
  EXPECT_EQ(dj.at("first_k_dense_replace"), 1);
  EXPECT_EQ(dj.at("rope_scaling").at("rope_type"), "yarn");
}

// head_dim in config.json: always written (llama, mistral, qwen2, qwen3, qwen3_moe), only when it is not
// hidden/heads (mixtral, qwen2_moe), or never (olmoe: always hidden/heads; deepseek_v3: from the MLA dims).
TEST(Families, ConfigJsonWritesHeadDimAsTheFamilyDoes) {
  const std::map<std::string, std::string> rule = {
      {"llama", "always"}, {"mistral", "always"}, {"qwen2", "always"}, {"qwen3", "always"},
      {"qwen3_moe", "always"}, {"mixtral", "when not derived"}, {"qwen2_moe", "when not derived"},
      {"olmoe", "never"}, {"deepseek_v3", "never"}};
  for (const Family* f : all_families()) {
    SCOPED_TRACE(f->name());
    ModelConfig c = f->synth_config({});
    c.head_dim = c.hidden_size / c.num_heads;
    c.raw = json{{"head_dim", 999}};  // a stale key from the source must not survive
    const std::string& r = rule.at(f->name());
    if (r == "never") {
      EXPECT_FALSE(f->to_config_json(c).contains("head_dim"));
      continue;
    }
    EXPECT_EQ(f->to_config_json(c).contains("head_dim"), r == "always");
    c.head_dim *= 2;
    EXPECT_EQ(f->to_config_json(c).at("head_dim"), c.head_dim);
  }
}

// to_config_json refuses a config its keys cannot express instead of writing one that reads back differently.
TEST(Families, ConfigJsonRefusesWhatTheKeysCannotSay) {
  auto refusal = [](const char* family, const std::function<void(ModelConfig&)>& edit) {
    const Family& f = family_by_name(family);
    SynthSizes s;
    s.layers = 3;
    ModelConfig c = f.synth_config(s);
    edit(c);
    return error_of([&] { f.to_config_json(c); });
  };
  EXPECT_EQ(refusal("llama", [](ModelConfig& c) { c.o_bias = true; }),
            "llama: q/k/v and o_proj biases come together (attention_bias)");
  EXPECT_EQ(refusal("qwen2", [](ModelConfig& c) { c.o_bias = true; }),
            "qwen2: attention has q/k/v biases and no o_proj bias");
  EXPECT_EQ(refusal("qwen2_moe", [](ModelConfig& c) { c.o_bias = true; }), "qwen2_moe: o_proj has no bias");
  EXPECT_EQ(refusal("qwen3", [](ModelConfig& c) { c.qk_norm = QkNorm::Full; }),
            "qwen3: attention always has per-head q/k norms");
  EXPECT_EQ(refusal("olmoe", [](ModelConfig& c) { c.qk_norm = QkNorm::PerHead; }),
            "olmoe: attention always has full-width q/k norms");
  EXPECT_EQ(refusal("olmoe", [](ModelConfig& c) { c.head_dim *= 2; }),
            "olmoe: head_dim is always hidden_size / num_attention_heads");
  EXPECT_EQ(refusal("mixtral", [](ModelConfig& c) { c.layer_kinds.back() = LayerKind::Dense; }),
            "mixtral: every layer is a MoE layer");
  EXPECT_EQ(refusal("mixtral", [](ModelConfig& c) { c.moe->norm_topk_prob = false; }),
            "mixtral: softmax top-k routing, always renormalised, without shared experts");
  EXPECT_EQ(refusal("qwen3_moe", [](ModelConfig& c) { c.moe->shared_intermediate = 8; }),
            "qwen3_moe: softmax top-k routing without shared experts");
  EXPECT_EQ(refusal("qwen2_moe", [](ModelConfig& c) { c.moe->shared_gated = false; }),
            "qwen2_moe: softmax top-k routing with a gated shared expert");
  EXPECT_EQ(refusal("deepseek_v3", [](ModelConfig& c) { c.layer_kinds.back() = LayerKind::Dense; }),
            "deepseek_v3: dense layers must all come before the MoE layers (first_k_dense_replace)");
  EXPECT_EQ(refusal("deepseek_v3", [](ModelConfig& c) { c.moe->shared_gated = true; }),
            "deepseek_v3: sigmoid group-limited routing with bias and n_shared_experts ungated shared experts");
  EXPECT_EQ(refusal("mistral", [](ModelConfig& c) { c.sliding_layers.front() = false; }),
            "mistral: a sliding window on only some layers cannot be written as a mistral config");
}

TEST(Families, TensorTablesAreConsistent) {
  for (const Family* f : all_families()) {
    SCOPED_TRACE(f->name());
    SynthSizes s;
    s.layers = 3;
    const ModelConfig c = f->synth_config(s);
    const auto slots = f->tensors(c);
    std::set<std::string> names;
    for (const auto& t : slots) {
      EXPECT_TRUE(names.insert(t.name).second) << "duplicate " << t.name;
      EXPECT_FALSE(t.shape.empty()) << t.name;
      for (int64_t d : t.shape) EXPECT_GT(d, 0) << t.name;
      EXPECT_EQ(t.name, f->tensor_name(t.role, t.layer, t.expert));
      const bool expert_role = t.role == Role::ExpertGate || t.role == Role::ExpertUp || t.role == Role::ExpertDown;
      EXPECT_EQ(expert_role, t.expert >= 0) << t.name;
      if (t.layer < 0) {
        EXPECT_EQ(t.name.rfind("model.layers.", 0), std::string::npos);
      } else {
        EXPECT_EQ(t.name.rfind(str("model.layers.", t.layer, "."), 0), 0u) << t.name;
      }
    }
    // Canonical order: model-level first (embed, final norm, then lm_head if untied), then layers ascending.
    ASSERT_GE(slots.size(), 3u);
    EXPECT_EQ(slots[0].role, Role::Embed);
    EXPECT_EQ(slots[1].role, Role::FinalNorm);
    EXPECT_EQ(count_role(slots, Role::LmHead), c.tie_word_embeddings ? 0u : 1u);
    int64_t last = -1;
    for (const auto& t : slots) {
      EXPECT_GE(t.layer, last);
      last = t.layer;
    }
    EXPECT_EQ(count_role(slots, Role::AttnNorm), static_cast<size_t>(c.num_layers));
    EXPECT_EQ(count_role(slots, Role::FfnNorm), static_cast<size_t>(c.num_layers));
    // Dense layers have exactly one dense FFN, MoE layers one router and E experts.
    size_t moe_layers = 0;
    for (int64_t l = 0; l < c.num_layers; ++l) moe_layers += c.is_moe_layer(l);
    EXPECT_EQ(count_role(slots, Role::Gate), c.num_layers - moe_layers);
    EXPECT_EQ(count_role(slots, Role::Router), moe_layers);
    const size_t E = c.moe ? static_cast<size_t>(c.moe->num_experts) : 0;
    EXPECT_EQ(count_role(slots, Role::ExpertGate), moe_layers * E);
    EXPECT_EQ(count_role(slots, Role::ExpertDown), moe_layers * E);
    // Fused names exist exactly for MoE families.
    const FusedExpertNames fn = f->fused_expert_names(1);
    EXPECT_EQ(fn.gate_up.empty(), !f->is_moe());
    if (f->is_moe()) {
      EXPECT_EQ(fn.gate_up, "model.layers.1.mlp.experts.gate_up_proj");
      EXPECT_EQ(fn.down, "model.layers.1.mlp.experts.down_proj");
      EXPECT_EQ(fn.router, "model.layers.1.mlp.gate.weight");
    }
  }
}

TEST(Families, TensorCountsPerFamily) {
  SynthSizes s;  // 2 layers, 4 experts
  const int64_t L = s.layers, E = s.experts;
  auto n = [&](const char* fam) {
    const Family& f = family_by_name(fam);
    return static_cast<int64_t>(f.tensors(f.synth_config(s)).size());
  };
  // llama (tied): embed + norm; per layer 2 norms + q,k,v,o + gate,up,down.
  EXPECT_EQ(n("llama"), 2 + L * 9);
  EXPECT_EQ(n("mistral"), 3 + L * 9);
  EXPECT_EQ(n("qwen2"), 2 + L * 12);  // tied, + q/k/v biases
  EXPECT_EQ(n("qwen3"), 2 + L * 11);  // tied, + q_norm, k_norm
  // mixtral: L*(3E+1) expert/router tensors.
  const Family& mx = family_by_name("mixtral");
  const auto mslots = mx.tensors(mx.synth_config(s));
  EXPECT_EQ(count_role(mslots, Role::Router) + count_role(mslots, Role::ExpertGate) +
                count_role(mslots, Role::ExpertUp) + count_role(mslots, Role::ExpertDown),
            static_cast<size_t>(L * (3 * E + 1)));
  EXPECT_EQ(n("mixtral"), 3 + L * (6 + 1 + 3 * E));
  EXPECT_EQ(n("qwen2_moe"), 3 + L * (6 + 3 + 1 + 3 * E + 3 + 1));
  EXPECT_EQ(n("qwen3_moe"), 3 + L * (8 + 1 + 3 * E));  // 2 layers: no mlp_only layer
  EXPECT_EQ(n("olmoe"), 3 + L * (8 + 1 + 3 * E));
  // deepseek_v3: layer 0 dense (2 norms + 7 MLA + 3 FFN), layer 1 MoE (+ router, bias, experts, 3 shared).
  EXPECT_EQ(n("deepseek_v3"), 3 + (2 + 7 + 3) + (2 + 7 + 2 + 3 * E + 3));
}

TEST(Families, ExactNamesLlamaLike) {
  // llama with every bias.
  const ModelConfig c = parse_as("llama", R"({"model_type":"llama","vocab_size":100,"hidden_size":64,
      "intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
      "attention_bias":true,"mlp_bias":true})");
  const auto m = by_name(family_by_name("llama").tensors(c));
  ASSERT_TRUE(m.count("lm_head.weight"));
  EXPECT_EQ(m.at("model.embed_tokens.weight").shape, (Shape{100, 64}));
  EXPECT_EQ(m.at("model.norm.weight").shape, (Shape{64}));
  EXPECT_EQ(m.at("model.layers.1.input_layernorm.weight").role, Role::AttnNorm);
  EXPECT_EQ(m.at("model.layers.1.post_attention_layernorm.weight").role, Role::FfnNorm);
  EXPECT_EQ(m.at("model.layers.1.self_attn.q_proj.weight").shape, (Shape{64, 64}));
  EXPECT_EQ(m.at("model.layers.1.self_attn.k_proj.weight").shape, (Shape{32, 64}));
  EXPECT_EQ(m.at("model.layers.1.self_attn.v_proj.bias").shape, (Shape{32}));
  EXPECT_EQ(m.at("model.layers.1.self_attn.o_proj.bias").shape, (Shape{64}));
  EXPECT_EQ(m.at("model.layers.0.mlp.gate_proj.weight").shape, (Shape{96, 64}));
  EXPECT_EQ(m.at("model.layers.0.mlp.down_proj.weight").shape, (Shape{64, 96}));
  EXPECT_EQ(m.at("model.layers.0.mlp.up_proj.bias").role, Role::UpBias);
  EXPECT_EQ(m.at("model.layers.0.mlp.down_proj.bias").shape, (Shape{64}));

  // qwen2: q/k/v biases, never o_proj's.
  const Family& q2 = family_by_name("qwen2");
  const auto q2m = by_name(q2.tensors(q2.synth_config({})));
  EXPECT_TRUE(q2m.count("model.layers.0.self_attn.k_proj.bias"));
  EXPECT_FALSE(q2m.count("model.layers.0.self_attn.o_proj.bias"));

  // qwen3: per-head norms [head_dim], q_proj [heads*head_dim, H].
  const Family& q3 = family_by_name("qwen3");
  const ModelConfig q3c = q3.synth_config({});
  const auto q3m = by_name(q3.tensors(q3c));
  EXPECT_EQ(q3m.at("model.layers.1.self_attn.q_norm.weight").shape, (Shape{q3c.head_dim}));
  EXPECT_EQ(q3m.at("model.layers.1.self_attn.k_norm.weight").shape, (Shape{q3c.head_dim}));
  EXPECT_EQ(q3m.at("model.layers.1.self_attn.q_proj.weight").shape, (Shape{4 * q3c.head_dim, 64}));
  EXPECT_EQ(q3m.at("model.layers.1.self_attn.o_proj.weight").shape, (Shape{64, 4 * q3c.head_dim}));

  // Roles a family does not have are refused.
  EXPECT_NE(error_of([] { family_by_name("llama").tensor_name(Role::Router, 0); }).find("router"),
            std::string::npos);
  EXPECT_THROW(family_by_name("mixtral").tensor_name(Role::Gate, 0), Error);
  EXPECT_THROW(family_by_name("deepseek_v3").tensor_name(Role::K, 0), Error);
  EXPECT_THROW(family_by_name("llama").tensor_name(Role::Q), Error);                 // no layer
  EXPECT_THROW(family_by_name("mixtral").tensor_name(Role::ExpertUp, 0), Error);      // no expert
  EXPECT_EQ(family_by_name("mistral").fused_expert_names(0).gate_up, "");
}

TEST(Families, ExactNamesMixtral) {
  const Family& f = family_by_name("mixtral");
  EXPECT_EQ(f.tensor_name(Role::Router, 3), "model.layers.3.block_sparse_moe.gate.weight");
  EXPECT_EQ(f.tensor_name(Role::ExpertGate, 3, 7), "model.layers.3.block_sparse_moe.experts.7.w1.weight");
  EXPECT_EQ(f.tensor_name(Role::ExpertDown, 3, 7), "model.layers.3.block_sparse_moe.experts.7.w2.weight");
  EXPECT_EQ(f.tensor_name(Role::ExpertUp, 3, 7), "model.layers.3.block_sparse_moe.experts.7.w3.weight");
  EXPECT_EQ(f.tensor_name(Role::K, 3), "model.layers.3.self_attn.k_proj.weight");
  // Fused (transformers v5): the block is renamed mlp.
  const FusedExpertNames fn = f.fused_expert_names(3);
  EXPECT_EQ(fn.gate_up, "model.layers.3.mlp.experts.gate_up_proj");
  EXPECT_EQ(fn.down, "model.layers.3.mlp.experts.down_proj");
  EXPECT_EQ(fn.router, "model.layers.3.mlp.gate.weight");
  SynthSizes s;
  const auto m = by_name(f.tensors(f.synth_config(s)));
  EXPECT_EQ(m.at("model.layers.1.block_sparse_moe.gate.weight").shape, (Shape{s.experts, s.hidden}));
  EXPECT_EQ(m.at("model.layers.1.block_sparse_moe.experts.3.w1.weight").shape,
            (Shape{s.expert_intermediate, s.hidden}));
  EXPECT_EQ(m.at("model.layers.1.block_sparse_moe.experts.3.w2.weight").shape,
            (Shape{s.hidden, s.expert_intermediate}));
  EXPECT_EQ(m.at("model.layers.1.block_sparse_moe.experts.3.w3.weight").role, Role::ExpertUp);
}

TEST(Families, ExactNamesQwen2MoeAndQwen3Moe) {
  const Family& f = family_by_name("qwen2_moe");
  EXPECT_EQ(f.tensor_name(Role::Router, 0), "model.layers.0.mlp.gate.weight");
  EXPECT_EQ(f.tensor_name(Role::ExpertUp, 0, 59), "model.layers.0.mlp.experts.59.up_proj.weight");
  EXPECT_EQ(f.tensor_name(Role::SharedGate, 0), "model.layers.0.mlp.shared_expert.gate_proj.weight");
  EXPECT_EQ(f.tensor_name(Role::SharedDown, 0), "model.layers.0.mlp.shared_expert.down_proj.weight");
  EXPECT_EQ(f.tensor_name(Role::SharedExpertGate, 0), "model.layers.0.mlp.shared_expert_gate.weight");
  SynthSizes s;
  const ModelConfig c = f.synth_config(s);
  const auto m = by_name(f.tensors(c));
  EXPECT_EQ(m.at("model.layers.0.mlp.shared_expert_gate.weight").shape, (Shape{1, s.hidden}));
  EXPECT_EQ(m.at("model.layers.0.mlp.shared_expert.up_proj.weight").shape,
            (Shape{c.moe->shared_intermediate, s.hidden}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_proj.bias").shape, (Shape{s.hidden}));

  const Family& g = family_by_name("qwen3_moe");
  SynthSizes s3;
  s3.layers = 3;
  const ModelConfig c3 = g.synth_config(s3);
  const auto m3 = by_name(g.tensors(c3));
  EXPECT_EQ(m3.at("model.layers.0.mlp.experts.1.down_proj.weight").shape, (Shape{s3.hidden, s3.expert_intermediate}));
  EXPECT_EQ(m3.at("model.layers.0.self_attn.q_norm.weight").shape, (Shape{c3.head_dim}));
  // The mlp_only layer is a dense FFN of intermediate_size.
  EXPECT_EQ(m3.at("model.layers.2.mlp.gate_proj.weight").shape, (Shape{s3.intermediate, s3.hidden}));
  EXPECT_FALSE(m3.count("model.layers.2.mlp.gate.weight"));
  EXPECT_THROW(g.tensor_name(Role::SharedGate, 0), Error);
}

TEST(Families, ExactNamesOlmoe) {
  const Family& f = family_by_name("olmoe");
  SynthSizes s;
  const ModelConfig c = f.synth_config(s);
  const auto m = by_name(f.tensors(c));
  const int64_t hd = s.hidden / s.heads;
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_norm.weight").shape, (Shape{s.heads * hd}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_norm.weight").shape, (Shape{s.kv_heads * hd}));
  EXPECT_EQ(m.at("model.layers.1.mlp.gate.weight").role, Role::Router);
  EXPECT_EQ(m.at("model.layers.1.mlp.experts.0.gate_proj.weight").shape, (Shape{s.expert_intermediate, s.hidden}));
}

TEST(Families, ExactNamesDeepseekV3) {
  const Family& f = family_by_name("deepseek_v3");
  EXPECT_EQ(f.tensor_name(Role::RouterBias, 5), "model.layers.5.mlp.gate.e_score_correction_bias");
  EXPECT_EQ(f.tensor_name(Role::SharedUp, 5), "model.layers.5.mlp.shared_experts.up_proj.weight");
  EXPECT_EQ(f.tensor_name(Role::KVA, 5), "model.layers.5.self_attn.kv_a_proj_with_mqa.weight");
  EXPECT_EQ(f.tensor_name(Role::QANorm, 5), "model.layers.5.self_attn.q_a_layernorm.weight");
  EXPECT_THROW(f.tensor_name(Role::SharedExpertGate, 5), Error);
  SynthSizes s;
  const ModelConfig c = f.synth_config(s);
  const MlaConfig& a = *c.mla;
  const int64_t H = s.hidden, nh = s.heads;
  const auto m = by_name(f.tensors(c));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_a_proj.weight").shape, (Shape{a.q_lora_rank, H}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_a_layernorm.weight").shape, (Shape{a.q_lora_rank}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_b_proj.weight").shape,
            (Shape{nh * (a.qk_nope_head_dim + a.qk_rope_head_dim), a.q_lora_rank}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.kv_a_proj_with_mqa.weight").shape,
            (Shape{a.kv_lora_rank + a.qk_rope_head_dim, H}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.kv_a_layernorm.weight").shape, (Shape{a.kv_lora_rank}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.kv_b_proj.weight").shape,
            (Shape{nh * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.o_proj.weight").shape, (Shape{H, nh * a.v_head_dim}));
  // Layer 0 dense (first_k_dense_replace = 1), layer 1 MoE.
  EXPECT_EQ(m.at("model.layers.0.mlp.down_proj.weight").shape, (Shape{H, s.intermediate}));
  EXPECT_EQ(m.at("model.layers.1.mlp.gate.e_score_correction_bias").shape, (Shape{s.experts}));
  EXPECT_EQ(m.at("model.layers.1.mlp.shared_experts.gate_proj.weight").shape, (Shape{s.expert_intermediate, H}));
  EXPECT_EQ(m.at("model.layers.1.mlp.experts.2.up_proj.weight").shape, (Shape{s.expert_intermediate, H}));
  EXPECT_FALSE(m.count("model.layers.0.mlp.gate.weight"));

  // q_lora_rank null: a plain q_proj.
  ModelConfig plain = c;
  plain.mla->q_lora_rank = 0;
  const json j = f.to_config_json(plain);
  EXPECT_TRUE(j.at("q_lora_rank").is_null());
  const ModelConfig back = f.parse_config(j, "ds.json");
  expect_same(plain, back);
  const auto pm = by_name(f.tensors(back));
  EXPECT_EQ(pm.at("model.layers.0.self_attn.q_proj.weight").shape,
            (Shape{nh * (a.qk_nope_head_dim + a.qk_rope_head_dim), H}));
  EXPECT_FALSE(pm.count("model.layers.0.self_attn.q_a_proj.weight"));
}

TEST(Families, ParsesTinyStoriesAsLlama) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const std::string path = testing::shared_path("models/tinystories-656k/config.json");
  std::ifstream in(path);
  ASSERT_TRUE(in) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  const ModelConfig c = parse_model_config(json::parse(ss.str()), path);
  EXPECT_EQ(c.family, "llama");
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab_size, 2048);
  EXPECT_EQ(c.intermediate_size, 384);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.rope.type, RopeScaling::Type::Default);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  EXPECT_FALSE(c.attention_bias);
  const auto slots = family_by_name("llama").tensors(c);
  EXPECT_EQ(slots.size(), 2u + 2u * 9u);
  // Writing it back keeps keys moetool does not model.
  const json j = family_by_name("llama").to_config_json(c);
  EXPECT_EQ(j.at("torch_dtype"), "float32");
  EXPECT_EQ(j.at("pretraining_tp"), 1);
  expect_same(family_by_name("llama").parse_config(j, path), c);
}

TEST(Families, ParsesLlama31WithLlama3RopeAndEosList) {
  const ModelConfig c = parse_as("llama", R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "hidden_size": 4096,
    "intermediate_size": 14336, "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "vocab_size": 128256})");
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope.type, RopeScaling::Type::Llama3);
  EXPECT_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.eos_token_id, 128001);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  const json j = family_by_name("llama").to_config_json(c);
  EXPECT_EQ(j.at("eos_token_id"), json::parse("[128001, 128008, 128009]"));  // list kept
  expect_same(family_by_name("llama").parse_config(j, "x"), c);
}

TEST(Families, ParsesMixtral8x7B) {
  const ModelConfig c = parse_as("mixtral", R"({
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32,
    "num_experts_per_tok": 2, "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "output_router_logits": false, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.02, "sliding_window": null, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": true, "vocab_size": 32000})");
  ASSERT_TRUE(c.moe);
  EXPECT_EQ(c.moe->num_experts, 8);
  EXPECT_EQ(c.moe->top_k, 2);
  EXPECT_EQ(c.moe->expert_intermediate, 14336);
  EXPECT_TRUE(c.moe->norm_topk_prob);
  EXPECT_EQ(c.moe->routing, RoutingKind::SoftmaxTopK);
  EXPECT_EQ(c.moe->shared_intermediate, 0);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_FALSE(c.sliding_window);
  EXPECT_EQ(c.window_for_layer(0), std::nullopt);
  for (int64_t l = 0; l < 32; ++l) EXPECT_TRUE(c.is_moe_layer(l));
  const auto slots = family_by_name("mixtral").tensors(c);
  EXPECT_EQ(slots.size(), 3u + 32u * (6u + 1u + 24u));
}

TEST(Families, ParsesMistralSlidingWindowDefaults) {
  const std::string base = R"("model_type":"mistral","vocab_size":32000,"hidden_size":4096,
      "intermediate_size":14336,"num_hidden_layers":2,"num_attention_heads":32)";
  const ModelConfig absent = parse_as("mistral", "{" + base + "}");
  EXPECT_EQ(absent.sliding_window, 4096);        // MistralConfig default
  EXPECT_EQ(absent.num_kv_heads, 8);             // MistralConfig default
  EXPECT_EQ(absent.window_for_layer(1), 4096);
  const ModelConfig null_sw = parse_as("mistral", "{" + base + R"(,"sliding_window":null,"num_key_value_heads":null})");
  EXPECT_FALSE(null_sw.sliding_window);
  EXPECT_EQ(null_sw.num_kv_heads, 32);           // null: = num_attention_heads
  EXPECT_EQ(family_by_name("mistral").to_config_json(null_sw).at("sliding_window"), nullptr);
}

TEST(Families, ParsesQwen15MoeA27B) {
  const ModelConfig c = parse_as("qwen2_moe", R"({
    "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 5632, "max_position_embeddings": 8192, "max_window_layers": 21,
    "model_type": "qwen2_moe", "num_attention_heads": 16, "num_hidden_layers": 24, "num_key_value_heads": 16,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false,
    "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": true,
    "use_sliding_window": false, "vocab_size": 151936, "decoder_sparse_step": 1, "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4, "num_experts": 60,
    "norm_topk_prob": false, "output_router_logits": false, "router_aux_loss_coef": 0.001})");
  ASSERT_TRUE(c.moe);
  EXPECT_EQ(c.moe->num_experts, 60);
  EXPECT_EQ(c.moe->top_k, 4);
  EXPECT_EQ(c.moe->expert_intermediate, 1408);
  EXPECT_EQ(c.moe->shared_intermediate, 5632);
  EXPECT_TRUE(c.moe->shared_gated);
  EXPECT_FALSE(c.moe->norm_topk_prob);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.sliding_window);  // use_sliding_window false
  EXPECT_EQ(c.head_dim, 128);
  for (int64_t l = 0; l < 24; ++l) EXPECT_TRUE(c.is_moe_layer(l));
  EXPECT_EQ(family_by_name("qwen2_moe").tensors(c).size(), 3u + 24u * (6u + 3u + 1u + 180u + 3u + 1u));
}

TEST(Families, Qwen2MoeLayerPlacement) {
  // decoder_sparse_step 2 and mlp_only_layers: layer l is MoE iff l not in mlp_only and (l+1) % 2 == 0.
  const ModelConfig c = parse_as("qwen2_moe", R"({"model_type":"qwen2_moe","vocab_size":64,"hidden_size":32,
      "intermediate_size":48,"num_hidden_layers":6,"num_attention_heads":4,"num_key_value_heads":2,
      "num_experts":4,"num_experts_per_tok":2,"moe_intermediate_size":16,"shared_expert_intermediate_size":32,
      "decoder_sparse_step":2,"mlp_only_layers":[3]})");
  EXPECT_EQ(c.layer_kinds, (std::vector<LayerKind>{LayerKind::Dense, LayerKind::Moe, LayerKind::Dense,
                                                   LayerKind::Dense, LayerKind::Dense, LayerKind::Moe}));
  const json j = family_by_name("qwen2_moe").to_config_json(c);
  EXPECT_EQ(j.at("mlp_only_layers"), json::parse("[0, 2, 3, 4]"));
  EXPECT_EQ(j.at("decoder_sparse_step"), 1);
  expect_same(family_by_name("qwen2_moe").parse_config(j, "x"), c);
  const auto m = by_name(family_by_name("qwen2_moe").tensors(c));
  EXPECT_EQ(m.at("model.layers.3.mlp.up_proj.weight").shape, (Shape{48, 32}));
  EXPECT_TRUE(m.count("model.layers.5.mlp.shared_expert_gate.weight"));
}

TEST(Families, ParsesQwen3_30B_A3B) {
  const ModelConfig c = parse_as("qwen3_moe", R"({
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": true, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": false,
    "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": null, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0", "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
  EXPECT_EQ(c.head_dim, 128);  // explicit, != 2048 / 32
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.qk_norm, QkNorm::PerHead);
  ASSERT_TRUE(c.moe);
  EXPECT_EQ(c.moe->num_experts, 128);
  EXPECT_EQ(c.moe->top_k, 8);
  EXPECT_EQ(c.moe->expert_intermediate, 768);
  EXPECT_TRUE(c.moe->norm_topk_prob);
  EXPECT_EQ(c.moe->shared_intermediate, 0);
  EXPECT_EQ(c.eos_token_id, 151645);
  for (int64_t l = 0; l < 48; ++l) EXPECT_TRUE(c.is_moe_layer(l));
  const auto m = by_name(family_by_name("qwen3_moe").tensors(c));
  EXPECT_EQ(m.at("model.layers.47.self_attn.q_proj.weight").shape, (Shape{4096, 2048}));
  EXPECT_EQ(m.at("model.layers.47.self_attn.k_proj.weight").shape, (Shape{512, 2048}));
  EXPECT_EQ(m.at("model.layers.47.self_attn.k_norm.weight").shape, (Shape{128}));
  EXPECT_EQ(m.at("model.layers.47.mlp.experts.127.down_proj.weight").shape, (Shape{2048, 768}));
}

TEST(Families, ParsesOlmoe1B7B) {
  const ModelConfig c = parse_as("olmoe", R"({
    "architectures": ["OlmoeForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "clip_qkv": null,
    "eos_token_id": 50279, "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
    "intermediate_size": 1024, "max_position_embeddings": 4096, "model_type": "olmoe", "norm_topk_prob": false,
    "num_attention_heads": 16, "num_experts": 64, "num_experts_per_tok": 8, "num_hidden_layers": 16,
    "num_key_value_heads": 16, "output_router_logits": false, "pad_token_id": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": null, "rope_theta": 10000.0, "router_aux_loss_coef": 0.01, "tie_word_embeddings": false,
    "torch_dtype": "float32", "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 50304})");
  ASSERT_TRUE(c.moe);
  EXPECT_EQ(c.moe->num_experts, 64);
  EXPECT_EQ(c.moe->top_k, 8);
  EXPECT_EQ(c.moe->expert_intermediate, 1024);
  EXPECT_FALSE(c.moe->norm_topk_prob);
  EXPECT_EQ(c.qk_norm, QkNorm::Full);
  EXPECT_FALSE(c.clip_qkv);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.bos_token_id, std::nullopt);
  EXPECT_EQ(c.eos_token_id, 50279);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  const auto m = by_name(family_by_name("olmoe").tensors(c));
  EXPECT_EQ(m.at("model.layers.0.self_attn.q_norm.weight").shape, (Shape{2048}));
  EXPECT_EQ(m.at("model.layers.0.self_attn.k_norm.weight").shape, (Shape{2048}));
  EXPECT_EQ(m.at("model.layers.15.mlp.experts.63.up_proj.weight").shape, (Shape{1024, 2048}));
  EXPECT_EQ(family_by_name("olmoe").tensors(c).size(), 3u + 16u * (8u + 1u + 192u));
}

const char* kDeepseekV3 = R"({
  "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config",
               "AutoModel": "modeling_deepseek.DeepseekV3Model",
               "AutoModelForCausalLM": "modeling_deepseek.DeepseekV3ForCausalLM"},
  "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
  "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432,
  "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
  "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128, "num_experts_per_tok": 8,
  "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "q_lora_rank": 1536,
  "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                          "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                   "original_max_position_embeddings": 4096, "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": true,
  "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
  "transformers_version": "4.33.1", "use_cache": true, "v_head_dim": 128, "vocab_size": 129280})";

TEST(Families, ParsesDeepseekV3) {
  const ModelConfig c = parse_as("deepseek_v3", kDeepseekV3);
  ASSERT_TRUE(c.moe);
  ASSERT_TRUE(c.mla);
  const MoeConfig& m = *c.moe;
  EXPECT_EQ(m.num_experts, 256);
  EXPECT_EQ(m.top_k, 8);
  EXPECT_EQ(m.expert_intermediate, 2048);
  EXPECT_EQ(m.routing, RoutingKind::SigmoidGroupLimited);
  EXPECT_EQ(m.n_group, 8);
  EXPECT_EQ(m.topk_group, 4);
  EXPECT_EQ(m.routed_scaling_factor, 2.5);
  EXPECT_TRUE(m.norm_topk_prob);
  EXPECT_TRUE(m.router_bias);
  EXPECT_EQ(m.n_shared_experts, 1);
  EXPECT_EQ(m.shared_intermediate, 2048);
  EXPECT_FALSE(m.shared_gated);
  const MlaConfig& a = *c.mla;
  EXPECT_EQ(a.q_lora_rank, 1536);
  EXPECT_EQ(a.kv_lora_rank, 512);
  EXPECT_EQ(a.qk_nope_head_dim, 128);
  EXPECT_EQ(a.qk_rope_head_dim, 64);
  EXPECT_EQ(a.v_head_dim, 128);
  EXPECT_TRUE(a.rope_interleave);
  EXPECT_EQ(c.head_dim, 64);  // as transformers: qk_rope_head_dim
  EXPECT_EQ(c.intermediate_size, 18432);
  EXPECT_EQ(c.rope.type, RopeScaling::Type::Yarn);
  EXPECT_EQ(c.rope.factor, 40.0);
  EXPECT_EQ(c.rope.mscale_all_dim, 1.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 4096);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.bos_token_id, 0);
  for (int64_t l = 0; l < 61; ++l) EXPECT_EQ(c.is_moe_layer(l), l >= 3) << l;
  const auto m2 = by_name(family_by_name("deepseek_v3").tensors(c));
  EXPECT_EQ(m2.at("model.layers.10.self_attn.q_b_proj.weight").shape, (Shape{128 * 192, 1536}));
  EXPECT_EQ(m2.at("model.layers.10.self_attn.kv_a_proj_with_mqa.weight").shape, (Shape{576, 7168}));
  EXPECT_EQ(m2.at("model.layers.10.self_attn.kv_b_proj.weight").shape, (Shape{128 * 256, 512}));
  EXPECT_EQ(m2.at("model.layers.10.self_attn.o_proj.weight").shape, (Shape{7168, 128 * 128}));
  EXPECT_EQ(m2.at("model.layers.2.mlp.gate_proj.weight").shape, (Shape{18432, 7168}));
  EXPECT_EQ(m2.at("model.layers.3.mlp.gate.weight").shape, (Shape{256, 7168}));
  // Written back: the fp8 quantization_config is dropped (moetool writes plain tensors); the rest round-trips.
  const json j = family_by_name("deepseek_v3").to_config_json(c);
  EXPECT_FALSE(j.contains("quantization_config"));
  EXPECT_EQ(j.at("first_k_dense_replace"), 3);
  EXPECT_TRUE(j.contains("auto_map"));
  expect_same(family_by_name("deepseek_v3").parse_config(j, "x"), c);
}

TEST(Families, TransformersV5RopeParameters) {
  const ModelConfig c = parse_as("qwen3", R"({"model_type":"qwen3","vocab_size":64,"hidden_size":32,
      "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
      "rope_parameters":{"rope_type":"yarn","rope_theta":1000000.0,"factor":4.0,
                         "original_max_position_embeddings":32768}})");
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope.type, RopeScaling::Type::Yarn);
  EXPECT_EQ(c.rope.factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 32768);
  EXPECT_EQ(c.head_dim, 16);
  const ModelConfig d = parse_as("llama", R"({"model_type":"llama","vocab_size":64,"hidden_size":32,
      "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,
      "rope_parameters":{"rope_type":"default","rope_theta":500000.0}})");
  EXPECT_EQ(d.rope_theta, 5e5);
  EXPECT_EQ(d.rope.type, RopeScaling::Type::Default);
  EXPECT_EQ(d.num_kv_heads, 4);
  const json j = family_by_name("llama").to_config_json(d);
  EXPECT_FALSE(j.contains("rope_parameters"));
  EXPECT_EQ(j.at("rope_theta"), 500000.0);
  EXPECT_TRUE(j.at("rope_scaling").is_null());
  // Old spelling "type" and the family default theta (mixtral: 1e6).
  const ModelConfig e = parse_as("mixtral", R"({"model_type":"mixtral","vocab_size":64,"hidden_size":32,
      "intermediate_size":48,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,
      "num_local_experts":4,"rope_scaling":{"type":"linear","factor":2.0}})");
  EXPECT_EQ(e.rope.type, RopeScaling::Type::Linear);
  EXPECT_EQ(e.rope_theta, 1e6);
  EXPECT_EQ(e.moe->top_k, 2);
}

TEST(Families, QwenSlidingWindowLayers) {
  const std::string base = R"("model_type":"qwen2","vocab_size":64,"hidden_size":32,"intermediate_size":48,
      "num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"sliding_window":16)";
  const ModelConfig off = parse_as("qwen2", "{" + base + R"(,"use_sliding_window":false,"max_window_layers":2})");
  EXPECT_FALSE(off.sliding_window);
  const ModelConfig on = parse_as("qwen2", "{" + base + R"(,"use_sliding_window":true,"max_window_layers":2})");
  EXPECT_EQ(on.sliding_window, 16);
  EXPECT_EQ(on.sliding_layers, (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(on.window_for_layer(1), std::nullopt);
  EXPECT_EQ(on.window_for_layer(3), 16);
  const json j = family_by_name("qwen2").to_config_json(on);
  EXPECT_EQ(j.at("max_window_layers"), 2);
  EXPECT_EQ(j.at("layer_types"), json::parse(R"(["full_attention","full_attention","sliding_attention",
                                                  "sliding_attention"])"));
  expect_same(family_by_name("qwen2").parse_config(j, "x"), on);
  // max_window_layers == num_layers: nothing slides (as in released Qwen2 configs).
  const ModelConfig none = parse_as("qwen2", "{" + base + R"(,"use_sliding_window":true,"max_window_layers":4})");
  EXPECT_FALSE(none.sliding_window);
  // layer_types wins.
  const ModelConfig lt = parse_as("qwen2", "{" + base + R"(,"use_sliding_window":true,"layer_types":
      ["sliding_attention","full_attention","sliding_attention","full_attention"]})");
  EXPECT_EQ(lt.sliding_layers, (std::vector<bool>{true, false, true, false}));
  expect_same(family_by_name("qwen2").parse_config(family_by_name("qwen2").to_config_json(lt), "x"), lt);
}

TEST(Families, ErrorsNameFileAndKey) {
  const std::string path = "/models/m/config.json";
  const json good = json::parse(R"({"model_type":"mixtral","vocab_size":64,"hidden_size":32,
      "intermediate_size":48,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":4,
      "num_local_experts":4})");
  EXPECT_NO_THROW(family_by_name("mixtral").parse_config(good, path));

  json j = good;
  j.erase("hidden_size");
  EXPECT_EQ(error_of([&] { family_by_name("mixtral").parse_config(j, path); }),
            "/models/m/config.json: missing required key 'hidden_size'");
  j = good;
  j.erase("num_local_experts");
  EXPECT_EQ(error_of([&] { family_by_name("mixtral").parse_config(j, path); }),
            "/models/m/config.json: missing required key 'num_local_experts'");
  j = good;
  j["num_hidden_layers"] = "2";
  EXPECT_EQ(error_of([&] { family_by_name("mixtral").parse_config(j, path); }),
            "/models/m/config.json: key 'num_hidden_layers': expected a positive integer, got string \"2\"");
  j = good;
  j["num_hidden_layers"] = 0;
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find("key 'num_hidden_layers'"),
            std::string::npos);
  j = good;
  j["tie_word_embeddings"] = 1;
  EXPECT_EQ(error_of([&] { family_by_name("mixtral").parse_config(j, path); }),
            "/models/m/config.json: key 'tie_word_embeddings': expected a boolean, got number 1");
  j = good;
  j["rms_norm_eps"] = nlohmann::json::array({1});
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find("key 'rms_norm_eps': expected a"),
            std::string::npos);
  j = good;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", "4"}};
  const std::string e = error_of([&] { family_by_name("mixtral").parse_config(j, path); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("key 'rope_scaling.factor'"), std::string::npos) << e;
  j["rope_scaling"] = {{"rope_type", "longrope"}, {"factor", 4}};
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find("unsupported rope_type 'longrope'"),
            std::string::npos);
  j = good;
  j["num_experts_per_tok"] = 5;  // more than the 4 experts
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find(path), std::string::npos);
  j = good;
  j["num_key_value_heads"] = 3;
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find("num_key_value_heads"),
            std::string::npos);
  j = good;
  j["model_type"] = "llama";
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find("key 'model_type'"),
            std::string::npos);
  j = good;
  j["hidden_act"] = "gelu";
  EXPECT_NE(error_of([&] { family_by_name("mixtral").parse_config(j, path); }).find("key 'hidden_act'"),
            std::string::npos);

  // MoE and MLA keys of other families.
  json ds = json::parse(kDeepseekV3);
  ds.erase("kv_lora_rank");
  EXPECT_EQ(error_of([&] { family_by_name("deepseek_v3").parse_config(ds, path); }),
            "/models/m/config.json: missing required key 'kv_lora_rank'");
  ds = json::parse(kDeepseekV3);
  ds["n_group"] = 3;  // 256 experts do not split into 3 groups
  EXPECT_NE(error_of([&] { family_by_name("deepseek_v3").parse_config(ds, path); }).find("n_group"),
            std::string::npos);
  ds = json::parse(kDeepseekV3);
  ds["scoring_func"] = "softmax";
  EXPECT_NE(error_of([&] { family_by_name("deepseek_v3").parse_config(ds, path); }).find("key 'scoring_func'"),
            std::string::npos);
  json q = json::parse(R"({"model_type":"qwen2_moe","vocab_size":64,"hidden_size":32,"intermediate_size":48,
      "num_hidden_layers":2,"num_attention_heads":4,"num_experts":4,"num_experts_per_tok":2,
      "moe_intermediate_size":16})");
  EXPECT_EQ(error_of([&] { family_by_name("qwen2_moe").parse_config(q, path); }),
            "/models/m/config.json: missing required key 'shared_expert_intermediate_size'");
  q["shared_expert_intermediate_size"] = 32;
  q["mlp_only_layers"] = "0";
  EXPECT_NE(error_of([&] { family_by_name("qwen2_moe").parse_config(q, path); }).find("key 'mlp_only_layers'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { family_by_name("llama").parse_config(json::array({1}), path); }).find(path),
            std::string::npos);
}

}  // namespace
}  // namespace moetool
