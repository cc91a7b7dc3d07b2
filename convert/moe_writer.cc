// convert/moe_writer.cc — target config planning and the layer-by-layer MoE checkpoint writer (see
// moe_writer.h).
#include "convert/moe_writer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "core/fs.h"
#include "formats/safetensors.h"

namespace moetool {

namespace {

bool is_ffn_role(Role r) {
  switch (r) {
    case Role::Gate: case Role::Up: case Role::Down: case Role::GateBias: case Role::UpBias: case Role::DownBias:
    case Role::Router: case Role::RouterBias: case Role::ExpertGate: case Role::ExpertUp: case Role::ExpertDown:
    case Role::SharedGate: case Role::SharedUp: case Role::SharedDown: case Role::SharedExpertGate:
      return true;
    default:
      return false;
  }
}

const char* qk_norm_name(QkNorm q) {
  switch (q) {
    case QkNorm::None: return "no q/k norms";
    case QkNorm::PerHead: return "per-head q/k RMSNorm (q_norm/k_norm over head_dim)";
    case QkNorm::Full: return "q/k RMSNorm over the whole projection";
  }
  return "?";
}

// The config keys of the dense config.json worth keeping in the MoE one (family-independent ones);
// everything family-specific is rewritten by the target family's to_config_json.
nlohmann::json generic_raw(const nlohmann::json& raw) {
  nlohmann::json out = nlohmann::json::object();
  if (!raw.is_object()) return out;
  for (const char* k : {"torch_dtype", "dtype", "initializer_range", "attention_dropout", "use_cache", "pad_token_id",
                        "bos_token_id", "eos_token_id"})
    if (raw.contains(k)) out[k] = raw.at(k);
  return out;
}

// The config the target family would make of `dense` with the requested MoE layout (before the
// round trip through the family's own writer and reader).
ModelConfig intended_config(const ModelConfig& dense, const Family& target, const MoeTargetRequest& req,
                            const ModelConfig& probe, std::vector<Role>* zero_roles) {
  ModelConfig t = dense;
  t.family = target.name();
  t.raw = generic_raw(dense.raw);
  t.mlp_bias = false;
  // A target format that always has attention biases gets zeros where the source has none.
  if (probe.attention_bias && !dense.attention_bias) {
    t.attention_bias = true;
    if (zero_roles) zero_roles->insert(zero_roles->end(), {Role::QBias, Role::KBias, Role::VBias});
  }
  if (probe.o_bias && !dense.o_bias) {
    t.o_bias = true;
    if (zero_roles) zero_roles->push_back(Role::OBias);
  }
  MoeConfig m;
  m.num_experts = req.experts;
  m.top_k = req.top_k;
  m.expert_intermediate = req.expert_intermediate;
  m.routing = RoutingKind::SoftmaxTopK;
  m.norm_topk_prob = true;  // weights of the chosen experts sum to 1: needed for exactness
  m.shared_intermediate = req.shared_intermediate;
  m.shared_gated = req.shared_intermediate > 0 && probe.moe && probe.moe->shared_gated;
  t.moe = m;
  t.layer_kinds.assign(static_cast<size_t>(t.num_layers), LayerKind::Moe);
  return t;
}

// Differences that change the model's output between the intended and the round-tripped config.
std::vector<std::string> differences(const ModelConfig& a, const ModelConfig& b) {
  std::vector<std::string> d;
  auto cmp = [&](bool same, const char* what) {
    if (!same) d.push_back(what);
  };
  cmp(a.vocab_size == b.vocab_size, "vocab_size");
  cmp(a.hidden_size == b.hidden_size, "hidden_size");
  cmp(a.num_layers == b.num_layers, "num_hidden_layers");
  cmp(a.num_heads == b.num_heads, "num_attention_heads");
  cmp(a.num_kv_heads == b.num_kv_heads, "num_key_value_heads");
  cmp(a.head_dim == b.head_dim, "head_dim");
  cmp(a.max_position_embeddings == b.max_position_embeddings, "max_position_embeddings");
  cmp(a.rms_norm_eps == b.rms_norm_eps, "rms_norm_eps");
  cmp(a.rope_theta == b.rope_theta && a.rope == b.rope, "RoPE (rope_theta / rope_scaling)");
  cmp(a.tie_word_embeddings == b.tie_word_embeddings, "tie_word_embeddings");
  cmp(a.attention_bias == b.attention_bias, "q/k/v biases");
  cmp(a.o_bias == b.o_bias, "o_proj bias");
  cmp(a.qk_norm == b.qk_norm, "q/k norms");
  bool win = a.num_layers == b.num_layers;
  for (int64_t l = 0; win && l < a.num_layers; ++l) win = a.window_for_layer(l) == b.window_for_layer(l);
  cmp(win, "sliding-window attention layers");
  cmp(a.clip_qkv == b.clip_qkv, "clip_qkv");
  cmp(a.mla.has_value() == b.mla.has_value(), "MLA attention");
  cmp(a.layer_kinds == b.layer_kinds, "MoE layer placement");
  cmp(a.moe.has_value() && b.moe.has_value(), "MoE settings");
  if (a.moe && b.moe) {
    const MoeConfig &x = *a.moe, &y = *b.moe;
    cmp(x.num_experts == y.num_experts, "number of experts");
    cmp(x.top_k == y.top_k, "experts per token");
    cmp(x.expert_intermediate == y.expert_intermediate, "expert width");
    cmp(x.routing == y.routing, "routing function");
    cmp(x.norm_topk_prob == y.norm_topk_prob, "renormalised top-k weights (norm_topk_prob)");
    cmp(x.routed_scaling_factor == y.routed_scaling_factor, "routed_scaling_factor");
    cmp(x.shared_intermediate == y.shared_intermediate && x.shared_gated == y.shared_gated, "shared expert");
  }
  return d;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}

// Why `dense` cannot become `target` ("" when it can), without the round trip.
std::string incompatibility(const ModelConfig& dense, const Family& target, bool want_shared) {
  const std::string src = dense.family, tgt = target.name();
  if (!target.is_moe()) return str(tgt, " is not a Mixture-of-Experts family");
  const ModelConfig probe = target.synth_config(SynthSizes{});
  if (probe.mla && !dense.mla)
    return str(tgt, " uses multi-head latent attention (MLA: low-rank compressed keys/values with a decoupled RoPE "
                    "part), which cannot represent ", src, "'s attention (separate q/k/v projections) exactly");
  if (dense.mla && !probe.mla) return str(src, " has MLA attention, which ", tgt, " cannot represent");
  if (probe.qk_norm != dense.qk_norm) {
    if (dense.qk_norm == QkNorm::None)
      return str(tgt, " attention applies ", qk_norm_name(probe.qk_norm), ", which ", src,
                 " lacks; no weights make an RMSNorm the identity, so the MoE could not equal the dense model");
    return str(src, " attention applies ", qk_norm_name(dense.qk_norm), ", which ", tgt, " ",
               probe.qk_norm == QkNorm::None ? "does not have" : str("replaces by ", qk_norm_name(probe.qk_norm)));
  }
  if (!probe.moe || probe.moe->routing != RoutingKind::SoftmaxTopK)
    return str(tgt, " routes with sigmoid scores and group-limited selection; the exact constructions here need "
                    "softmax top-k routing");
  if (dense.mlp_bias)
    return str(src, "'s FFN has biases (mlp_bias), but the routed experts of ", tgt, " have none");
  if (want_shared && probe.moe->shared_intermediate == 0) return str(tgt, " has no shared expert");
  return "";
}

}  // namespace

void check_convertible(const ModelConfig& dense, const Family& target, bool want_shared) {
  const std::string src = dense.family, tgt = target.name();
  if (dense.moe) {
    for (auto k : dense.layer_kinds)
      if (k == LayerKind::Moe) fail("convert: ", src, " model is already a Mixture-of-Experts model (expected a dense one)");
  }
  const std::string why = incompatibility(dense, target, want_shared);
  if (why.empty()) return;
  std::vector<std::string> ok;
  for (const Family* f : all_families())
    if (f->is_moe() && incompatibility(dense, *f, want_shared).empty()) ok.push_back(f->name());
  fail("convert: cannot convert ", src, " to ", tgt, ": ", why, ok.empty() ? "" : str(" (possible targets: ", join(ok, ", "), ")"));
}

MoeTarget plan_moe_target(const ModelConfig& dense, const MoeTargetRequest& req) {
  const Family& fam = family_by_name(req.family);
  check_convertible(dense, fam, req.shared_intermediate > 0);
  check(req.experts >= 1 && req.top_k >= 1 && req.top_k <= req.experts, "convert: --top-k ", req.top_k,
        " must be between 1 and the number of experts (", req.experts, ")");
  check(req.expert_intermediate >= 1, "convert: the routed experts would have no neurons");
  const ModelConfig probe = fam.synth_config(SynthSizes{});
  MoeTarget t;
  t.family = &fam;
  MoeTargetRequest r = req;
  ModelConfig want = intended_config(dense, fam, r, probe, &t.zero_roles);
  nlohmann::json j;
  try {
    j = fam.to_config_json(want);
  } catch (const Error& e) {
    if (r.shared_intermediate != 0 || !probe.moe || probe.moe->shared_intermediate == 0) {
      fail("convert: cannot write a ", fam.name(), " config for this ", dense.family, " model: ", e.what());
    }
    // The family's format requires a shared expert: a zero one of width 1 contributes exactly 0.
    r.shared_intermediate = 1;
    t.placeholder_shared = true;
    t.zero_roles.clear();
    want = intended_config(dense, fam, r, probe, &t.zero_roles);
    try {
      j = fam.to_config_json(want);
    } catch (const Error& e2) {
      fail("convert: cannot write a ", fam.name(), " config for this ", dense.family, " model: ", e2.what());
    }
    t.notes.push_back(str(fam.name(), " always has a shared expert: written with width 1 and zero weights (it adds "
                                      "exactly 0; use --shared-expert / --shared-neurons for a real one)"));
  }
  if (!t.zero_roles.empty())
    t.notes.push_back(str(fam.name(), " attention has biases that ", dense.family, " lacks: written as zeros"));
  ModelConfig back = fam.parse_config(j, str("<", fam.name(), " config.json>"));
  const auto diff = differences(want, back);
  if (!diff.empty())
    fail("convert: cannot convert ", dense.family, " to ", fam.name(), ": a ", fam.name(),
         " config cannot express this model's ", join(diff, ", "), " (the MoE would not equal the dense model)");
  t.config = std::move(back);
  if (t.config.moe->shared_intermediate > 0 && t.config.moe->shared_gated) {
    t.shared_scale = 2.0;
    if (!t.placeholder_shared)
      t.notes.push_back("shared_expert_gate written as zeros: sigmoid(0) = 0.5 scales the shared expert, so its "
                        "down_proj carries a factor 2");
  }
  return t;
}

// ---------------------------------------------------------------------------------------------------

struct MoeCheckpointWriter::Impl {
  const Model* dense = nullptr;
  MoeTarget target;
  std::unique_ptr<OutputDir> out;
  std::unique_ptr<SafetensorsWriter> w;
  std::vector<TensorSlot> slots;
  std::vector<TensorSpec> specs;
  std::map<std::string, size_t> index;
  std::vector<std::string> copied_files;
  uint64_t bytes = 0;

