// formats/families/rope_sliding_keys.cc — the RoPE keys (rope_theta, rope_scaling / v5 rope_parameters) and
// the two kinds of sliding-window keys (mistral's plain one, qwen's use_sliding_window + layer placement).
#include <algorithm>
#include <utility>

#include "core/error.h"
#include "formats/families/common.h"

namespace moetool::fam {

using nlohmann::json;

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

static void parse_plain_sliding(const ConfigReader& r, std::optional<int64_t> def, ModelConfig& c) {
  c.sliding_window = r.contains("sliding_window") ? r.opt_positive("sliding_window") : def;
  c.sliding_layers.assign(c.sliding_window ? static_cast<size_t>(c.num_layers) : 0, true);
}

// For keys that can only say "every layer".
static void require_every_layer_slides(const ModelConfig& c) {
  for (bool b : c.sliding_layers)
    if (!b) fail(c.family, ": a sliding window on only some layers cannot be written as a ", c.family, " config");
}

static void write_plain_sliding(const ModelConfig& c, json& j) {
  require_every_layer_slides(c);
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

static void parse_qwen_sliding(const ConfigReader& r, QwenSlidingRule rule, ModelConfig& c) {
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

static void write_qwen_sliding(const ModelConfig& c, QwenSlidingRule rule, json& j) {
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
    require_every_layer_slides(c);
    return;  // qwen3_moe has no layer_types
  }
  json lt = json::array();
  for (bool b : c.sliding_layers) lt.push_back(b ? "sliding_attention" : "full_attention");
  j["layer_types"] = lt;
}

void parse_sliding(const ConfigReader& r, const SlidingKeys& k, ModelConfig& c) {
  switch (k.kind) {
    case SlidingKeys::Kind::None: break;
    case SlidingKeys::Kind::Plain: parse_plain_sliding(r, k.plain_default, c); break;
    case SlidingKeys::Kind::Qwen: parse_qwen_sliding(r, k.qwen_rule, c); break;
  }
}

void write_sliding(const ModelConfig& c, const SlidingKeys& k, json& j) {
  switch (k.kind) {
    case SlidingKeys::Kind::None: break;
    case SlidingKeys::Kind::Plain: write_plain_sliding(c, j); break;
    case SlidingKeys::Kind::Qwen: write_qwen_sliding(c, k.qwen_rule, j); break;
  }
}

}  // namespace moetool::fam
