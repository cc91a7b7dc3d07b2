// formats/inspect.cc — building and printing the inspect report (see inspect.h).
#include "formats/inspect.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <sstream>

#include "core/error.h"
#include "formats/gguf.h"

namespace moetool {

// The low-rank summary and the stored parameter count (r.params_total already set).
static void inspect_lowrank(const Model& m, InspectReport& r) {
  r.params_stored = r.params_total;
  const auto& layout = m.lowrank_layout();
  if (!layout) return;
  LowRankSummary s;
  s.format = layout->format;
  s.method = layout->method;
  std::vector<int64_t> ranks;
  for (const auto& [mod, rank] : layout->ranks) ranks.push_back(rank);
  std::sort(ranks.begin(), ranks.end());
  s.modules = static_cast<int64_t>(ranks.size());
  if (!ranks.empty()) {
    s.rank_min = ranks.front();
    s.rank_max = ranks.back();
    s.rank_median = ranks[(ranks.size() - 1) / 2];
  }
  std::map<std::string, std::pair<int64_t, int64_t>> uses;  // stored factor → modules using it, its elements
  for (const auto& slot : m.family().tensors(m.config())) {
    if (slot.shape.size() != 2) continue;
    std::optional<LowRankLinear> lr;
    try {
      lr = find_lowrank_linear(m.checkpoint(), *layout, slot.name, slot.shape[0], slot.shape[1]);
    } catch (const Error&) {
      continue;  // counted as dense; check() reports it
    }
    if (!lr) continue;
    r.params_stored -= lr->rows * lr->cols;
    if (!lr->base.empty()) ++s.with_base;
    // Elements of each factor (a GPTQ-quantized one counts its [rows, cols] parameters too).
    const std::pair<const std::string*, int64_t> fs[] = {
        {&lr->u, lr->rows * lr->rank}, {&lr->v, lr->rank * lr->cols}, {&lr->base, lr->rows * lr->cols}};
    for (const auto& [n, count] : fs)
      if (!n->empty()) {
        ++uses[*n].first;
        uses[*n].second = count;
      }
  }
  for (const auto& [n, u] : uses) {
    r.params_stored += u.second;
    if (u.first > 1) ++s.shared_tensors;
  }
  r.lowrank = s;
}

InspectReport inspect_model(const Model& m) {
  const ModelConfig& c = m.config();
  InspectReport r;
  r.path = m.checkpoint().dir();
  r.family = m.family().name();
  r.architecture = m.family().architecture();
  r.layers = c.num_layers, r.hidden = c.hidden_size, r.heads = c.num_heads, r.kv_heads = c.num_kv_heads;
  r.head_dim = c.head_dim, r.vocab = c.vocab_size, r.intermediate = c.intermediate_size;
  r.tied_embeddings = c.tie_word_embeddings;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerSummary s;
    if (c.moe && c.is_moe_layer(l)) {
      s.moe = true;
      s.routed_experts = c.moe->num_experts;
      s.top_k = c.moe->top_k;
      s.shared_experts = c.moe->n_shared_experts ? c.moe->n_shared_experts : (c.moe->shared_intermediate ? 1 : 0);
      s.fused_layout = m.fused_experts(l);
    }
    r.per_layer.push_back(s);
  }
  const ParamCount pc = count_params(m.family(), c);
  r.params_total = pc.total;
  r.params_active = pc.active;
  inspect_lowrank(m, r);
  if (const auto& f = m.fp8()) {
    int64_t n8 = 0;
    for (const auto& n : m.checkpoint().names())
      n8 += m.checkpoint().info(n).dtype == DType::F8_E4M3 || m.checkpoint().info(n).dtype == DType::F8_E5M2;
    r.quantization = str("block FP8 (", f->fmt, ", ", f->block_rows, "x", f->block_cols, " blocks), ", n8,
                         " FP8 weights, read dequantized");
  } else if (c.raw.contains("quantization_config") && c.raw["quantization_config"].is_object()) {
    r.quantization = c.raw["quantization_config"].value("quant_method", std::string("?"));
  }
  for (const auto& n : m.checkpoint().names()) {
    const TensorInfo& i = m.checkpoint().info(n);
    r.bytes_by_dtype[dtype_name(i.dtype)] += i.end - i.begin;
    r.bytes_total += i.end - i.begin;
  }
  r.num_tensors = static_cast<int64_t>(m.checkpoint().names().size());
  r.num_files = static_cast<int64_t>(m.checkpoint().files().size());
  for (const auto& inc : m.check()) r.inconsistencies.push_back(inc.message());
  return r;
}