  const TensorSpec& spec(Role r, int64_t l, int64_t e) const {
    const std::string n = target.family->tensor_name(r, l, e);
    auto it = index.find(n);
    if (it == index.end()) fail("convert: tensor '", n, "' is not part of the planned ", target.family->name(), " checkpoint");
    return specs[it->second];
  }
};

MoeCheckpointWriter::MoeCheckpointWriter(const Model& dense, const MoeTarget& target, const std::string& out_dir,
                                         const MoeWriterOptions& opt)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dense = &dense;
  m.target = target;
  const Family& fam = *target.family;
  const ModelConfig& c = target.config;
  m.slots = fam.tensors(c);
  const DType fallback = dense.weight(Role::Embed).dtype;
  for (const auto& s : m.slots) {
    DType dt = fallback;
    if (!is_ffn_role(s.role)) {
      if (auto t = dense.find(s.role, s.layer)) dt = t->dtype;
      else if (auto q = dense.find(Role::Q, s.layer)) dt = q->dtype;
    } else if (auto g = dense.find(Role::Gate, s.layer)) {
      dt = g->dtype;
    }
    m.index[s.name] = m.specs.size();
    m.specs.push_back({s.name, dt, s.shape});
    m.bytes += static_cast<uint64_t>(numel(s.shape)) * dtype_size(dt);
  }
  m.out = std::make_unique<OutputDir>(out_dir, opt.overwrite);
  nlohmann::json cj = fam.to_config_json(c);
  write_file_atomic(m.out->file("config.json"), cj.dump(2) + "\n");
  const std::string src_dir = dense.checkpoint().dir();
  for (const auto& f : tokenizer_files(src_dir)) {
    write_file_atomic(m.out->file(f), read_file(path_join(src_dir, f)));
    m.copied_files.push_back(f);
  }
  m.w = std::make_unique<SafetensorsWriter>(m.out->staging(), m.specs, opt.metadata, opt.max_shard_bytes);
}

