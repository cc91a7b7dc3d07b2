// formats/families/config_keys.cc — config.json of a llama-like family as its Spec says: the base keys,
// attention biases and q/k norms, MoE keys, the cross-key checks, and LlamaLikeFamily's parse_config /
// to_config_json that run them in order (see common.h).
#include <algorithm>
#include <set>
#include <utility>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool::fam {

using nlohmann::json;

LlamaLikeFamily::LlamaLikeFamily(Spec spec) : spec_(std::move(spec)) {
  check(is_moe() == spec_.moe.has_value(), spec_.name, ": an MoE family (feature kMoe) needs MoE keys, and only it");
  if (spec_.gguf) {
    GGUFArchDesc d = *spec_.gguf;
    d.hf_model_type = spec_.name;
    d.hf_architecture = spec_.architecture;
    gguf_ = make_gguf_arch(std::move(d));
  }
}

void LlamaLikeFamily::check_family(const ModelConfig& c) const {
  check(c.family == spec_.name, spec_.name, ": given a config of family '", c.family, "'");
}

ModelConfig LlamaLikeFamily::parse_config(const json& j, const std::string& path) const {
  ConfigReader r(j, path);
  ModelConfig c = parse_base(r, spec_);
  parse_attention(r, spec_, c);
  parse_sliding(r, spec_.sliding, c);
  if (spec_.moe) parse_moe(r, *spec_.moe, c);
  if (spec_.parse_own) spec_.parse_own(r, c);
  validate(c, path);
  return c;
}

json LlamaLikeFamily::to_config_json(const ModelConfig& c) const {
  check_family(c);
  check_attention(c, spec_);
  if (spec_.moe) check_moe(c, spec_);
  json j = base_json(c, spec_);
  write_attention(c, spec_, j);
  write_sliding(c, spec_.sliding, j);
  if (spec_.moe) write_moe(c, *spec_.moe, j);
  if (spec_.write_own) spec_.write_own(c, j);
  return j;
}

// ---------------------------------------------------------------------------------------------------
// Base keys

ModelConfig parse_base(const ConfigReader& r, const Spec& f) {
  const BaseDefaults& d = f.defaults;
  ModelConfig c;
  const std::string mt = r.string_or("model_type", f.name);
  if (mt != f.name) r.invalid("model_type", str("expected '", f.name, "', got '", mt, "'"));
  c.family = f.name;
  c.raw = r.object();

  const std::string act = r.string_or("hidden_act", "silu");
  if (act != "silu" && act != "swish")  // transformers' ACT2FN maps both to SiLU
    r.invalid("hidden_act", str("unsupported activation '", act, "' (", f.name, " uses 'silu')"));

  c.vocab_size = r.positive("vocab_size");
  c.hidden_size = r.positive("hidden_size");
  c.intermediate_size = r.positive("intermediate_size");
  c.num_layers = r.positive("num_hidden_layers");
  c.num_heads = r.positive("num_attention_heads");
  if (r.contains("num_key_value_heads"))
    c.num_kv_heads = r.positive_or("num_key_value_heads", c.num_heads);
  else
    c.num_kv_heads = d.kv_heads.value_or(c.num_heads);

  std::optional<int64_t> hd = d.head_dim;
  if (f.head_dim_key != HeadDimKey::Never && r.contains("head_dim")) hd = r.opt_positive("head_dim");
  if (hd) {
    c.head_dim = *hd;
  } else {
    if (c.hidden_size % c.num_heads != 0)
      fail(r.path(), ": hidden_size (", c.hidden_size, ") is not a multiple of num_attention_heads (", c.num_heads,
           ") and no head_dim is given");
    c.head_dim = c.hidden_size / c.num_heads;
  }

  c.max_position_embeddings = r.positive_or("max_position_embeddings", d.max_positions);
  c.rms_norm_eps = r.positive_number_or("rms_norm_eps", d.rms_norm_eps);
  parse_rope(r, d.rope_theta, c);
  c.tie_word_embeddings = r.bool_or("tie_word_embeddings", false);
  c.bos_token_id = r.token_id("bos_token_id", d.bos);
  c.eos_token_id = r.token_id("eos_token_id", d.eos);
  c.layer_kinds.assign(static_cast<size_t>(c.num_layers), LayerKind::Dense);
  return c;
}

