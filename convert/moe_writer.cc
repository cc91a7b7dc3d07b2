// convert/moe_writer.cc — target config planning and the layer-by-layer MoE checkpoint writer (see
// moe_writer.h).
#include "convert/moe_writer.h"

#include <initializer_list>
#include <utility>

#include "core/error.h"
#include "formats/checkpoint_files.h"

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

// Appends the name of each field of `fields` on which a and b differ.
template <class S, class T>
void field_differences(const S& a, const S& b, std::initializer_list<std::pair<T S::*, const char*>> fields,
                       std::vector<std::string>& d) {
  for (const auto& [f, what] : fields)
    if (!(a.*f == b.*f)) d.push_back(what);
}

// Differences that change the model's output between the intended and the round-tripped config.
std::vector<std::string> differences(const ModelConfig& a, const ModelConfig& b) {
  using C = ModelConfig;
  std::vector<std::string> d;
  auto cmp = [&](bool same, const char* what) {
    if (!same) d.push_back(what);
  };
  field_differences<C, int64_t>(a, b,
                                {{&C::vocab_size, "vocab_size"}, {&C::hidden_size, "hidden_size"},
                                 {&C::num_layers, "num_hidden_layers"}, {&C::num_heads, "num_attention_heads"},
                                 {&C::num_kv_heads, "num_key_value_heads"}, {&C::head_dim, "head_dim"},
                                 {&C::max_position_embeddings, "max_position_embeddings"}},
                                d);
  cmp(a.rms_norm_eps == b.rms_norm_eps, "rms_norm_eps");
  cmp(a.rope_theta == b.rope_theta && a.rope == b.rope, "RoPE (rope_theta / rope_scaling)");
  field_differences<C, bool>(
      a, b, {{&C::tie_word_embeddings, "tie_word_embeddings"}, {&C::attention_bias, "q/k/v biases"},
             {&C::o_bias, "o_proj bias"}},
      d);
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
    field_differences<MoeConfig, int64_t>(x, y,
                                          {{&MoeConfig::num_experts, "number of experts"},
                                           {&MoeConfig::top_k, "experts per token"},
                                           {&MoeConfig::expert_intermediate, "expert width"}},
                                          d);
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

namespace {

// The target's tensors; dtypes of the dense model's tensors of the same slot, new ones as the layer's
// dense gate_proj (FFN roles) or q_proj (attention), else the embedding's.
CheckpointPlan moe_plan(const Model& dense, const MoeTarget& t) {
  const DType fallback = dense.weight(Role::Embed).dtype;
  return CheckpointPlan(*t.family, t.config, &dense, [&dense, fallback](const TensorSlot& s) {
    auto like = dense.find(is_ffn_role(s.role) ? Role::Gate : Role::Q, s.layer);
    return like ? like->dtype : fallback;
  });
}

CheckpointWriterOptions moe_writer_options(const Model& dense, const ConvertOptions& opt,
                                           const std::string& convert_line) {
  CheckpointWriterOptions wo;
  wo.overwrite = opt.overwrite;
  wo.max_shard_bytes = opt.max_shard_bytes;
  wo.metadata = opt.metadata;
  wo.metadata["moetool.seed"] = std::to_string(opt.seed);
  wo.metadata["moetool.convert"] = convert_line;
  wo.tokenizer_dir = dense.checkpoint().dir();
  return wo;
}

}  // namespace

MoeCheckpointWriter::MoeCheckpointWriter(const Model& dense, const MoeTarget& target, const std::string& out_dir,
                                         const ConvertOptions& opt, const std::string& convert_line)
    : CheckpointWriter(out_dir, target.family->to_config_json(target.config), moe_plan(dense, target),
                       moe_writer_options(dense, opt, convert_line)),
      target_(target) {}

void MoeCheckpointWriter::copy_layer(int64_t l) {
  if (l >= 0) {
    for (Role r : target_.zero_roles) write_zeros({r, l});
    const MoeConfig& m = *target_.config.moe;
    if (target_.placeholder_shared)
      for (Role r : {Role::SharedGate, Role::SharedUp, Role::SharedDown}) write_zeros({r, l});
    if (m.shared_intermediate > 0 && m.shared_gated) write_zeros({Role::SharedExpertGate, l});
  }
  copy_untouched(l);
  // The next layer: its attention, and the dense FFN the method reads.
  const Model& dense = *plan().source();
  if (l + 1 < dense.config().num_layers) {
    prefetch(l + 1);
    for (Role r : {Role::Gate, Role::Up, Role::Down}) prefetch_pages(dense.checkpoint(), dense.weight(r, l + 1));
  }
}

ConvertReport new_report(const char* method, const std::string& source, const std::string& output,
                         const ModelConfig& dense, const MoeTarget& t, const ConvertOptions& opt) {
  ConvertReport rep;
  rep.method = method;
  rep.source = source;
  rep.output = output;
  rep.source_family = dense.family;
  rep.target_family = t.config.family;
  rep.layers = dense.num_layers;
  rep.experts = opt.experts;
  rep.top_k = opt.top_k;
  rep.expert_intermediate = t.config.moe->expert_intermediate;
  rep.shared_intermediate = t.config.moe->shared_intermediate;
  rep.seed = opt.seed;
  rep.notes = t.notes;
  return rep;
}

void add_warning(ConvertReport& rep, const ConvertOptions& opt, const std::string& w) {
  rep.warnings.push_back(w);
  if (opt.warn) opt.warn(w);
}

void finish_report(ConvertReport& rep, MoeCheckpointWriter& w, const MoeTarget& t, Clock::time_point t0) {
  rep.files = w.finish();
  rep.bytes = w.bytes();
  const ParamCount pc = count_params(*t.family, t.config);
  rep.params_total = pc.total;
  rep.params_active = pc.active;
  rep.seconds = seconds_since(t0);
}

}  // namespace moetool