MoeCheckpointWriter::~MoeCheckpointWriter() = default;

uint64_t MoeCheckpointWriter::bytes() const { return impl_->bytes; }

DType MoeCheckpointWriter::dtype(Role r, int64_t l, int64_t e) const { return impl_->spec(r, l, e).dtype; }
Shape MoeCheckpointWriter::shape(Role r, int64_t l, int64_t e) const { return impl_->spec(r, l, e).shape; }

void MoeCheckpointWriter::copy_model_tensors() {
  Impl& m = *impl_;
  for (const auto& s : m.slots) {
    if (s.layer >= 0) continue;
    Tensor t = m.dense->weight(s.role);
    m.w->write(s.name, t);
    release_pages(m.dense->checkpoint(), t);
  }
}

void MoeCheckpointWriter::copy_layer(int64_t l) {
  Impl& m = *impl_;
  for (const auto& s : m.slots) {
    if (s.layer != l || is_ffn_role(s.role)) continue;
    if (auto t = m.dense->find(s.role, l)) {
      check(t->shape == s.shape, "convert: ", s.name, ": dense tensor has shape ", shape_str(t->shape), ", expected ",
            shape_str(s.shape));
      m.w->write(s.name, *t);
      release_pages(m.dense->checkpoint(), *t);
    } else if (std::find(m.target.zero_roles.begin(), m.target.zero_roles.end(), s.role) != m.target.zero_roles.end()) {
      write_zeros(s.role, l);
    } else {
      fail("convert: ", m.dense->checkpoint().dir(), " has no tensor for ", role_name(s.role), " of layer ", l,
           " (needed for ", s.name, ")");
    }
  }
}

