// formats/gguf_export.cc — HF checkpoint → GGUF for llama.cpp (see gguf_export.h): the per-tensor
// type plan (llama-quantize's rules, and which tensors get an importance vector) and the streaming
// writer.
#include "formats/gguf_export.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <regex>
#include <set>

#include "formats/ggml_quants.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf_config.h"

namespace moetool {
namespace {

std::string lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

bool is_expert_role(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

// llama.cpp's use_more_bits (src/llama-quant.cpp): the first and last eighth of the layers and
// every third one in between.
bool use_more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

double mib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

std::string ne_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// "2, 5" — at most eight expert indices, then how many in all.
std::string expert_list(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  if (v.size() > 8) s += str(", ... (", v.size(), " in all)");
  return s;
}

// The (role, layer) whose importance applies to a weight matrix: the output head's for the output
// (or the tied embedding, which is the output head too); none for an untied token embedding, a
// lookup table whose "input" is one-hot (llama.cpp's imatrix has no entry for it either).
std::optional<std::pair<Role, int64_t>> importance_key(const GGUFTensorPlan& t, const ModelConfig& c) {
  if (t.role == Role::LmHead || (t.role == Role::Embed && c.tie_word_embeddings))
    return std::pair<Role, int64_t>{Role::LmHead, -1};
  if (t.role == Role::Embed) return std::nullopt;
  return std::pair<Role, int64_t>{t.role, t.layer};
}

// The importance vector of tensor `t` (expert >= 0: of that routed expert's slice) from the
// callback, checked: one finite non-negative value per input column (ne[0]). nullopt when the
// callback has none.
std::optional<std::vector<float>> fetch_importance(const GGUFExportOptions& o, const GGUFTensorPlan& t, Role role,
                                                   int64_t layer, int64_t expert) {
  std::optional<std::vector<float>> v = o.importance(role, layer, expert);
  if (!v) return v;
  const std::string what = expert >= 0 ? str(t.name, " (expert ", expert, ")") : t.name;
  if (static_cast<int64_t>(v->size()) != t.ne.at(0))
    fail(what, ": importance vector for ", role_name(role), " has ", v->size(), " values, expected ", t.ne[0],
         " (one per input column)");
  for (size_t j = 0; j < v->size(); ++j)
    if (!std::isfinite((*v)[j]) || (*v)[j] < 0)
      fail(what, ": importance value ", (*v)[j], " at column ", j,
           " is not a finite non-negative number (expected Σx² of the input column from calibration)");
  return v;
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

double GGUFExportPlan::bpw() const { return params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0; }

double GGUFExportPlan::bpw_quantizable() const {
  uint64_t b = 0;
  for (const auto& t : tensors)
    if (t.quantizable) b += t.bytes;
  return quantizable_params ? 8.0 * static_cast<double>(b) / static_cast<double>(quantizable_params) : 0.0;
}

GGUFExportPlan plan_gguf_export(const Model& m, const GGUFExportOptions& o) {
  const Family& fam = m.family();
  const ModelConfig& c = m.config();
  const std::string& dir = m.checkpoint().dir();
  const GGUFArch* g = fam.gguf_arch();
  if (!g) {
    std::string ok;
    for (const Family* f : all_families())
      if (f->gguf_arch()) ok += (ok.empty() ? "" : ", ") + f->name();
    fail(dir, ": family ", fam.name(), " cannot be exported to GGUF yet (supported: ", ok, ")");
  }
  g->check_exportable(c, dir);

  GGUFExportPlan plan;
  plan.family = fam.name();
  plan.arch = g->name();
  plan.file_type = parse_gguf_file_type(o.file_type, "--type");

  // Tensor list in the family's canonical order; routed experts become one stacked tensor at the
  // position of their first expert; extra tensors (rope_freqs) follow the model-level ones.
  std::set<std::pair<Role, int64_t>> seen_stacked;
  bool extras_done = false;
  auto add_extras = [&] {
    if (extras_done) return;
    extras_done = true;
    for (const auto& [name, data] : g->extra_tensors(c)) {
      GGUFTensorPlan t;
      t.name = name;
      t.role = Role::FinalNorm;  // not used for extra tensors
      t.ne = {static_cast<int64_t>(data.size())};
      t.source_dtype = "computed";
      t.type = GGMLType::F32;
      t.why = "computed (llama.cpp RoPE frequency factors)";
      plan.tensors.push_back(t);
    }
  };
  for (const TensorSlot& s : fam.tensors(c)) {
    if (s.layer >= 0) add_extras();
    const auto ref = g->tensor(c, s.role, s.layer);
    if (!ref) fail(dir, ": tensor '", s.name, "' (", role_name(s.role), ") has no GGUF counterpart for ", g->name());
    GGUFTensorPlan t;
    t.name = ref->name;
    t.role = s.role;
    t.layer = s.layer;
    if (is_expert_role(s.role)) {
      if (!seen_stacked.insert({s.role, s.layer}).second) continue;
      if (!ref->stacked) fail(dir, ": routed experts of ", s.name, " are not stacked in ", g->name());
      t.experts = c.moe->num_experts;
      t.ne = {s.shape.at(1), s.shape.at(0), t.experts};
    } else if (ref->squeeze) {
      t.ne = {numel(s.shape)};
    } else {
      t.ne.assign(s.shape.rbegin(), s.shape.rend());
    }
    const auto src = m.find(s.role, s.layer, is_expert_role(s.role) ? 0 : -1);
    if (!src) fail(dir, ": tensor '", s.name, "' (", role_name(s.role), ") not found");
    t.source_dtype = dtype_name(src->dtype);
    t.quantizable = is_matrix_role(s.role) && t.ne.size() >= 2;
    plan.tensors.push_back(std::move(t));
  }
  add_extras();

  // Types: llama-quantize's selection (src/llama-quant.cpp llama_tensor_get_type).
  const GGMLType base = plan.file_type.base;
  const std::string& ft = plan.file_type.name;
  const bool base_quantized = ggml_is_quantized(base);
  const int64_t n_expert = c.moe ? c.moe->num_experts : 0;
  // llama.cpp counts attn_v tensors, and takes the block count as the number of ffn_down layers
  // (init_quantize_state_counters); MoE layers are found from the tensor name.
  int64_t n_attn_v = 0;
  const int64_t n_ffn_down = c.num_layers;
  for (const auto& t : plan.tensors)
    if (t.quantizable && t.role == Role::V) ++n_attn_v;
  int64_t i_attn_v = 0, i_ffn_down = 0;
  std::vector<std::regex> rules;
  for (const auto& r : o.tensor_types) {
    try {
      rules.emplace_back(r.pattern);
    } catch (const std::regex_error& e) {
      fail("--tensor-type: invalid regular expression '", r.pattern, "': ", e.what());
    }
  }
  for (auto& t : plan.tensors) {
    if (!t.quantizable) {
      if (t.why.empty()) t.why = "kept F32 (norm, bias, router or gate)";
      continue;
    }
    const bool is_output = t.role == Role::LmHead || (t.role == Role::Embed && c.tie_word_embeddings);
    const bool is_embed = t.role == Role::Embed && !is_output;
    GGMLType type = base;
    std::string why = "file type " + ft;
    bool manual = false;
    if (auto it = o.allocation.find(t.name); it != o.allocation.end()) {
      type = it->second;
      why = "allocation";
      manual = true;
    } else if (is_output && o.output_type) {
      type = *o.output_type;
      why = "--output-type";
      manual = true;
    } else if (is_embed && o.embed_type) {
      type = *o.embed_type;
      why = "--embed-type";
      manual = true;
    } else {
      for (size_t i = 0; i < rules.size(); ++i)
        if (std::regex_search(t.name, rules[i])) {
          type = o.tensor_types[i].type;
          why = "--tensor-type " + o.tensor_types[i].pattern;
          manual = true;
          break;
        }
    }
    if (!manual && !o.pure && base_quantized) {
      const int64_t layer = t.layer;
      if (is_output) {
        if (t.ne[0] % ggml_block_size(base) != 0) {
          type = GGMLType::Q8_0;
          why = "output rule (row length not a multiple of the block size: Q8_0)";
        } else if (base != GGMLType::Q8_0) {
          type = GGMLType::Q6_K;
          why = "output rule (Q6_K)";
        }
      } else if (t.role == Role::V) {
        if ((ft == "q4_k_m" || ft == "q5_k_m") && use_more_bits(i_attn_v, n_attn_v)) {
          type = GGMLType::Q6_K;
          why = "attn_v rule (more bits for this layer)";
        } else if (ft == "q4_k_s" && i_attn_v < 4) {
          type = GGMLType::Q5_K;
          why = "attn_v rule (first layers)";
        }
        if (n_expert == 8) {
          type = GGMLType::Q8_0;
          why = "attn_v rule (8 experts: Q8_0)";
        }
        ++i_attn_v;
      } else if (t.role == Role::K) {
        if (n_expert == 8) {
          type = GGMLType::Q8_0;
          why = "attn_k rule (8 experts: Q8_0)";
        }
      } else if (t.name.find("ffn_down") != std::string::npos) {
        const int64_t i_layer = n_expert > 1 ? layer : i_ffn_down;
        if ((ft == "q4_k_m" || ft == "q5_k_m") && use_more_bits(i_layer, n_ffn_down)) {
          type = GGMLType::Q6_K;
          why = "ffn_down rule (more bits for this layer)";
        } else if (ft == "q4_k_s" && i_layer < n_ffn_down / 8) {
          type = GGMLType::Q5_K;
          why = "ffn_down rule (first layers)";
        }
        ++i_ffn_down;
      } else if (t.role == Role::O) {
        if (n_expert == 8 && (ft == "q4_k_s" || ft == "q4_k_m")) {
          type = GGMLType::Q5_K;
          why = "attn_output rule (8 experts: Q5_K)";
        }
      }
    }
    if (!ggml_quant_supported(type)) fail(t.name, ": type ", ggml_type_name(type), " cannot be written by moetool");
    const GGMLType fb = ggml_fallback_type(type, t.ne[0]);
    if (fb != type) {
      why += str("; row length ", t.ne[0], " is not a multiple of ", ggml_type_name(type), "'s block size ",
                 ggml_block_size(type), ": fallback");
      type = fb;
    }
    t.type = type;
    t.why = why;
    if (o.importance && ggml_quant_uses_importance(type)) {
      const auto key = importance_key(t, c);
      if (!key) {
        t.why += "; no importance (token embedding lookup)";
      } else if (t.experts > 0) {
        int64_t have = 0;
        for (int64_t e = 0; e < t.experts; ++e) {
          if (fetch_importance(o, t, key->first, key->second, e))
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
                       expert_list(t.importance_missing), ": no calibration data)");
      } else {
        t.importance = fetch_importance(o, t, key->first, key->second, -1).has_value();
        t.why += t.importance ? "; importance" : "; no importance data (reference quantization)";
      }
    } else if (o.importance && ggml_is_quantized(type)) {
      t.why += str("; ", ggml_type_name(type), " ignores importance");
    }
  }
  for (auto& t : plan.tensors) {
    t.numel = 1;
    for (int64_t d : t.ne) t.numel *= d;
    t.bytes = ggml_nbytes(t.type, t.ne, t.name);
    if (t.source_dtype != "computed") {
      t.source_bytes = static_cast<uint64_t>(t.numel) * dtype_size(*parse_dtype(t.source_dtype));
      plan.params += t.numel;
      if (t.quantizable) plan.quantizable_params += t.numel;
    }
    plan.bytes += t.bytes;
    plan.source_bytes += t.source_bytes;
  }
  return plan;
}

namespace {

// Quantizes rows [rows, cols] of f32 into `out` and appends them to the tensor being written;
// with `imp` (cols values), importance-weighted.
void write_rows(GGUFWriter& w, const GGUFTensorPlan& t, const float* x, int64_t rows, int64_t cols,
                std::vector<uint8_t>& out, const std::vector<float>* imp = nullptr) {
  const size_t rb = ggml_row_size(t.type, cols);
  out.resize(static_cast<size_t>(rows) * rb);
  if (imp)
    quantize_rows(t.type, x, out.data(), rows, cols, std::span<const float>(*imp), t.name);
  else
    quantize_rows(t.type, x, out.data(), rows, cols, nullptr, t.name);
  w.write_tensor_data(t.name, out.data(), out.size());
}

// A [rows, cols] source matrix, converted to f32 and quantized in chunks of rows (all at once
// when its rows must be permuted, which mixes rows within a head). `imp`: importance of its
// cols input columns, or null. The permutation moves whole output rows, so the importance of an
// input column is the same before and after it.
void write_matrix(GGUFWriter& w, const GGUFTensorPlan& t, const Tensor& src, int64_t permute_heads,
                  const std::vector<float>* imp) {
  const int64_t rows = src.shape.at(0), cols = src.shape.at(1);
  std::vector<uint8_t> out;
  if (permute_heads > 0) {
    const std::vector<float> x = src.to_f32();
    std::vector<float> p(x.size());
    gguf_permute_rows(x.data(), p.data(), rows, static_cast<size_t>(cols) * 4, permute_heads);
    write_rows(w, t, p.data(), rows, cols, out, imp);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(cols, 1));  // ~64 MiB of f32
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    const std::vector<float> x = src.slice0(r0, r1).to_f32();
    write_rows(w, t, x.data(), r1 - r0, cols, out, imp);
  }
}

}  // namespace

GGUFExportPlan export_gguf(const Model& m, const std::string& out_path, const GGUFExportOptions& o) {
  GGUFExportPlan plan = plan_gguf_export(m, o);
  if (file_exists(out_path) && !o.overwrite)
    fail(out_path, ": already exists (use --force to replace it)");
  if (is_directory(out_path)) fail(out_path, ": is a directory");
  const ModelConfig& c = m.config();
  const GGUFArch* g = m.family().gguf_arch();
  const std::string& dir = m.checkpoint().dir();
  // Tokenizer first: a model without a usable tokenizer fails before anything is written.
  const std::vector<GGUFKV> tok = gguf_tokenizer_metadata(dir, c.vocab_size);

  GGUFWriter w(out_path);
  w.add_string("general.architecture", plan.arch);
  std::string name = o.name;
  if (name.empty()) {
    std::string d = dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    name = d.substr(d.rfind('/') == std::string::npos ? 0 : d.rfind('/') + 1);
  }
  w.add_string("general.name", name);
  w.add_u32("general.file_type", plan.file_type.ftype);
  w.add_u32("general.quantization_version", 2);
  w.add_u32("general.alignment", kGGUFDefaultAlignment);
  for (const auto& [k, v] : o.provenance) w.add_string("general." + k, v);
  for (const GGUFKV& kv : g->metadata(c)) w.add(kv.key, kv.value);
  for (const GGUFKV& kv : tok) w.add(kv.key, kv.value);
  for (const auto& t : plan.tensors) w.add_tensor_info(t.name, t.type, t.ne);

  std::map<std::string, std::vector<float>> extras;
  for (auto& [n, d] : g->extra_tensors(c)) extras[n] = std::move(d);
  const size_t total = plan.tensors.size();
  const int width = static_cast<int>(std::to_string(total).size());
  for (size_t i = 0; i < total; ++i) {
    const GGUFTensorPlan& t = plan.tensors[i];
    if (auto it = extras.find(t.name); it != extras.end()) {
      w.write_tensor_data(t.name, it->second.data(), it->second.size() * 4);
    } else if (!t.quantizable) {
      const auto ref = g->tensor(c, t.role, t.layer);
      std::vector<float> v = m.weight(t.role, t.layer).to_f32();
      if (ref->permute_heads > 0) {
        std::vector<float> p(v.size());
        gguf_permute_rows(v.data(), p.data(), static_cast<int64_t>(v.size()), 4, ref->permute_heads);
        v = std::move(p);
      }
      std::vector<uint8_t> out;
      write_rows(w, t, v.data(), 1, static_cast<int64_t>(v.size()), out);
    } else if (t.experts > 0) {
      const auto key = importance_key(t, c);
      for (int64_t e = 0; e < t.experts; ++e) {
        std::optional<std::vector<float>> imp;
        if (t.importance && std::find(t.importance_missing.begin(), t.importance_missing.end(), e) ==
                                t.importance_missing.end())
          imp = fetch_importance(o, t, key->first, key->second, e);
        write_matrix(w, t, m.weight(t.role, t.layer, e), 0, imp ? &*imp : nullptr);
      }
    } else {
      const auto ref = g->tensor(c, t.role, t.layer);
      std::optional<std::vector<float>> imp;
      if (t.importance) {
        const auto key = importance_key(t, c);
        imp = fetch_importance(o, t, key->first, key->second, -1);
      }
      write_matrix(w, t, m.weight(t.role, t.layer), ref->permute_heads, imp ? &*imp : nullptr);
    }
    if (o.progress) {
      char line[512];
      const std::string src = lower(t.source_dtype);
      const std::string dst = lower(ggml_type_name(t.type));
      if (src == dst || (t.source_dtype == "computed"))
        std::snprintf(line, sizeof line, "[%*zu/%*zu] %s - %s, type = %s, size = %.3f MiB", width, i + 1, width,
                      total, t.name.c_str(), ne_str(t.ne).c_str(), dst.c_str(), mib(t.bytes));
      else
        std::snprintf(line, sizeof line, "[%*zu/%*zu] %s - %s, type = %s, converting to %s .. size = %.2f MiB -> %.2f MiB",
                      width, i + 1, width, total, t.name.c_str(), ne_str(t.ne).c_str(), src.c_str(), dst.c_str(),
                      mib(t.source_bytes), mib(t.bytes));
      std::string msg = line;
      if (t.importance && t.importance_missing.empty())
        msg += ", imatrix";
      else if (t.importance)
        msg += str(", imatrix for ", t.experts - static_cast<int64_t>(t.importance_missing.size()), "/", t.experts,
                   " experts (no calibration data for expert ", expert_list(t.importance_missing),
                   ": reference quantization)");
      else if (o.importance && ggml_quant_uses_importance(t.type) && importance_key(t, c))
        msg += ", no imatrix data (reference quantization)";
      o.progress(msg);
    }
  }
  w.finish();
  return plan;
}

}  // namespace moetool