void validate(const ModelConfig& c, const std::string& path) {
  if (c.num_kv_heads > c.num_heads || c.num_heads % c.num_kv_heads != 0)
    fail(path, ": num_attention_heads (", c.num_heads, ") is not a multiple of num_key_value_heads (", c.num_kv_heads,
         ")");
  if (c.layer_kinds.size() != static_cast<size_t>(c.num_layers))
    fail(path, ": ", c.layer_kinds.size(), " layer kinds for ", c.num_layers, " layers");
  if (c.sliding_window && c.sliding_layers.size() != static_cast<size_t>(c.num_layers))
    fail(path, ": ", c.sliding_layers.size(), " sliding-window layer flags for ", c.num_layers, " layers");
  const bool any_moe = std::count(c.layer_kinds.begin(), c.layer_kinds.end(), LayerKind::Moe) > 0;
  if (any_moe && !c.moe) fail(path, ": MoE layers without MoE settings");
  if (c.moe) {
    const MoeConfig& m = c.moe.value();
    if (m.top_k < 1 || m.top_k > m.num_experts)
      fail(path, ": num_experts_per_tok (", m.top_k, ") must be between 1 and the number of experts (", m.num_experts,
           ")");
    if (m.expert_intermediate < 1) fail(path, ": the routed experts' intermediate size must be positive");
    if (m.routing == RoutingKind::SigmoidGroupLimited) {
      if (m.n_group < 1 || m.num_experts % m.n_group != 0)
        fail(path, ": n_group (", m.n_group, ") must divide the number of routed experts (", m.num_experts, ")");
      if (m.topk_group < 1 || m.topk_group > m.n_group)
        fail(path, ": topk_group (", m.topk_group, ") must be between 1 and n_group (", m.n_group, ")");
      if (m.num_experts / m.n_group < 2)
        fail(path, ": each expert group needs at least 2 experts (transformers scores a group by its top 2); got ",
             m.num_experts, " experts in ", m.n_group, " groups");
      if (m.top_k > m.topk_group * (m.num_experts / m.n_group))
        fail(path, ": num_experts_per_tok (", m.top_k, ") exceeds the experts in topk_group (", m.topk_group,
             ") groups of ", m.num_experts / m.n_group);
    }
  }
  if (c.mla) {
    const MlaConfig& a = c.mla.value();
    if (a.qk_rope_head_dim % 2 != 0) fail(path, ": qk_rope_head_dim (", a.qk_rope_head_dim, ") must be even");
  } else if (c.head_dim % 2 != 0) {
    fail(path, ": head_dim (", c.head_dim, ") must be even for rotary embeddings");
  }
}

// Writes an optional token id, keeping a list from raw when its first entry is the id.
static void write_token(const json& raw, const char* key, const std::optional<int64_t>& v, json& j) {
  if (raw.is_object() && raw.contains(key)) {
    const json& old = raw.at(key);
    if (old.is_array() && !old.empty() && v && old.front().is_number_integer() && old.front().get<int64_t>() == *v) {
      j[key] = old;
      return;
    }
  }
  j[key] = v ? json(*v) : json(nullptr);
}

json base_json(const ModelConfig& c, const Spec& f) {
  json j = c.raw.is_object() ? c.raw : json::object();
  // Rewritten below in v4 spelling (rope_theta + rope_scaling), which transformers v4 and v5 both read.
  j.erase("rope_parameters");
  // moetool writes plain float tensors; a writer of quantized tensors adds its own quantization_config.
  j.erase("quantization_config");
  // Per-layer attention kinds are rewritten by the families that have them.
  j.erase("layer_types");
  j["model_type"] = f.name;
  j["architectures"] = json::array({f.architecture});
  j["hidden_act"] = "silu";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  const bool derived = c.hidden_size % c.num_heads == 0 && c.head_dim == c.hidden_size / c.num_heads;
  if (f.head_dim_key == HeadDimKey::Always || (f.head_dim_key == HeadDimKey::WhenNotDerived && !derived))
    j["head_dim"] = c.head_dim;
  else
    j.erase("head_dim");
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  write_rope(c, j);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  write_token(c.raw, "bos_token_id", c.bos_token_id, j);
  write_token(c.raw, "eos_token_id", c.eos_token_id, j);
  return j;
}

// ---------------------------------------------------------------------------------------------------
// Attention biases and q/k norms

void parse_attention(const ConfigReader& r, const Spec& f, ModelConfig& c) {
  switch (f.bias) {
    case BiasKey::None: break;
    case BiasKey::QkvAlways: c.attention_bias = true; break;
    case BiasKey::QkvBias: c.attention_bias = r.bool_or("qkv_bias", true); break;
    case BiasKey::AttentionBias: c.attention_bias = c.o_bias = r.bool_or("attention_bias", false); break;
  }
  c.qk_norm = f.qk_norm;
}

void check_attention(const ModelConfig& c, const Spec& f) {
  switch (f.bias) {
    case BiasKey::None: break;
    case BiasKey::QkvAlways:
      check(c.attention_bias && !c.o_bias, f.name, ": attention has q/k/v biases and no o_proj bias");
      break;
    case BiasKey::QkvBias: check(!c.o_bias, f.name, ": o_proj has no bias"); break;
    case BiasKey::AttentionBias:
      check(c.attention_bias == c.o_bias, f.name, ": q/k/v and o_proj biases come together (attention_bias)");
      break;
  }
  if (f.qk_norm != QkNorm::None)
    check(c.qk_norm == f.qk_norm, f.name, ": attention always has ",
          f.qk_norm == QkNorm::PerHead ? "per-head" : "full-width", " q/k norms");
}