nlohmann::ordered_json InspectReport::to_json() const {
  nlohmann::ordered_json j;
  j["path"] = path;
  j["family"] = family;
  j["architecture"] = architecture;
  j["layers"] = layers;
  j["hidden_size"] = hidden;
  j["heads"] = heads;
  j["kv_heads"] = kv_heads;
  j["head_dim"] = head_dim;
  j["vocab_size"] = vocab;
  j["intermediate_size"] = intermediate;
  j["tied_embeddings"] = tied_embeddings;
  auto layers_j = nlohmann::ordered_json::array();
  for (size_t l = 0; l < per_layer.size(); ++l) {
    const auto& s = per_layer[l];
    nlohmann::ordered_json lj;
    lj["layer"] = l;
    lj["kind"] = s.moe ? "moe" : "dense";
    if (s.moe) {
      lj["routed_experts"] = s.routed_experts;
      lj["shared_experts"] = s.shared_experts;
      lj["top_k"] = s.top_k;
      lj["fused_layout"] = s.fused_layout;
    }
    layers_j.push_back(lj);
  }
  j["per_layer"] = layers_j;
  j["params_total"] = params_total;
  j["params_active_per_token"] = params_active;
  j["params_stored"] = params_stored;
  if (lowrank) {
    nlohmann::ordered_json lj;
    lj["format"] = lowrank->format;
    lj["method"] = lowrank->method;
    lj["modules"] = lowrank->modules;
    lj["rank_min"] = lowrank->rank_min;
    lj["rank_median"] = lowrank->rank_median;
    lj["rank_max"] = lowrank->rank_max;
    lj["with_base"] = lowrank->with_base;
    lj["shared_tensors"] = lowrank->shared_tensors;
    j["lowrank"] = lj;
  }
  if (!quantization.empty()) j["quantization"] = quantization;
  j["bytes_by_dtype"] = bytes_by_dtype;
  j["bytes_total"] = bytes_total;
  j["num_tensors"] = num_tensors;
  j["num_files"] = num_files;
  j["inconsistencies"] = inconsistencies;
  j["consistent"] = inconsistencies.empty();
  return j;
}

static std::string group_digits(int64_t v) {
  const std::string s = std::to_string(v < 0 ? -v : v);
  std::string o = v < 0 ? "-" : "";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) o += ',';
    o += s[i];
  }
  return o;
}

