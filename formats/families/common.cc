// formats/families/common.cc — shared config.json readers/writers and the standard llama-like tensor
// table used by every family file (see common.h).
#include "formats/families/common.h"

#include <algorithm>
#include <limits>
#include <set>
#include <utility>

#include "core/error.h"

namespace moetool::fam {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// ConfigReader

std::string describe(const json& v) {
  if (v.is_null()) return "null";
  std::string d = v.dump();
  if (d.size() > 60) d = d.substr(0, 57) + "...";
  return str(v.type_name(), " ", d);
}

ConfigReader::ConfigReader(const json& j, std::string path, std::string prefix)
    : j_(j), path_(std::move(path)), prefix_(std::move(prefix)) {
  if (!j_.is_object()) fail(path_, ": expected a JSON object", prefix_.empty() ? "" : " for '", prefix_,
                            prefix_.empty() ? "" : "'", ", got ", describe(j_));
}

bool ConfigReader::contains(const char* key) const { return j_.contains(key); }
bool ConfigReader::has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }

const char* ConfigReader::pick(std::initializer_list<const char*> keys) const {
  for (const char* k : keys)
    if (has(k)) return k;
  return *keys.begin();
}

const json& ConfigReader::at(const char* key) const {
  if (!has(key)) missing(key);
  return j_.at(key);
}

void ConfigReader::bad(const char* key, const std::string& expected, const json& got) const {
  fail(path_, ": key '", prefix_, key, "': expected ", expected, ", got ", describe(got));
}
void ConfigReader::missing(const char* key) const { fail(path_, ": missing required key '", prefix_, key, "'"); }
void ConfigReader::invalid(const char* key, const std::string& why) const {
  fail(path_, ": key '", prefix_, key, "': ", why);
}

int64_t ConfigReader::integer(const char* key, const json& v, int64_t min, const char* what) const {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) bad(key, what, v);
    if (static_cast<int64_t>(u) < min) bad(key, what, v);
    return static_cast<int64_t>(u);
  }
  if (v.is_number_integer()) {
    const int64_t i = v.get<int64_t>();
    if (i < min) bad(key, what, v);
    return i;
  }
  bad(key, what, v);
}

int64_t ConfigReader::positive(const char* key) const { return integer(key, at(key), 1, "a positive integer"); }
int64_t ConfigReader::positive_or(const char* key, int64_t def) const {
  return has(key) ? integer(key, j_.at(key), 1, "a positive integer") : def;
}
int64_t ConfigReader::nonneg_or(const char* key, int64_t def) const {
  return has(key) ? integer(key, j_.at(key), 0, "a non-negative integer") : def;
}
std::optional<int64_t> ConfigReader::opt_positive(const char* key) const {
  if (!has(key)) return std::nullopt;
  return integer(key, j_.at(key), 1, "a positive integer or null");
}

double ConfigReader::number(const char* key) const {
  const json& v = at(key);
  if (!v.is_number()) bad(key, "a number", v);
  return v.get<double>();
}
double ConfigReader::number_or(const char* key, double def) const { return has(key) ? number(key) : def; }
std::optional<double> ConfigReader::opt_number(const char* key) const {
  if (!has(key)) return std::nullopt;
  return number(key);
}
double ConfigReader::positive_number_or(const char* key, double def) const {
  if (!has(key)) return def;
  const double d = number(key);
  if (!(d > 0)) bad(key, "a positive number", j_.at(key));
  return d;
}

bool ConfigReader::bool_or(const char* key, bool def) const {
  if (!has(key)) return def;
  const json& v = j_.at(key);
  if (!v.is_boolean()) bad(key, "a boolean", v);
  return v.get<bool>();
}

std::string ConfigReader::string_or(const char* key, const std::string& def) const {
  if (!has(key)) return def;
  const json& v = j_.at(key);
  if (!v.is_string()) bad(key, "a string", v);
  return v.get<std::string>();
}

std::vector<int64_t> ConfigReader::nonneg_list_or_empty(const char* key) const {
  std::vector<int64_t> out;
  if (!has(key)) return out;
  const json& v = j_.at(key);
  if (!v.is_array()) bad(key, "a list of non-negative integers", v);
  for (const json& e : v) out.push_back(integer(key, e, 0, "a list of non-negative integers"));
  return out;
}

