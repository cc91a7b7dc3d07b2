// formats/gguf_requant.cc — a GGUF file's tensors as a plan, and their re-encoding into a new
// GGUF file (see gguf_requant.h).
#include "formats/gguf_requant.h"

#include <algorithm>
#include <map>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf_config.h"
#include "formats/ggml_quants.h"

namespace moetool {
namespace {

// The source's tensor bytes, read with pread into a buffer kept across tensors rather than through
// the mapping: faulting a 4 GB F32 file in page by page cost more system time than quantizing it
// (llama-quantize reads the same way). A file opened from a buffer (no path) is read in place.
class SourceReader {
 public:
  explicit SourceReader(const GGUFFile& f) : f_(f), by_path_(file_exists(f.path())) {}

  // Bytes [off, off + n) of tensor `info`'s data.
  const uint8_t* read(const GGUFTensorInfo& info, uint64_t off, size_t n) {
    if (!by_path_) return f_.raw_tensor(info).bytes.data() + off;
    buf_.resize(std::max(buf_.size(), n));
    read_file_range(f_.path(), f_.data_offset() + info.offset + off, n, buf_.data());
    return buf_.data();
  }

 private:
  const GGUFFile& f_;
  bool by_path_;
  std::vector<uint8_t> buf_;
};

// Where a role's tensor is in the file and what shape the metadata gives it.
struct RoleSlot {
  Role role;
  int64_t layer;
  int64_t experts;
  std::vector<int64_t> ne;
};

std::string ne_text(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// The general.* keys the writer sets: file type, quantization version, provenance, name (if given).
std::map<std::string, GGUFValue> replaced_keys(const GGUFExportPlan& plan, const GGUFWriteOptions& o) {
  std::map<std::string, GGUFValue> k;
  k.emplace("general.file_type", GGUFValue::u32(plan.file_type.ftype));
  k.emplace("general.quantization_version", GGUFValue::u32(2));
  if (!o.name.empty()) k.emplace("general.name", GGUFValue::string(o.name));
  for (const auto& [key, v] : o.provenance) k.emplace("general." + key, GGUFValue::string(v));
  return k;
}

// The source's metadata with the replaced keys, in the source's order.
void copy_metadata(GGUFWriter& w, const GGUFFile& f, const GGUFExportPlan& plan, const GGUFWriteOptions& o) {
  std::map<std::string, GGUFValue> pending = replaced_keys(plan, o);
  std::set<std::string> replaced;
  for (const auto& [key, v] : pending) replaced.insert(key);
  const auto flush = [&] {
    for (auto& [key, v] : pending) w.add(key, std::move(v));
    pending.clear();
  };
  for (const GGUFKV& kv : f.metadata()) {
    if (kv.key.rfind("general.", 0) != 0) flush();
    if (!replaced.count(kv.key)) {
      w.add(kv.key, kv.value);
    } else if (auto it = pending.find(kv.key); it != pending.end()) {
      w.add(kv.key, std::move(it->second));
      pending.erase(it);
    }  // else written already (a general.* key after the first other key)
  }
  flush();
}

// Rows [rows, cols] of the source tensor `info` in its type, starting at byte `off` of its data,
// re-encoded to t.type and appended, in chunks of about 64 MiB of f32; `imp` the importance of the
// cols input columns, or null.
void requantize_rows(GGUFWriter& w, SourceReader& in, const GGUFTensorPlan& t, const GGUFTensorInfo& info,
                     uint64_t off, int64_t rows, int64_t cols, const std::vector<float>* imp) {
  thread_local std::vector<float> x;
  thread_local std::vector<uint8_t> out;
  const size_t in_rb = ggml_row_size(info.type, cols, t.name), out_rb = ggml_row_size(t.type, cols, t.name);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(cols, 1));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t n = std::min(rows - r0, chunk);
    const uint8_t* src = in.read(info, off + static_cast<uint64_t>(r0) * in_rb, static_cast<size_t>(n) * in_rb);
    const float* xf = reinterpret_cast<const float*>(src);
    if (info.type != GGMLType::F32) {
      x.resize(static_cast<size_t>(n * cols));
      dequantize_rows(info.type, src, x.data(), n, cols, t.name);
      xf = x.data();
    }
    out.resize(static_cast<size_t>(n) * out_rb);
    if (imp)
      quantize_rows(t.type, xf, out.data(), n, cols, std::span<const float>(*imp), t.name);
    else
      quantize_rows(t.type, xf, out.data(), n, cols, nullptr, t.name);
    w.write_tensor_data(t.name, out.data(), out.size());
  }
}

// One planned tensor: copied when its type does not change, else re-encoded (expert by expert for
// stacked experts, each with its own importance).
void write_one(GGUFWriter& w, SourceReader& in, const GGUFFile& f, const GGUFTensorPlan& t,
               const GGUFWriteOptions& o, const ModelConfig& c) {
  const GGUFTensorInfo& info = f.tensor_info(t.name);
  if (t.type == info.type) {
    constexpr size_t kChunk = size_t{64} << 20;
    for (size_t p = 0; p < info.nbytes; p += kChunk) {
      const size_t n = std::min<size_t>(kChunk, info.nbytes - p);
      w.write_tensor_data(t.name, in.read(info, p, n), n);
    }
    return;
  }
  const int64_t cols = info.ne.at(0);
  const int64_t experts = t.experts > 0 ? t.experts : 1;
  const int64_t rows = info.numel() / cols / experts;
  const size_t per = static_cast<size_t>(rows) * ggml_row_size(info.type, cols, t.name);
  for (int64_t e = 0; e < experts; ++e) {
    std::optional<std::vector<float>> imp;
    const bool missing = std::find(t.importance_missing.begin(), t.importance_missing.end(), e) !=
                         t.importance_missing.end();
    if (t.importance && !missing) imp = gguf_tensor_importance(o.importance, t, c, t.experts > 0 ? e : -1);
    requantize_rows(w, in, t, info, static_cast<uint64_t>(e) * per, rows, cols, imp ? &*imp : nullptr);
  }
}

}  // namespace