std::string InspectReport::to_text() const {
  std::ostringstream o;
  o << "model:            " << path << "\n";
  o << "family:           " << family << " (" << architecture << ")\n";
  o << "layers:           " << layers << "\n";
  o << "hidden size:      " << hidden << "\n";
  o << "heads:            " << heads << " (KV heads " << kv_heads << ", head dim " << head_dim << ")\n";
  o << "vocabulary:       " << vocab << (tied_embeddings ? " (tied embeddings)" : "") << "\n";
  o << "FFN width:        " << intermediate << "\n";
  o << "parameters:       " << group_digits(params_total) << " total, " << group_digits(params_active)
    << " active per token\n";
  if (lowrank) {
    o << "stored params:    " << group_digits(params_stored) << " (low-rank factors; shared tensors counted once)\n";
    o << "low-rank:         " << lowrank->modules << " module" << (lowrank->modules == 1 ? "" : "s") << " factored ("
      << lowrank->method << "), rank min " << lowrank->rank_min << " / median " << lowrank->rank_median << " / max "
      << lowrank->rank_max;
    if (lowrank->with_base) o << ", " << lowrank->with_base << " with a base";
    if (lowrank->shared_tensors)
      o << ", " << lowrank->shared_tensors << " shared tensor" << (lowrank->shared_tensors == 1 ? "" : "s");
    o << "\n";
  }
  if (!quantization.empty()) o << "quantization:     " << quantization << "\n";
  o << "tensors:          " << num_tensors << " in " << num_files << " file" << (num_files == 1 ? "" : "s") << ", "
    << group_digits(static_cast<int64_t>(bytes_total)) << " bytes";
  for (const auto& [dt, b] : bytes_by_dtype) o << "; " << dt << " " << group_digits(static_cast<int64_t>(b));
  o << "\n";
  o << "layers:\n";
  // Compress runs of identical layers: "  0-1   dense".
  auto same = [&](size_t a, size_t b) {
    const auto &x = per_layer[a], &y = per_layer[b];
    return x.moe == y.moe && x.routed_experts == y.routed_experts && x.shared_experts == y.shared_experts &&
           x.top_k == y.top_k && x.fused_layout == y.fused_layout;
  };
  for (size_t i = 0; i < per_layer.size();) {
    size_t j = i;
    while (j + 1 < per_layer.size() && same(i, j + 1)) ++j;
    const auto& s = per_layer[i];
    std::string range = i == j ? std::to_string(i) : str(i, "-", j);
    o << "  " << range << std::string(range.size() < 8 ? 8 - range.size() : 1, ' ');
    if (s.moe)
      o << "moe: " << s.routed_experts << " routed experts, top-" << s.top_k << ", " << s.shared_experts
        << " shared" << (s.fused_layout ? " (fused expert tensors)" : "") << "\n";
    else
      o << "dense\n";
    i = j + 1;
  }
  if (inconsistencies.empty()) {
    o << "consistency:      ok (config and tensors agree)\n";
  } else {
    o << "consistency:      " << inconsistencies.size() << " problem" << (inconsistencies.size() == 1 ? "" : "s")
      << "\n";
    for (const auto& s : inconsistencies) o << "  - " << s << "\n";
  }
  return o.str();
}

GGUFSummary inspect_gguf(const std::string& path) {
  auto f = GGUFFile::open(path);
  GGUFSummary g;
  g.path = path;
  g.architecture = f->get_string_or("general.architecture", "");
  g.name = f->get_string_or("general.name", "");
  g.version = f->version();
  g.alignment = f->alignment();
  g.num_kv = static_cast<int64_t>(f->metadata().size());
  g.num_tensors = static_cast<int64_t>(f->tensors().size());
  for (const auto& t : f->tensors()) {
    g.params += t.numel();
    g.bytes_by_type[ggml_type_name(t.type)] += t.nbytes;
    g.bytes_total += t.nbytes;
  }
  return g;
}

nlohmann::ordered_json GGUFSummary::to_json() const {
  nlohmann::ordered_json j;
  j["path"] = path;
  j["format"] = "gguf";
  j["version"] = version;
  j["architecture"] = architecture;
  j["name"] = name;
  j["alignment"] = alignment;
  j["num_kv"] = num_kv;
  j["num_tensors"] = num_tensors;
  j["params_total"] = params;
  j["bytes_by_type"] = bytes_by_type;
  j["bytes_total"] = bytes_total;
  return j;
}

std::string GGUFSummary::to_text() const {
  std::ostringstream o;
  o << "model:            " << path << "\n";
  o << "format:           GGUF v" << version << " (alignment " << alignment << ")\n";
  o << "architecture:     " << (architecture.empty() ? "(none: vocabulary-only file?)" : architecture) << "\n";
  if (!name.empty()) o << "name:             " << name << "\n";
  o << "metadata keys:    " << num_kv << "\n";
  o << "parameters:       " << group_digits(params) << "\n";
  o << "tensors:          " << num_tensors << ", " << group_digits(static_cast<int64_t>(bytes_total)) << " bytes";
  for (const auto& [t, b] : bytes_by_type) o << "; " << t << " " << group_digits(static_cast<int64_t>(b));
  o << "\n";
  return o.str();
}

}  // namespace moetool
