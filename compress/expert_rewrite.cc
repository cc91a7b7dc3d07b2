// compress/expert_rewrite.cc — fewer, narrower or replaced routed experts written back as a checkpoint of
// the same family (see expert_rewrite.h).
#include "compress/expert_rewrite.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "core/error.h"
#include "formats/checkpoint_writer.h"

namespace moetool {

namespace {

// Rows `ids` of a 2-D (or 1-D: elements) tensor, as an owned tensor of the same dtype (bytes copied).
Tensor take_rows(const Tensor& t, const std::vector<int64_t>& ids) {
  const int64_t rows = t.shape.at(0);
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(rows);
  Shape s = t.shape;
  s[0] = static_cast<int64_t>(ids.size());
  Tensor out = Tensor::zeros(t.dtype, s);
  for (size_t i = 0; i < ids.size(); ++i)
    std::memcpy(out.data + i * row_bytes, t.data + static_cast<size_t>(ids[i]) * row_bytes, row_bytes);
  return out;
}

// Columns `ids` of a 2-D tensor [rows, cols], owned, same dtype.
Tensor take_cols(const Tensor& t, const std::vector<int64_t>& ids) {
  const int64_t rows = t.shape.at(0), cols = t.shape.at(1);
  const size_t es = dtype_size(t.dtype), k = ids.size();
  Tensor out = Tensor::zeros(t.dtype, {rows, static_cast<int64_t>(k)});
  for (int64_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < k; ++j)
      std::memcpy(out.data + (static_cast<size_t>(r) * k + j) * es,
                  t.data + (static_cast<size_t>(r * cols + ids[j])) * es, es);
  return out;
}

void check_edit(const Model& src, const ExpertRewrite& rw) {
  const ModelConfig& c = src.config();
  const std::string what = str("rewrite ", src.checkpoint().dir());
  if (!c.moe) fail(what, ": ", c.family, " model has no routed experts (expected a Mixture-of-Experts model)");
  const auto layers = c.moe_layer_ids();
  if (layers.empty()) fail(what, ": no layer of this model is a Mixture-of-Experts layer");
  const int64_t E = c.moe->num_experts, I = c.moe->expert_intermediate;
  const int64_t K = rw.num_experts, top_k = rw.top_k ? rw.top_k : c.moe->top_k;
  const int64_t width = rw.expert_intermediate ? rw.expert_intermediate : I;
  if (K < 1 || K < top_k)
    fail(what, ": ", K, " experts per layer cannot serve ", top_k, " experts per token (top-k)");
  if (width < 1 || width > I) fail(what, ": expert width ", width, " must be between 1 and the source's ", I);
  if (rw.layers.size() != layers.size())
    fail(what, ": ", rw.layers.size(), " layer edits for ", layers.size(), " MoE layers");
  for (size_t i = 0; i < layers.size(); ++i) {
    const ExpertLayerEdit& e = rw.layers[i];
    const std::string lw = str(what, ": layer ", layers[i]);
    if (e.layer != layers[i]) fail(lw, ": edit names layer ", e.layer);
    if (static_cast<int64_t>(e.keep.size()) != K) fail(lw, ": ", e.keep.size(), " experts listed, expected ", K);
    std::set<int64_t> seen;
    for (int64_t id : e.keep) {
      if (id < 0 || id >= E) fail(lw, ": expert ", id, " out of range (the layer has ", E, ")");
      if (!seen.insert(id).second && !rw.replace_expert) fail(lw, ": expert ", id, " listed twice");
    }
    if (!e.neurons.empty() && static_cast<int64_t>(e.neurons.size()) != K)
      fail(lw, ": neuron lists for ", e.neurons.size(), " experts, expected ", K);
    for (const auto& n : e.neurons) {
      if (static_cast<int64_t>(n.size()) != width) fail(lw, ": an expert keeps ", n.size(), " neurons, expected ", width);
      for (size_t j = 0; j < n.size(); ++j)
        if (n[j] < 0 || n[j] >= I || (j && n[j] <= n[j - 1]))
          fail(lw, ": neuron ids must be ascending in 0..", I - 1, " (got ", n[j], ")");
    }
    if (e.neurons.empty() && width != I && !rw.replace_expert)
      fail(lw, ": experts narrowed to ", width, " neurons but no neurons chosen");
  }
}

// Output expert j of layer l: replaced, or source expert keep[j] (narrowed to its neurons).
void write_expert(const Model& src, const ExpertRewrite& rw, const ExpertLayerEdit& e, int64_t j,
                  CheckpointWriter& w) {
  const int64_t l = e.layer, from = e.keep[static_cast<size_t>(j)];
  for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown}) {
    const Slot out{r, l, j};
    if (rw.replace_expert)
      if (auto v = rw.replace_expert(r, l, j)) {
        w.write_f32(out, v->data(), v->size());
        continue;
      }
    if (e.neurons.empty()) {
      w.copy(out, Slot{r, l, from});
      continue;
    }
    const auto& ids = e.neurons[static_cast<size_t>(j)];
    const Tensor t = src.weight(r, l, from);
    w.write(out, r == Role::ExpertDown ? take_cols(t, ids) : take_rows(t, ids));
  }
}