GGUFExportPlan gguf_file_layout(const GGUFFile& f) {
  const Family& fam = family_of_gguf(f);
  const ModelConfig c = model_config_of_gguf(f);
  const GGUFArch* g = fam.gguf_arch();
  std::map<std::string, RoleSlot> by_name;
  for (const TensorSlot& s : fam.tensors(c)) {
    const auto ref = g->tensor(c, s.role, s.layer);
    if (!ref || by_name.count(ref->name)) continue;  // stacked experts: the first expert's slot
    RoleSlot r{s.role, s.layer, 0, {}};
    if (is_expert_role(s.role)) {
      r.experts = c.moe->num_experts;
      r.ne = {s.shape.at(1), s.shape.at(0), r.experts};
    } else if (ref->squeeze) {
      r.ne = {numel(s.shape)};
    } else {
      r.ne.assign(s.shape.rbegin(), s.shape.rend());
    }
    if (!f.has_tensor(ref->name))
      fail(f.path(), ": tensor '", ref->name, "' (", role_name(s.role), s.layer >= 0 ? str(" of layer ", s.layer) : "",
           ") not found");
    by_name.emplace(ref->name, std::move(r));
  }
  GGUFExportPlan plan;
  plan.family = fam.name();
  plan.arch = g->name();
  for (const GGUFTensorInfo& info : f.tensors()) {
    GGUFTensorPlan t;
    t.name = info.name;
    t.ne = info.ne;
    t.source_type = info.type;
    t.source_dtype = ggml_type_name(info.type);
    t.type = info.type;
    const auto it = by_name.find(info.name);
    if (it == by_name.end()) {
      t.role = Role::FinalNorm;  // not used: kept as stored
      t.why = "kept as stored (no model role)";
    } else {
      const RoleSlot& r = it->second;
      if (info.ne != r.ne)
        fail(f.path(), ": tensor '", info.name, "' has ne ", ne_text(info.ne), ", expected ", ne_text(r.ne),
             " from the file's metadata");
      t.role = r.role;
      t.layer = r.layer;
      t.experts = r.experts;
      t.quantizable = is_matrix_role(r.role) && t.ne.size() >= 2;
      if (!t.quantizable) t.why = "kept as stored (norm, bias, router or gate)";
    }
    plan.tensors.push_back(std::move(t));
  }
  return plan;
}

void write_requantized_gguf(const GGUFFile& f, const GGUFExportPlan& plan, const std::string& out_path,
                            const GGUFWriteOptions& o) {
  if (is_directory(out_path)) fail(out_path, ": is a directory");
  if (file_exists(out_path) && !o.overwrite) fail(out_path, ": already exists (use --force to replace it)");
  const ModelConfig c = model_config_of_gguf(f);
  SourceReader in(f);
  GGUFWriter w(out_path);
  copy_metadata(w, f, plan, o);
  for (const auto& t : plan.tensors) w.add_tensor_info(t.name, t.type, t.ne);
  const size_t total = plan.tensors.size();
  const int width = static_cast<int>(std::to_string(total).size());
  for (size_t i = 0; i < total; ++i) {
    write_one(w, in, f, plan.tensors[i], o, c);
    if (o.progress) o.progress(gguf_progress_line(plan.tensors[i], i, total, width, bool(o.importance), c));
  }
  w.finish();
}

}  // namespace moetool