void write_attention(const ModelConfig& c, const Spec& f, json& j) {
  if (f.bias == BiasKey::QkvBias) j["qkv_bias"] = c.attention_bias;
  if (f.bias == BiasKey::AttentionBias) j["attention_bias"] = c.attention_bias;
}

// ---------------------------------------------------------------------------------------------------
// MoE keys

void parse_moe(const ConfigReader& r, const MoeKeys& k, ModelConfig& c) {
  MoeConfig m;
  m.num_experts = r.positive(k.reads_alias ? r.pick({k.experts, k.alias}) : k.experts);
  m.top_k = r.positive_or("num_experts_per_tok", k.default_top_k);
  m.expert_intermediate = k.width ? r.positive(k.width) : c.intermediate_size;
  m.norm_topk_prob = k.norm_topk_key ? r.bool_or("norm_topk_prob", k.norm_topk_default) : k.norm_topk_default;
  m.routing = k.routing;
  switch (k.placement) {
    case MoePlacement::EveryLayer: c.layer_kinds.assign(c.layer_kinds.size(), LayerKind::Moe); break;
    case MoePlacement::SparseStep: {
      const int64_t step = r.positive_or("decoder_sparse_step", 1);
      const std::vector<int64_t> mlp_only = r.nonneg_list_or_empty("mlp_only_layers");
      const std::set<int64_t> dense(mlp_only.begin(), mlp_only.end());
      for (int64_t l = 0; l < c.num_layers; ++l)
        c.layer_kinds[static_cast<size_t>(l)] =
            !dense.count(l) && (l + 1) % step == 0 ? LayerKind::Moe : LayerKind::Dense;
      break;
    }
    case MoePlacement::FirstKDense: {
      const int64_t first = r.nonneg_or("first_k_dense_replace", k.first_k_dense_default);
      for (int64_t l = 0; l < c.num_layers; ++l)
        c.layer_kinds[static_cast<size_t>(l)] = l >= first ? LayerKind::Moe : LayerKind::Dense;
      break;
    }
  }
  if (k.shared_width) {
    m.shared_intermediate = r.positive(k.shared_width);
    m.shared_gated = true;
  }
  c.moe = m;
}

void check_moe(const ModelConfig& c, const Spec& f) {
  const MoeKeys& k = *f.moe;
  const auto& kinds = c.layer_kinds;
  if (k.placement == MoePlacement::EveryLayer)
    check(c.moe.has_value() && std::all_of(kinds.begin(), kinds.end(), [](LayerKind l) { return l == LayerKind::Moe; }),
          f.name, ": every layer is a MoE layer");
  if (k.placement == MoePlacement::FirstKDense) {
    const auto first_moe = std::find(kinds.begin(), kinds.end(), LayerKind::Moe);
    check(std::find(first_moe, kinds.end(), LayerKind::Dense) == kinds.end(), f.name,
          ": dense layers must all come before the MoE layers (first_k_dense_replace)");
  }
  if (k.routing != RoutingKind::SoftmaxTopK) {
    check(c.moe.has_value(), f.name, ": config has no MoE settings");
    return;
  }
  const MoeConfig* m = c.moe ? &*c.moe : nullptr;
  const bool shared_ok = k.shared_width ? m && m->shared_intermediate > 0 && m->shared_gated
                                        : m && m->shared_intermediate == 0;
  check(m && m->routing == RoutingKind::SoftmaxTopK && !m->router_bias && shared_ok &&
            (k.norm_topk_key || m->norm_topk_prob == k.norm_topk_default),
        f.name, ": softmax top-k routing", k.norm_topk_key ? "" : ", always renormalised,",
        k.shared_width ? " with a gated shared expert" : " without shared experts");
}

void write_moe(const ModelConfig& c, const MoeKeys& k, json& j) {
  const MoeConfig& m = *c.moe;
  j.erase(k.alias);
  j[k.experts] = m.num_experts;
  j["num_experts_per_tok"] = m.top_k;
  j[k.width ? k.width : "intermediate_size"] = m.expert_intermediate;
  if (k.norm_topk_key) j["norm_topk_prob"] = m.norm_topk_prob;
  if (k.placement == MoePlacement::SparseStep) {
    j["decoder_sparse_step"] = 1;
    json dense = json::array();
    for (int64_t l = 0; l < c.num_layers; ++l)
      if (!c.is_moe_layer(l)) dense.push_back(l);
    j["mlp_only_layers"] = dense;
  }
  if (k.placement == MoePlacement::FirstKDense) {
    const auto first_moe = std::find(c.layer_kinds.begin(), c.layer_kinds.end(), LayerKind::Moe);
    j["first_k_dense_replace"] = static_cast<int64_t>(first_moe - c.layer_kinds.begin());
  }
  if (k.shared_width) j[k.shared_width] = m.shared_intermediate;
}

}  // namespace moetool::fam
