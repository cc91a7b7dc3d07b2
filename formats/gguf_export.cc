// formats/gguf_export.cc — HF checkpoint → GGUF for llama.cpp (see gguf_export.h): the tensor
// layout (names, shapes, stacked experts), the importance vector of a tensor, and the streaming
// writer of a plan.
#include "formats/gguf_export.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <set>

#include "formats/checkpoint_files.h"
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

double mib(uint64_t b) { return static_cast<double>(b) / (1024.0 * 1024.0); }

std::string ne_str(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace

std::string expert_index_list(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < 8; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  if (v.size() > 8) s += str(", ... (", v.size(), " in all)");
  return s;
}

std::optional<std::pair<Role, int64_t>> gguf_importance_key(const GGUFTensorPlan& t, const ModelConfig& c) {
  if (t.role == Role::LmHead || (t.role == Role::Embed && c.tie_word_embeddings))
    return std::pair<Role, int64_t>{Role::LmHead, -1};
  if (t.role == Role::Embed) return std::nullopt;
  return std::pair<Role, int64_t>{t.role, t.layer};
}

std::optional<std::vector<float>> gguf_tensor_importance(const GGUFImportance& importance, const GGUFTensorPlan& t,
                                                         const ModelConfig& c, int64_t expert) {
  const auto key = gguf_importance_key(t, c);
  if (!key) return std::nullopt;
  const auto [role, layer] = *key;
  std::optional<std::vector<float>> v = importance(role, layer, expert);
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

double GGUFExportPlan::bpw() const { return params ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : 0.0; }

double GGUFExportPlan::bpw_quantizable() const {
  uint64_t b = 0;
  for (const auto& t : tensors)
    if (t.quantizable) b += t.bytes;
  return quantizable_params ? 8.0 * static_cast<double>(b) / static_cast<double>(quantizable_params) : 0.0;
}

void GGUFExportPlan::count_sizes() {
  for (auto& t : tensors) {
    t.numel = 1;
    for (int64_t d : t.ne) t.numel *= d;
    t.bytes = ggml_nbytes(t.type, t.ne, t.name);
    if (t.source_type) {
      t.source_bytes = ggml_nbytes(*t.source_type, t.ne, t.name);
      params += t.numel;
      if (t.quantizable) quantizable_params += t.numel;
    } else if (t.source_dtype != "computed") {
      t.source_bytes = static_cast<uint64_t>(t.numel) * dtype_size(*parse_dtype(t.source_dtype));
      params += t.numel;
      if (t.quantizable) quantizable_params += t.numel;
    }
    bytes += t.bytes;
    source_bytes += t.source_bytes;
  }
}

GGUFExportPlan gguf_tensor_layout(const Model& m) {
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
// input column is the same before and after it. Views into the checkpoint's files are read with
// pread (read_view: no page faults on the mapping), others in place; the read, conversion and
// output buffers are kept from tensor to tensor (fresh pages per tensor cost more system time —
// zeroing and faulting them in — than the quantization itself).
void write_matrix(GGUFWriter& w, const Checkpoint& ck, const GGUFTensorPlan& t, const Tensor& src,
                  int64_t permute_heads, const std::vector<float>* imp) {
  thread_local std::vector<uint8_t> out, raw;
  thread_local std::vector<float> xbuf, pbuf;
  const int64_t rows = src.shape.at(0), cols = src.shape.at(1);
  // Rows [r0, r1) as f32: read (F32 straight into xbuf), converted into xbuf, or in place.
  const auto rows_f32 = [&](int64_t r0, int64_t r1) -> const float* {
    const Tensor s = src.slice0(r0, r1);
    xbuf.resize(static_cast<size_t>(s.numel()));
    if (s.dtype == DType::F32) return read_view(ck, s, xbuf.data()) ? xbuf.data() : s.as<const float>();
    const void* p = s.data;
    if (raw.resize(s.nbytes()); read_view(ck, s, raw.data())) p = raw.data();
    to_f32(s.dtype, p, xbuf.data(), xbuf.size());
    return xbuf.data();
  };
  if (permute_heads > 0) {
    const float* x = rows_f32(0, rows);
    pbuf.resize(static_cast<size_t>(rows * cols));
    gguf_permute_rows(x, pbuf.data(), rows, static_cast<size_t>(cols) * 4, permute_heads);
    write_rows(w, t, pbuf.data(), rows, cols, out, imp);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(cols, 1));  // ~64 MiB of f32
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk);
    write_rows(w, t, rows_f32(r0, r1), r1 - r0, cols, out, imp);
  }
}

// Rows encoded elsewhere (GGUFWriteOptions::encoded) for a [rows, cols] matrix: size-checked,
// q/k rows permuted, appended. False when there are none.
bool write_encoded(GGUFWriter& w, const GGUFTensorPlan& t, const GGUFWriteOptions& o, int64_t expert, int64_t rows,
                   int64_t cols, int64_t permute_heads) {
  if (!o.encoded) return false;
  std::optional<std::vector<uint8_t>> b = o.encoded(t, expert);
  if (!b) return false;
  const size_t rb = ggml_row_size(t.type, cols);
  if (b->size() != static_cast<size_t>(rows) * rb)
    fail(t.name, ": encoded rows hold ", b->size(), " bytes, expected ", rows, " rows of ", rb, " (",
         ggml_type_name(t.type), ")");
  if (permute_heads > 0) {
    std::vector<uint8_t> p(b->size());
    gguf_permute_rows(b->data(), p.data(), rows, rb, permute_heads);
    b = std::move(p);
  }
  w.write_tensor_data(t.name, b->data(), b->size());
  return true;
}

// The data of one planned tensor: an extra tensor as computed, a norm / bias / router row (q/k
// permuted where the architecture wants it), a stacked tensor expert by expert, or a matrix (rows
// encoded elsewhere where GGUFWriteOptions::encoded has them). Returns whether encoded rows were
// written (for every expert of a stacked tensor).
bool write_tensor(GGUFWriter& w, const Model& m, const GGUFTensorPlan& t, const GGUFWriteOptions& o,
                  const std::map<std::string, std::vector<float>>& extras) {
  const ModelConfig& c = m.config();
  const GGUFArch* g = m.family().gguf_arch();
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
    bool all = true;
    for (int64_t e = 0; e < t.experts; ++e) {
      if (write_encoded(w, t, o, e, t.ne[1], t.ne[0], 0)) continue;
      all = false;
      std::optional<std::vector<float>> imp;
      if (t.importance && std::find(t.importance_missing.begin(), t.importance_missing.end(), e) ==
                              t.importance_missing.end())
        imp = gguf_tensor_importance(o.importance, t, c, e);
      const Tensor src = m.weight(t.role, t.layer, e);
      write_matrix(w, m.checkpoint(), t, src, 0, imp ? &*imp : nullptr);
      release_pages(m.checkpoint(), src);  // done with it: its mapped pages leave our RSS
    }
    return all;
  } else {
    const auto ref = g->tensor(c, t.role, t.layer);
    if (write_encoded(w, t, o, -1, t.ne[1], t.ne[0], ref->permute_heads)) return true;
    std::optional<std::vector<float>> imp;
    if (t.importance) imp = gguf_tensor_importance(o.importance, t, c, -1);
    const Tensor src = m.weight(t.role, t.layer);
    write_matrix(w, m.checkpoint(), t, src, ref->permute_heads, imp ? &*imp : nullptr);
    release_pages(m.checkpoint(), src);
  }
  return false;
}

}  // namespace