void MoeCheckpointWriter::write_f32(Role r, int64_t l, int64_t e, const float* v, size_t n) {
  Impl& m = *impl_;
  const TensorSpec& sp = m.spec(r, l, e);
  check(static_cast<int64_t>(n) == numel(sp.shape), "convert: ", sp.name, ": ", n, " values for shape ",
        shape_str(sp.shape));
  if (sp.dtype == DType::F32) return m.w->write(sp.name, v, n * 4);
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<uint8_t> buf(std::min(n, kChunk) * dtype_size(sp.dtype));
  for (size_t s = 0; s < n; s += kChunk) {
    const size_t c = std::min(kChunk, n - s);
    convert(DType::F32, v + s, sp.dtype, buf.data(), c);
    m.w->write_chunk(sp.name, s * dtype_size(sp.dtype), buf.data(), c * dtype_size(sp.dtype));
  }
}

void MoeCheckpointWriter::write_tensor(Role r, int64_t l, int64_t e, const Tensor& t) {
  Impl& m = *impl_;
  m.w->write(m.spec(r, l, e).name, t);
}

void MoeCheckpointWriter::write_zeros(Role r, int64_t l, int64_t e) {
  Impl& m = *impl_;
  const TensorSpec& sp = m.spec(r, l, e);
  const size_t nb = static_cast<size_t>(numel(sp.shape)) * dtype_size(sp.dtype);
  std::vector<uint8_t> z(std::min<size_t>(nb, size_t{1} << 22), 0);
  for (size_t s = 0; s < nb; s += z.size()) m.w->write_chunk(sp.name, s, z.data(), std::min(z.size(), nb - s));
}

std::vector<std::string> MoeCheckpointWriter::finish() {
  Impl& m = *impl_;
  std::vector<std::string> files = m.w->finish();
  m.w.reset();
  files.insert(files.begin(), "config.json");
  files.insert(files.begin() + 1, m.copied_files.begin(), m.copied_files.end());
  m.out->commit();
  return files;
}

}  // namespace moetool
