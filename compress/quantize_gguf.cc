// compress/quantize_gguf.cc — the GGUF quantize pass (see quantize_gguf.h): llama-quantize's file
// types and per-tensor type rules, overrides and allocations, and which tensors get an importance
// vector.
#include "compress/quantize_gguf.h"

#include <cctype>
#include <regex>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "formats/ggml_quants.h"
#include "formats/gguf_config.h"
#include "formats/gguf_requant.h"

namespace moetool {
namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// llama.cpp's use_more_bits (src/llama-quant.cpp): the first and last eighth of the layers and
// every third one in between.
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// llama-quantize's per-tensor rules (src/llama-quant.cpp llama_tensor_get_type) for one file type,
// with the counters it keeps across the tensors: apply() is called once per quantizable tensor, in
// the order of the file.
class LlamaQuantRules {
 public:
  LlamaQuantRules(const GGUFExportPlan& plan, const ModelConfig& c)
      : base_(plan.file_type.base), ft_(plan.file_type.name), n_expert_(c.moe ? c.moe->num_experts : 0),
        n_ffn_down_(c.num_layers) {
    // llama.cpp counts attn_v tensors, and takes the block count as the number of ffn_down layers
    // (init_quantize_state_counters); MoE layers are found from the tensor name.
    for (const auto& t : plan.tensors)
      if (t.quantizable && t.role == Role::V) ++n_attn_v_;
  }

  // Refines `type` and `why` of tensor t (the output head, or the tied embedding, with is_output).
  void apply(const GGUFTensorPlan& t, bool is_output, GGMLType& type, std::string& why) {
    if (is_output) {
      if (t.ne[0] % ggml_block_size(base_) != 0) {
        type = GGMLType::Q8_0;
        why = "output rule (row length not a multiple of the block size: Q8_0)";
      } else if (base_ != GGMLType::Q8_0) {
        type = GGMLType::Q6_K;
        why = "output rule (Q6_K)";
      }
    } else if (t.role == Role::V) {
      if ((ft_ == "q4_k_m" || ft_ == "q5_k_m") && use_more_bits(i_attn_v_, n_attn_v_)) {
        type = GGMLType::Q6_K;
        why = "attn_v rule (more bits for this layer)";
      } else if (ft_ == "q4_k_s" && i_attn_v_ < 4) {
        type = GGMLType::Q5_K;
        why = "attn_v rule (first layers)";
      }
      if (n_expert_ == 8) {
        type = GGMLType::Q8_0;
        why = "attn_v rule (8 experts: Q8_0)";
      }
      ++i_attn_v_;
    } else if (t.role == Role::K) {
      if (n_expert_ == 8) {
        type = GGMLType::Q8_0;
        why = "attn_k rule (8 experts: Q8_0)";
      }
    } else if (t.name.find("ffn_down") != std::string::npos) {
      const int64_t i_layer = n_expert_ > 1 ? t.layer : i_ffn_down_;
      if ((ft_ == "q4_k_m" || ft_ == "q5_k_m") && use_more_bits(i_layer, n_ffn_down_)) {
        type = GGMLType::Q6_K;
        why = "ffn_down rule (more bits for this layer)";
      } else if (ft_ == "q4_k_s" && i_layer < n_ffn_down_ / 8) {
        type = GGMLType::Q5_K;
        why = "ffn_down rule (first layers)";
      }
      ++i_ffn_down_;
    } else if (t.role == Role::O) {
      if (n_expert_ == 8 && (ft_ == "q4_k_s" || ft_ == "q4_k_m")) {
        type = GGMLType::Q5_K;
        why = "attn_output rule (8 experts: Q5_K)";
      }
    }
  }

 private:
  GGMLType base_;
  std::string ft_;
  int64_t n_expert_, n_ffn_down_, n_attn_v_ = 0;
  int64_t i_attn_v_ = 0, i_ffn_down_ = 0;
};

// The type the user chose for tensor t, with the reason: an allocation, --output-type,
// --embed-type or the first matching --tensor-type rule (compiled in `rules`); nullopt if none.
std::optional<std::pair<GGMLType, std::string>> manual_type(const GGUFTensorPlan& t, const GGUFExportOptions& o,
                                                            const std::vector<std::regex>& rules, bool is_output,
                                                            bool is_embed) {
  if (auto it = o.allocation.find(t.name); it != o.allocation.end()) return {{it->second, "allocation"}};
  if (is_output && o.output_type) return {{*o.output_type, "--output-type"}};
  if (is_embed && o.embed_type) return {{*o.embed_type, "--embed-type"}};
  for (size_t i = 0; i < rules.size(); ++i)
    if (std::regex_search(t.name, rules[i]))
      return {{o.tensor_types[i].type, "--tensor-type " + o.tensor_types[i].pattern}};
  return std::nullopt;
}

// Marks whether quantizable tensor t (its type chosen) is quantized with importance, fetching (and
// so checking) every vector it will use, and says so in t.why.
void plan_importance(GGUFTensorPlan& t, const GGUFExportOptions& o, const ModelConfig& c) {
  if (!ggml_quant_uses_importance(t.type)) {
    if (ggml_is_quantized(t.type)) t.why += str("; ", ggml_type_name(t.type), " ignores importance");
    return;
  }
  if (!gguf_importance_key(t, c)) {
    t.why += "; no importance (token embedding lookup)";
  } else if (t.experts > 0) {
    int64_t have = 0;
    for (int64_t e = 0; e < t.experts; ++e) {
      if (gguf_tensor_importance(o.importance, t, c, e))
        ++have;
      else
        t.importance_missing.push_back(e);
    }
    t.importance = have > 0;
    if (have == t.experts)
      t.why += "; importance";
    else if (have == 0)
      t.why += "; no importance data (reference quantization)";
    else
      t.why += str("; importance for ", have, "/", t.experts, " experts (reference for expert ",
                   expert_index_list(t.importance_missing), ": no calibration data)");
  } else {
    t.importance = gguf_tensor_importance(o.importance, t, c, -1).has_value();
    t.why += t.importance ? "; importance" : "; no importance data (reference quantization)";
  }
}

}  // namespace