std::optional<int64_t> ConfigReader::token_id(const char* key, std::optional<int64_t> def) const {
  if (!contains(key)) return def;
  const json& v = j_.at(key);
  if (v.is_null()) return std::nullopt;
  if (v.is_array()) {
    if (v.empty()) return std::nullopt;
    return integer(key, v.front(), 0, "a token id (integer >= 0), a list of them, or null");
  }
  return integer(key, v, 0, "a token id (integer >= 0), a list of them, or null");
}

// ---------------------------------------------------------------------------------------------------
// Shared keys

ModelConfig parse_base(const ConfigReader& r, const Family& f, const BaseDefaults& d) {
  ModelConfig c;
  const std::string mt = r.string_or("model_type", f.name());
  if (mt != f.name()) r.invalid("model_type", str("expected '", f.name(), "', got '", mt, "'"));
  c.family = f.name();
  c.raw = r.object();

  const std::string act = r.string_or("hidden_act", "silu");
  if (act != "silu" && act != "swish")  // transformers' ACT2FN maps both to SiLU
    r.invalid("hidden_act", str("unsupported activation '", act, "' (", f.name(), " uses 'silu')"));

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
  if (d.reads_head_dim && r.contains("head_dim")) hd = r.opt_positive("head_dim");
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

json base_json(const ModelConfig& c, const Family& f, const BaseDefaults& d) {
  json j = c.raw.is_object() ? c.raw : json::object();
  // Rewritten below in v4 spelling (rope_theta + rope_scaling), which transformers v4 and v5 both read.
  j.erase("rope_parameters");
  // moetool writes plain float tensors; a writer of quantized tensors adds its own quantization_config.
  j.erase("quantization_config");
  // Per-layer attention kinds are rewritten by the families that have them.
  j.erase("layer_types");
  j["model_type"] = f.name();
  j["architectures"] = json::array({f.architecture()});
  j["hidden_act"] = "silu";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  if (d.writes_head_dim) j["head_dim"] = c.head_dim;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  write_rope(c, j);
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  write_token(c.raw, "bos_token_id", c.bos_token_id, j);
  write_token(c.raw, "eos_token_id", c.eos_token_id, j);
  return j;
}

// ---------------------------------------------------------------------------------------------------
// RoPE

void parse_rope(const ConfigReader& r, double default_theta, ModelConfig& c) {
  // transformers v5: `rope_scaling or rope_parameters`, and rope_theta inside it wins over the top-level key.
  const char* which = nullptr;
  if (r.has("rope_scaling")) which = "rope_scaling";
  else if (r.has("rope_parameters")) which = "rope_parameters";
  c.rope = RopeScaling{};
  if (!which) {
    c.rope_theta = r.positive_number_or("rope_theta", default_theta);
    return;
  }
  const json& d = r.at(which);
  if (!d.is_object()) r.bad(which, "an object or null", d);
  ConfigReader s(d, r.path(), str(which, "."));
  c.rope_theta = s.has("rope_theta") ? s.positive_number_or("rope_theta", default_theta)
                                     : r.positive_number_or("rope_theta", default_theta);
  const std::string type = s.has("rope_type") ? s.string_or("rope_type", "default") : s.string_or("type", "default");
  RopeScaling& rs = c.rope;
  if (type == "default") return;
  if (type == "linear") rs.type = RopeScaling::Type::Linear;
  else if (type == "dynamic") rs.type = RopeScaling::Type::Dynamic;
  else if (type == "llama3") rs.type = RopeScaling::Type::Llama3;
  else if (type == "yarn") rs.type = RopeScaling::Type::Yarn;
  else
    r.invalid(which, str("unsupported rope_type '", type, "' (supported: default, linear, dynamic, llama3, yarn)"));
  if (!s.has("factor")) s.missing("factor");
  rs.factor = s.positive_number_or("factor", 1.0);
  if (rs.type == RopeScaling::Type::Llama3) {
    rs.low_freq_factor = s.number("low_freq_factor");
    rs.high_freq_factor = s.number("high_freq_factor");
    rs.original_max_position_embeddings = s.positive("original_max_position_embeddings");
  } else {
    rs.original_max_position_embeddings = s.nonneg_or("original_max_position_embeddings", 0);
  }
  if (rs.type == RopeScaling::Type::Yarn) {
    rs.beta_fast = s.number_or("beta_fast", 32.0);
    rs.beta_slow = s.number_or("beta_slow", 1.0);
    rs.mscale = s.opt_number("mscale");
    rs.mscale_all_dim = s.opt_number("mscale_all_dim");
    rs.attention_factor = s.opt_number("attention_factor");
  }
}

void write_rope(const ModelConfig& c, json& j) {
  j["rope_theta"] = c.rope_theta;
  const RopeScaling& rs = c.rope;
  if (rs.type == RopeScaling::Type::Default) {
    j["rope_scaling"] = nullptr;
    return;
  }
  json s = json::object();
  switch (rs.type) {
    case RopeScaling::Type::Linear: s["rope_type"] = "linear"; break;
    case RopeScaling::Type::Dynamic: s["rope_type"] = "dynamic"; break;
    case RopeScaling::Type::Llama3: s["rope_type"] = "llama3"; break;
    case RopeScaling::Type::Yarn: s["rope_type"] = "yarn"; break;
    case RopeScaling::Type::Default: break;
  }
  s["factor"] = rs.factor;
  if (rs.original_max_position_embeddings > 0)
    s["original_max_position_embeddings"] = rs.original_max_position_embeddings;
  if (rs.type == RopeScaling::Type::Llama3) {
    s["low_freq_factor"] = rs.low_freq_factor;
    s["high_freq_factor"] = rs.high_freq_factor;
  }
  if (rs.type == RopeScaling::Type::Yarn) {
    s["beta_fast"] = rs.beta_fast;
    s["beta_slow"] = rs.beta_slow;
    // Written exactly when given: transformers treats an absent mscale differently from 1.0.
    if (rs.mscale) s["mscale"] = *rs.mscale;
    if (rs.mscale_all_dim) s["mscale_all_dim"] = *rs.mscale_all_dim;
    if (rs.attention_factor) s["attention_factor"] = *rs.attention_factor;
  }
  j["rope_scaling"] = s;
}

// ---------------------------------------------------------------------------------------------------
// Sliding windows

void parse_plain_sliding(const ConfigReader& r, std::optional<int64_t> def, ModelConfig& c) {
  c.sliding_window = r.contains("sliding_window") ? r.opt_positive("sliding_window") : def;
  c.sliding_layers.assign(c.sliding_window ? static_cast<size_t>(c.num_layers) : 0, true);
}

void write_plain_sliding(const ModelConfig& c, json& j) {
  for (bool b : c.sliding_layers)
    if (!b) fail(c.family, ": a sliding window on only some layers cannot be written as a ", c.family, " config");
  j["sliding_window"] = c.sliding_window ? json(*c.sliding_window) : json(nullptr);
}

static bool rule_slides(QwenSlidingRule rule, int64_t i, int64_t max_window_layers) {
  switch (rule) {
    case QwenSlidingRule::FromMaxWindowLayers: return i >= max_window_layers;
    case QwenSlidingRule::OddBelowMaxWindow: return (i + 1) % 2 == 1 && i < max_window_layers;
    case QwenSlidingRule::AllLayers: return true;
  }
  return false;
}

void parse_qwen_sliding(const ConfigReader& r, QwenSlidingRule rule, ModelConfig& c) {
  const bool use = r.bool_or("use_sliding_window", false);
  // 0 counts as none: transformers v5 saves qwen2_moe's unused window as 0.
  std::optional<int64_t> window = 4096;
  if (r.contains("sliding_window")) {
    const int64_t w = r.nonneg_or("sliding_window", 0);
    window = w > 0 ? std::optional<int64_t>(w) : std::nullopt;
  }
  const int64_t mwl = r.nonneg_or("max_window_layers", 28);
  std::vector<bool> layers(static_cast<size_t>(c.num_layers), false);
  if (r.has("layer_types")) {
    const json& lt = r.at("layer_types");
    if (!lt.is_array() || lt.size() != static_cast<size_t>(c.num_layers))
      r.bad("layer_types", str("a list of ", c.num_layers, " layer types"), lt);
    for (size_t i = 0; i < lt.size(); ++i) {
      const std::string t = lt[i].is_string() ? lt[i].get<std::string>() : "";
      if (t != "full_attention" && t != "sliding_attention")
        r.bad("layer_types", "entries 'full_attention' or 'sliding_attention'", lt[i]);
      layers[i] = t == "sliding_attention";
    }
  } else {
    for (int64_t i = 0; i < c.num_layers; ++i) layers[static_cast<size_t>(i)] = rule_slides(rule, i, mwl);
  }
  const bool any = std::find(layers.begin(), layers.end(), true) != layers.end();
  if (use && window && any) {
    c.sliding_window = window;
    c.sliding_layers = std::move(layers);
  } else {
    c.sliding_window.reset();
    c.sliding_layers.clear();
  }
}

void write_qwen_sliding(const ModelConfig& c, QwenSlidingRule rule, json& j) {
  j["use_sliding_window"] = c.sliding_window.has_value();
  if (!c.sliding_window) return;  // sliding_window / max_window_layers from raw (if any) are then inert
  j["sliding_window"] = *c.sliding_window;
  // max_window_layers for readers that predate layer_types (qwen2/qwen3: the first sliding layer when the
  // sliding layers are a suffix); layer_types states the exact placement for current transformers.
  if (rule == QwenSlidingRule::FromMaxWindowLayers) {
    const auto first = std::find(c.sliding_layers.begin(), c.sliding_layers.end(), true);
    if (std::find(first, c.sliding_layers.end(), false) == c.sliding_layers.end())
      j["max_window_layers"] = static_cast<int64_t>(first - c.sliding_layers.begin());
  }
  if (rule == QwenSlidingRule::AllLayers) {
    for (bool b : c.sliding_layers)
      if (!b) fail(c.family, ": a sliding window on only some layers cannot be written as a ", c.family, " config");
    return;  // qwen3_moe has no layer_types
  }
  json lt = json::array();
  for (bool b : c.sliding_layers) lt.push_back(b ? "sliding_attention" : "full_attention");
  j["layer_types"] = lt;
}

// ---------------------------------------------------------------------------------------------------
// qwen-style MoE placement

void parse_qwen_moe(const ConfigReader& r, bool alias_ok, int64_t default_top_k, ModelConfig& c) {
  MoeConfig m;
  m.num_experts = r.positive(alias_ok ? r.pick({"num_experts", "num_local_experts"}) : "num_experts");
  m.top_k = r.positive_or("num_experts_per_tok", default_top_k);
  m.expert_intermediate = r.positive("moe_intermediate_size");
  m.norm_topk_prob = r.bool_or("norm_topk_prob", false);
  m.routing = RoutingKind::SoftmaxTopK;
  const int64_t step = r.positive_or("decoder_sparse_step", 1);
  const std::vector<int64_t> mlp_only = r.nonneg_list_or_empty("mlp_only_layers");
  const std::set<int64_t> dense(mlp_only.begin(), mlp_only.end());
  for (int64_t l = 0; l < c.num_layers; ++l)
    c.layer_kinds[static_cast<size_t>(l)] =
        !dense.count(l) && (l + 1) % step == 0 ? LayerKind::Moe : LayerKind::Dense;
  c.moe = m;
}

void write_qwen_moe(const ModelConfig& c, json& j) {
  check(c.moe.has_value(), c.family, ": config has no MoE settings");
  const MoeConfig& m = *c.moe;
  j.erase("num_local_experts");
  j["num_experts"] = m.num_experts;
  j["num_experts_per_tok"] = m.top_k;
  j["moe_intermediate_size"] = m.expert_intermediate;
  j["norm_topk_prob"] = m.norm_topk_prob;
  j["decoder_sparse_step"] = 1;
  json dense = json::array();
  for (int64_t l = 0; l < c.num_layers; ++l)
    if (!c.is_moe_layer(l)) dense.push_back(l);
  j["mlp_only_layers"] = dense;
}

// ---------------------------------------------------------------------------------------------------
// Synthetic configs

ModelConfig synth_base(const Family& f, const SynthSizes& s) {
  check(s.vocab > 0 && s.hidden > 0 && s.layers > 0 && s.heads > 0 && s.kv_heads > 0 && s.intermediate > 0 &&
            s.max_positions > 0,
        f.name(), ": synthetic sizes must be positive");
  check(s.hidden % s.heads == 0, f.name(), ": synthetic hidden size ", s.hidden, " is not a multiple of ", s.heads,
        " heads");
  check(s.heads % s.kv_heads == 0, f.name(), ": synthetic heads ", s.heads, " are not a multiple of ", s.kv_heads,
        " KV heads");
  check((s.hidden / s.heads) % 2 == 0, f.name(), ": synthetic head dim ", s.hidden / s.heads, " must be even");
  ModelConfig c;
  c.family = f.name();
  c.vocab_size = s.vocab;
  c.hidden_size = s.hidden;
  c.num_layers = s.layers;
  c.num_heads = s.heads;
  c.num_kv_heads = s.kv_heads;
  c.head_dim = s.hidden / s.heads;
  c.intermediate_size = s.intermediate;
  c.max_position_embeddings = s.max_positions;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.layer_kinds.assign(static_cast<size_t>(s.layers), LayerKind::Dense);
  c.bos_token_id = std::min<int64_t>(1, s.vocab - 1);
  c.eos_token_id = std::min<int64_t>(2, s.vocab - 1);
  return c;
}

// ---------------------------------------------------------------------------------------------------
// The llama-like tensor table

LlamaLikeFamily::LlamaLikeFamily(std::string name, std::string architecture, bool moe, unsigned features,
                                 TensorNaming naming)
    : name_(std::move(name)), architecture_(std::move(architecture)), moe_(moe), features_(features),
      naming_(std::move(naming)) {}

void LlamaLikeFamily::check_family(const ModelConfig& c) const {
  check(c.family == name_, name_, ": given a config of family '", c.family, "'");
}

static bool is_expert_role(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

std::string LlamaLikeFamily::tensor_name(Role r, int64_t layer, int64_t expert) const {
  auto need = [&](unsigned feature) {
    if (!(features_ & feature)) fail(name_, ": no tensor with role '", role_name(r), "' in this family");
  };
  switch (r) {
    case Role::Embed: return "model.embed_tokens.weight";
    case Role::LmHead: return "lm_head.weight";
    case Role::FinalNorm: return "model.norm.weight";
    default: break;
  }
  check(layer >= 0, name_, ": role '", role_name(r), "' needs a layer index");
  check(is_expert_role(r) == (expert >= 0), name_, ": role '", role_name(r),
        is_expert_role(r) ? "' needs an expert index" : "' takes no expert index");
  const std::string L = str("model.layers.", layer, ".");
  const std::string A = L + "self_attn.";
  const std::string M = L + "mlp.";
  const std::string B = L + naming_.moe_block + ".";
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
    case Role::ExpertGate: need(kMoe); return str(B, "experts.", expert, ".", naming_.expert_gate, ".weight");
    case Role::ExpertUp: need(kMoe); return str(B, "experts.", expert, ".", naming_.expert_up, ".weight");
    case Role::ExpertDown: need(kMoe); return str(B, "experts.", expert, ".", naming_.expert_down, ".weight");
    case Role::SharedGate: need(kShared); return B + naming_.shared_block + ".gate_proj.weight";
    case Role::SharedUp: need(kShared); return B + naming_.shared_block + ".up_proj.weight";
    case Role::SharedDown: need(kShared); return B + naming_.shared_block + ".down_proj.weight";
    case Role::SharedExpertGate: need(kSharedGate); return B + "shared_expert_gate.weight";
    default: break;
  }
  fail(name_, ": unknown role ", static_cast<int>(r));
}

FusedExpertNames LlamaLikeFamily::fused_expert_names(int64_t layer) const {
  if (!moe_) return {};
  check(layer >= 0, name_, ": fused expert names need a layer index");
  const std::string B = str("model.layers.", layer, ".", naming_.fused_block, ".");
  return {B + "experts.gate_up_proj", B + "experts.down_proj", B + "gate.weight"};
}

std::vector<TensorSlot> LlamaLikeFamily::tensors(const ModelConfig& c) const {
  check_family(c);
  validate(c, name_);
  const int64_t H = c.hidden_size, V = c.vocab_size, hd = c.head_dim;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads;
  std::vector<TensorSlot> out;
  auto add = [&](Role r, int64_t layer, int64_t expert, Shape shape) {
    for (int64_t d : shape) check(d > 0, name_, ": non-positive dimension for '", role_name(r), "'");
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