std::string gguf_progress_line(const GGUFTensorPlan& t, size_t i, size_t n, int width, bool importance_given,
                          const ModelConfig& c) {
  char line[512];
  const std::string src = lower(t.source_dtype);
  const std::string dst = lower(ggml_type_name(t.type));
  if (src == dst || (t.source_dtype == "computed"))
    std::snprintf(line, sizeof line, "[%*zu/%*zu] %s - %s, type = %s, size = %.3f MiB", width, i + 1, width, n,
                  t.name.c_str(), ne_str(t.ne).c_str(), dst.c_str(), mib(t.bytes));
  else
    std::snprintf(line, sizeof line, "[%*zu/%*zu] %s - %s, type = %s, converting to %s .. size = %.2f MiB -> %.2f MiB",
                  width, i + 1, width, n, t.name.c_str(), ne_str(t.ne).c_str(), src.c_str(), dst.c_str(),
                  mib(t.source_bytes), mib(t.bytes));
  std::string msg = line;
  if (t.importance && t.importance_missing.empty())
    msg += ", imatrix";
  else if (t.importance)
    msg += str(", imatrix for ", t.experts - static_cast<int64_t>(t.importance_missing.size()), "/", t.experts,
               " experts (no calibration data for expert ", expert_index_list(t.importance_missing),
               ": reference quantization)");
  else if (importance_given && ggml_quant_uses_importance(t.type) && gguf_importance_key(t, c))
    msg += ", no imatrix data (reference quantization)";
  return msg;
}

void write_gguf(const Model& m, const GGUFExportPlan& plan, const std::string& out_path, const GGUFWriteOptions& o) {
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
    const bool encoded = write_tensor(w, m, plan.tensors[i], o, extras);
    if (o.progress)
      o.progress(gguf_progress_line(plan.tensors[i], i, total, width, bool(o.importance), c) +
                 (encoded ? ", gptq" : ""));
  }
  w.finish();
}

}  // namespace moetool