const std::vector<GGUFFileType>& gguf_file_types() {
  static const std::vector<GGUFFileType> t = {
      {"f32", 0, GGMLType::F32},     {"f16", 1, GGMLType::F16},     {"bf16", 32, GGMLType::BF16},
      {"q8_0", 7, GGMLType::Q8_0},   {"q4_0", 2, GGMLType::Q4_0},   {"q4_1", 3, GGMLType::Q4_1},
      {"q5_0", 8, GGMLType::Q5_0},   {"q5_1", 9, GGMLType::Q5_1},   {"q4_k_s", 14, GGMLType::Q4_K},
      {"q4_k_m", 15, GGMLType::Q4_K}, {"q5_k_s", 16, GGMLType::Q5_K}, {"q5_k_m", 17, GGMLType::Q5_K},
      {"q6_k", 18, GGMLType::Q6_K},
  };
  return t;
}

const GGUFFileType& parse_gguf_file_type(const std::string& s, const std::string& what) {
  std::string k = lower(s);
  if (k == "q4_k") k = "q4_k_m";  // llama-quantize's aliases
  if (k == "q5_k") k = "q5_k_m";
  for (const auto& t : gguf_file_types())
    if (t.name == k) return t;
  std::string names;
  for (const auto& t : gguf_file_types()) names += (names.empty() ? "" : ", ") + t.name;
  fail(what, ": unknown GGUF file type '", s, "' (expected one of: ", names, "; q4_k and q5_k are q4_k_m and q5_k_m)");
}

GGMLType parse_gguf_tensor_type(const std::string& s, const std::string& what) {
  const auto t = parse_ggml_type(s);
  if (!t || !ggml_quant_supported(*t))
    fail(what, ": unknown or unsupported tensor type '", s,
         "' (expected one of: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)");
  return *t;
}

namespace {

// Chooses the type of every quantizable tensor of a layout (the rest keep theirs) and counts sizes.
void choose_types(GGUFExportPlan& plan, const ModelConfig& c, const GGUFExportOptions& o) {
  plan.file_type = parse_gguf_file_type(o.file_type, "--type");
  const GGMLType base = plan.file_type.base;
  std::vector<std::regex> rules;
  for (const auto& r : o.tensor_types) {
    try {
      rules.emplace_back(r.pattern);
    } catch (const std::regex_error& e) {
      fail("--tensor-type: invalid regular expression '", r.pattern, "': ", e.what());
    }
  }
  LlamaQuantRules llama(plan, c);
  for (auto& t : plan.tensors) {
    if (!t.quantizable) {
      if (t.why.empty()) t.why = "kept F32 (norm, bias, router or gate)";
      continue;
    }
    const bool is_output = t.role == Role::LmHead || (t.role == Role::Embed && c.tie_word_embeddings);
    const bool is_embed = t.role == Role::Embed && !is_output;
    GGMLType type = base;
    std::string why = "file type " + plan.file_type.name;
    if (const auto manual = manual_type(t, o, rules, is_output, is_embed))
      std::tie(type, why) = *manual;
    else if (!o.pure && ggml_is_quantized(base))
      llama.apply(t, is_output, type, why);
    if (!ggml_quant_supported(type)) fail(t.name, ": type ", ggml_type_name(type), " cannot be written by moetool");
    const GGMLType fb = ggml_fallback_type(type, t.ne[0]);
    if (fb != type) {
      why += str("; row length ", t.ne[0], " is not a multiple of ", ggml_type_name(type), "'s block size ",
                 ggml_block_size(type), ": fallback");
      type = fb;
    }
    t.type = type;
    t.why = why;
    if (o.importance) plan_importance(t, o, c);
  }
  plan.count_sizes();
}

}  // namespace

GGUFExportPlan plan_gguf_export(const Model& m, const GGUFExportOptions& o) {
  GGUFExportPlan plan = gguf_tensor_layout(m);
  choose_types(plan, m.config(), o);
  return plan;
}

GGUFExportPlan plan_gguf_requantize(const GGUFFile& f, const GGUFExportOptions& o) {
  GGUFExportPlan plan = gguf_file_layout(f);
  choose_types(plan, model_config_of_gguf(f), o);
  return plan;
}

GGUFExportPlan export_gguf(const Model& m, const std::string& out_path, const GGUFExportOptions& o) {
  GGUFExportPlan plan = plan_gguf_export(m, o);
  write_gguf(m, plan, out_path, o);
  return plan;
}

}  // namespace moetool