void write_router(const Model& src, const ExpertRewrite& rw, const ExpertLayerEdit& e, CheckpointWriter& w) {
  const int64_t l = e.layer;
  std::optional<std::vector<float>> rows;
  if (rw.replace_router) rows = rw.replace_router(l);
  if (rows) w.write_f32(Slot{Role::Router, l, -1}, rows->data(), rows->size());
  else w.write(Slot{Role::Router, l, -1}, take_rows(src.weight(Role::Router, l), e.keep));
  if (w.plan().find(Slot{Role::RouterBias, l, -1}))
    w.write(Slot{Role::RouterBias, l, -1}, take_rows(src.weight(Role::RouterBias, l), e.keep));
}

}  // namespace

ModelConfig rewritten_config(const Model& src, const ExpertRewrite& rw) {
  const Family& fam = src.family();
  ModelConfig want = src.config();
  check(want.moe.has_value(), "rewrite: ", src.checkpoint().dir(), " has no routed experts");
  want.moe->num_experts = rw.num_experts;
  if (rw.top_k) want.moe->top_k = rw.top_k;
  if (rw.expert_intermediate) want.moe->expert_intermediate = rw.expert_intermediate;
  nlohmann::json j = fam.to_config_json(want);
  want.raw = j;
  ModelConfig back = fam.parse_config(j, str("<rewritten ", fam.name(), " config.json>"));
  const MoeConfig &a = *want.moe, &b = *back.moe;
  if (a.num_experts != b.num_experts || a.top_k != b.top_k || a.expert_intermediate != b.expert_intermediate)
    fail("rewrite: a ", fam.name(), " config.json cannot express ", a.num_experts, " experts of width ",
         a.expert_intermediate, ", top-", a.top_k);
  return back;
}

RewriteResult rewrite_experts(const Model& src, const ExpertRewrite& rw, const std::string& out_dir) {
  check_edit(src, rw);
  RewriteResult res;
  res.config = rewritten_config(src, rw);
  const Family& fam = src.family();
  CheckpointPlan plan(fam, res.config, &src, [&](const TensorSlot&) { return src.weight(Role::Embed).dtype; });
  // A kept expert keeps its source's dtype.
  for (const auto& e : rw.layers)
    for (size_t j = 0; j < e.keep.size(); ++j)
      for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown})
        plan.set_dtype(fam.tensor_name(r, e.layer, static_cast<int64_t>(j)), src.weight(r, e.layer, e.keep[j]).dtype);
  CheckpointWriterOptions wo;
  wo.overwrite = rw.overwrite;
  wo.max_shard_bytes = rw.max_shard_bytes;
  wo.metadata = rw.metadata;
  wo.tokenizer_dir = src.checkpoint().dir();
  const nlohmann::ordered_json cj = nlohmann::ordered_json::parse(res.config.raw.dump());
  CheckpointWriter w(out_dir, cj, std::move(plan), wo);
  w.copy_untouched(-1);
  size_t next = 0;
  for (int64_t l = 0; l < res.config.num_layers; ++l) {
    if (l + 1 < res.config.num_layers) w.prefetch(l + 1);
    if (next < rw.layers.size() && rw.layers[next].layer == l) {
      const ExpertLayerEdit& e = rw.layers[next++];
      write_router(src, rw, e, w);
      for (int64_t j = 0; j < rw.num_experts; ++j) write_expert(src, rw, e, j, w);
    }
    w.copy_untouched(l);
    if (rw.progress) rw.progress(str("[", l + 1, "/", res.config.num_layers, "] layer ", l, " written"));
  }
  res.bytes = w.bytes();
  res.files = w.finish();
  res.params = count_params(fam, res.config).total;
  res.source_params = count_params(fam, src.config()).total;
  return res;
}

}  // namespace moetool
