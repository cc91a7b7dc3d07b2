// formats/model.cc — role-based weight lookup and consistency checks (see model.h).
#include "formats/model.h"

#include <set>

#include "core/error.h"

namespace moetool {

std::string Inconsistency::message() const {
  switch (kind) {
    case Kind::Missing: return str("missing tensor '", tensor, "'", detail.empty() ? "" : " (", detail, detail.empty() ? "" : ")");
    case Kind::Unexpected: return str("unexpected tensor '", tensor, "' (not part of this config)");
    case Kind::WrongShape: return str("tensor '", tensor, "': ", detail);
    case Kind::WrongDType: return str("tensor '", tensor, "': ", detail);
  }
  return tensor;
}

Model Model::open(const std::string& path) {
  Checkpoint ck = Checkpoint::open(path);
  ModelConfig cfg = parse_model_config(ck.config_json(), ck.config_path());
  const Family& fam = family_by_name(cfg.family);
  return Model(std::move(ck), fam, std::move(cfg));
}

Model::Model(Checkpoint ckpt, const Family& family, ModelConfig config)
    : ckpt_(std::move(ckpt)), family_(&family), config_(std::move(config)) {
  slots_ = family_->tensors(config_);
  if (ckpt_.has_config()) {
    lowrank_ = lowrank_layout_of(ckpt_.config_json(), ckpt_.config_path());
    fp8_ = fp8_config_of(ckpt_.config_json(), ckpt_.config_path());
    ct_ = ct_config_of(ckpt_.config_json(), ckpt_.config_path());
    df11_block_ = df11_block_of(ckpt_.config_json(), ckpt_.config_path());
  }
}

bool Model::has_stored(const std::string& name) const {
  return ckpt_.has(name) || (df11_block_ && df11_stored(ckpt_, name));
}

Tensor Model::read_stored(const std::string& name) const {
  if (df11_block_ && !ckpt_.has(name) && df11_stored(ckpt_, name)) return df11_read(ckpt_, name, *df11_block_);
  Tensor t = ckpt_.get(name);
  if (t.dtype != DType::F8_E4M3 && t.dtype != DType::F8_E5M2) return t;
  const auto sc = fp8_scales(name, t.shape.empty() ? 0 : t.shape.back());
  if (!sc) return t;
  if (!ckpt_.has(sc->name))
    fail(ckpt_.dir(), ": tensor '", name, "' is ", dtype_name(t.dtype), " but '", sc->name, "' (its scales, ",
         fp8_ ? "quantization_config fp8" : "compressed-tensors float-quantized", ") is missing");
  return fp8_dequantize(t, ckpt_.get(sc->name), sc->block_rows, sc->block_cols, str(ckpt_.dir(), ": '", name, "'"));
}

std::optional<Model::Fp8Scales> Model::fp8_scales(const std::string& name, int64_t cols) const {
  if (fp8_) return Fp8Scales{fp8_scale_name(name), fp8_->block_rows, fp8_->block_cols};
  if (!ct_ || !ct_->has_fp8()) return std::nullopt;
  const auto m = gptq_module_of(name);
  const CTGroup* g = m ? ct_->group_of(*m) : nullptr;
  if (!g || !g->fp8) return std::nullopt;
  return Fp8Scales{*m + ".weight_scale", 1, cols};
}

bool Model::dequantized_on_read(Role r, int64_t layer, int64_t expert) const {
  if (!fp8_ && !ct_) return false;
  const TensorSlot* s = nullptr;
  for (const auto& x : slots_)
    if (x.role == r && x.layer == layer && x.expert == expert) s = &x;
  if (!s) return false;
  if (!ckpt_.has(s->name)) {
    const auto m = gptq_module_of(s->name);
    return ct_ && m && ckpt_.has(*m + ".weight_packed");
  }
  const DType d = ckpt_.info(s->name).dtype;
  if ((d != DType::F8_E4M3 && d != DType::F8_E5M2) || s->shape.size() != 2) return false;
  const auto sc = fp8_scales(s->name, s->shape[1]);
  return sc && ckpt_.has(sc->name);
}

DType Model::dequantized_dtype() const {
  const auto& raw = config_.raw;
  for (const char* key : {"torch_dtype", "dtype"})
    if (raw.contains(key) && raw[key].is_string()) {
      const std::string d = raw[key].get<std::string>();
      if (d == "float32") return DType::F32;
      if (d == "float16") return DType::F16;
      if (d == "bfloat16") return DType::BF16;
    }
  return DType::BF16;
}

bool Model::fused_experts(int64_t layer) const {
  if (!config_.moe || !config_.is_moe_layer(layer)) return false;
  const auto fn = family_->fused_expert_names(layer);
  return !fn.gate_up.empty() && ckpt_.has(fn.gate_up) &&
         !ckpt_.has(family_->tensor_name(Role::ExpertGate, layer, 0));
}

static const TensorSlot* find_slot(const std::vector<TensorSlot>& slots, Role r, int64_t layer, int64_t expert) {
  for (const auto& s : slots)
    if (s.role == r && s.layer == layer && s.expert == expert) return &s;
  return nullptr;
}

std::optional<Tensor> Model::find(Role r, int64_t layer, int64_t expert) const {
  // Tied embeddings: either name may be the stored one.
  if (r == Role::Embed || r == Role::LmHead) {
    const std::string own = family_->tensor_name(r, -1, -1);
    if (has_stored(own)) return read_stored(own);
    if (config_.tie_word_embeddings || r == Role::Embed) {
      const std::string other = family_->tensor_name(r == Role::Embed ? Role::LmHead : Role::Embed, -1, -1);
      if (config_.tie_word_embeddings && has_stored(other)) return read_stored(other);
    }
    return std::nullopt;
  }
  const bool expert_role = r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown;
  if (r == Role::Router && fused_experts(layer)) {
    const auto fn = family_->fused_expert_names(layer);
    if (!fn.router.empty() && ckpt_.has(fn.router)) return ckpt_.get(fn.router);
  }
  if (expert_role && fused_experts(layer)) {
    const auto fn = family_->fused_expert_names(layer);
    const int64_t I = config_.moe->expert_intermediate;
    if (fp8_ && ckpt_.has(fp8_scale_name(fn.gate_up)))
      fail(ckpt_.dir(), ": '", fn.gate_up, "' is a fused FP8 expert tensor; moetool reads block FP8 in the "
           "per-expert layout only (as DeepSeek-V3 and Qwen3 FP8 releases store it)");
    if (r == Role::ExpertDown) {
      Tensor d = ckpt_.get(fn.down);  // [E, H, I]
      return d.slice0(expert, expert + 1).reshaped({d.shape[1], d.shape[2]});
    }
    Tensor gu = ckpt_.get(fn.gate_up);  // [E, 2I, H]
    Tensor e = gu.slice0(expert, expert + 1).reshaped({gu.shape[1], gu.shape[2]});
    return r == Role::ExpertGate ? e.slice0(0, I) : e.slice0(I, 2 * I);
  }
  std::string n;
  try {
    n = family_->tensor_name(r, layer, expert);
  } catch (const Error&) {
    return std::nullopt;  // a role this family never has (e.g. q_bias in mistral) is absent
  }
  if (!has_stored(n)) {
    const TensorSlot* s = ct_ ? find_slot(slots_, r, layer, expert) : nullptr;
    const auto m = gptq_module_of(n);
    if (s && m && s->shape.size() == 2) return ct_dequantize(ckpt_, *ct_, *m, s->shape[0], s->shape[1]);
    return std::nullopt;
  }
  return read_stored(n);
}

std::optional<std::string> Model::df11_tensor(Role r, int64_t layer, int64_t expert) const {
  if (!df11_block_ || r == Role::Embed || r == Role::LmHead) return std::nullopt;
  const bool expert_role = r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown;
  if (expert_role && fused_experts(layer)) return std::nullopt;
  std::string n;
  try {
    n = family_->tensor_name(r, layer, expert);
  } catch (const Error&) {
    return std::nullopt;
  }
  if (ckpt_.has(n) || !df11_stored(ckpt_, n)) return std::nullopt;
  return n;
}

bool Model::has(Role r, int64_t layer, int64_t expert) const {
  if (r == Role::Embed || r == Role::LmHead) {
    if (has_stored(family_->tensor_name(r, -1, -1))) return true;
    return config_.tie_word_embeddings &&
           has_stored(family_->tensor_name(r == Role::Embed ? Role::LmHead : Role::Embed, -1, -1));
  }
  const bool expert_role = r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown;
  if ((r == Role::Router || expert_role) && fused_experts(layer)) {
    const auto fn = family_->fused_expert_names(layer);
    if (expert_role) return ckpt_.has(r == Role::ExpertDown ? fn.down : fn.gate_up);
    if (!fn.router.empty() && ckpt_.has(fn.router)) return true;
  }
  std::string n;
  try {
    n = family_->tensor_name(r, layer, expert);
  } catch (const Error&) {
    return false;
  }
  if (has_stored(n)) return true;
  const TensorSlot* s = ct_ ? find_slot(slots_, r, layer, expert) : nullptr;
  const auto m = gptq_module_of(n);
  return s && m && s->shape.size() == 2 && ckpt_.has(*m + ".weight_packed");
}

std::optional<GPTQLinear> Model::gptq(Role r, int64_t layer, int64_t expert) const {
  const TensorSlot* s = find_slot(slots_, r, layer, expert);
  if (!s || s->shape.size() != 2 || ckpt_.has(s->name)) return std::nullopt;
  return find_gptq_linear(ckpt_, s->name, s->shape[0], s->shape[1]);
}

std::optional<LowRankLinear> Model::lowrank(Role r, int64_t layer, int64_t expert) const {
  if (!lowrank_) return std::nullopt;
  const TensorSlot* s = find_slot(slots_, r, layer, expert);
  if (!s || s->shape.size() != 2) return std::nullopt;
  return find_lowrank_linear(ckpt_, *lowrank_, s->name, s->shape[0], s->shape[1]);
}

// The module of a slot's weight when config.json's lowrank block factors it.
static std::optional<std::string> factored_module(const std::optional<LowRankLayout>& lr, const std::string& name) {
  if (!lr) return std::nullopt;
  auto m = gptq_module_of(name);
  if (!m || !lr->ranks.count(*m)) return std::nullopt;
  return m;
}

Tensor Model::weight(Role r, int64_t layer, int64_t expert) const {
  const std::string n = family_->tensor_name(r, layer, expert);
  if (const auto m = factored_module(lowrank_, n); m && find_slot(slots_, r, layer, expert))
    fail(ckpt_.dir(), ": '", *m, "' (", role_name(r), ") is stored low-rank (", *m, ".weight_u · ", *m,
         ".weight_v, config.json lowrank), not as '", n, "': read it through WeightSource::matrix");
  auto t = find(r, layer, expert);
  if (!t) fail(ckpt_.dir(), ": tensor '", n, "' (", role_name(r), ") not found");
  if (const TensorSlot* s = find_slot(slots_, r == Role::LmHead && config_.tie_word_embeddings ? Role::Embed : r,
                                      layer, expert))
    if (s->shape != t->shape)
      fail(ckpt_.dir(), ": tensor '", n, "': expected shape ", shape_str(s->shape), ", got ", shape_str(t->shape));
  return *t;
}

std::vector<Inconsistency> Model::check() const {
  std::vector<Inconsistency> out;
  std::set<std::string> expected;
  std::set<std::string> factored;  // low-rank modules met in the tensor table
  auto check_shape = [&](const std::string& name, const Shape& want) {
    const TensorInfo& i = ckpt_.info(name);
    if (i.shape != want)
      out.push_back({Inconsistency::Kind::WrongShape, name,
                     str("expected shape ", shape_str(want), ", got ", shape_str(i.shape))});
    else if (!is_float(i.dtype))
      out.push_back({Inconsistency::Kind::WrongDType, name,
                     str("expected a float dtype, got ", dtype_name(i.dtype))});
    else if (const auto sc = (i.dtype == DType::F8_E4M3 || i.dtype == DType::F8_E5M2) && want.size() == 2
                                 ? fp8_scales(name, want[1])
                                 : std::nullopt) {
      // FP8: its scale grid must be there, of the grid's shape.
      const Shape g = fp8_scale_shape(want[0], want[1], sc->block_rows, sc->block_cols);
      if (!ckpt_.has(sc->name))
        out.push_back({Inconsistency::Kind::Missing, sc->name, str("scales of the FP8 weight, shape ", shape_str(g))});
      else if (expected.insert(sc->name), ckpt_.info(sc->name).shape != g)
        out.push_back({Inconsistency::Kind::WrongShape, sc->name,
                       str("expected shape ", shape_str(g), " (blocks of ", sc->block_rows, " x ", sc->block_cols,
                           "), got ", shape_str(ckpt_.info(sc->name).shape))});
    }
  };
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    if (!fused_experts(l)) continue;
    const auto fn = family_->fused_expert_names(l);
    const int64_t E = config_.moe->num_experts, I = config_.moe->expert_intermediate, H = config_.hidden_size;
    expected.insert(fn.gate_up);
    expected.insert(fn.down);
    if (!fn.router.empty() && ckpt_.has(fn.router)) expected.insert(fn.router);
    check_shape(fn.gate_up, {E, 2 * I, H});
    if (!ckpt_.has(fn.down)) out.push_back({Inconsistency::Kind::Missing, fn.down, "fused expert layout"});
    else check_shape(fn.down, {E, H, I});
  }
  for (const auto& s : slots_) {
    const bool expert_role = s.role == Role::ExpertGate || s.role == Role::ExpertUp || s.role == Role::ExpertDown;
    if (expert_role && fused_experts(s.layer)) continue;
    if (s.role == Role::Router && fused_experts(s.layer)) {
      const auto fn = family_->fused_expert_names(s.layer);
      if (!fn.router.empty() && fn.router != s.name && ckpt_.has(fn.router)) {
        check_shape(fn.router, s.shape);
        continue;
      }
    }
    expected.insert(s.name);
    if (df11_block_ && !ckpt_.has(s.name) && df11_stored(ckpt_, s.name)) {
      // A DF11-coded BF16 tensor: its five tensors, consistent, of the slot's shape.
      for (const auto& n : df11_tensor_names(s.name)) expected.insert(n);
      try {
        const Shape got = df11_check(ckpt_, s.name, *df11_block_);
        if (got != s.shape)
          out.push_back({Inconsistency::Kind::WrongShape, s.name,
                         str("expected shape ", shape_str(s.shape), ", got ", shape_str(got), " (DF11)")});
      } catch (const Error& e) {
        out.push_back({Inconsistency::Kind::WrongShape, s.name, e.what()});
      }
      continue;
    }
    if (s.role == Role::Embed && config_.tie_word_embeddings && !has_stored(s.name)) {
      const std::string head = family_->tensor_name(Role::LmHead);
      if (has_stored(head)) {
        if (!ckpt_.has(head)) {  // DF11-coded
          for (const auto& n : df11_tensor_names(head)) expected.insert(n);
          continue;
        }
        expected.insert(head);
        check_shape(head, s.shape);
        continue;
      }
    }
    if (const auto m = factored_module(lowrank_, s.name); m && s.shape.size() == 2) {
      // A low-rank linear: "<module>.weight" stored as weight_u/weight_v (+ weight_base), maybe aliased.
      factored.insert(*m);
      expected.insert(s.name);  // stored as well: reported once, as the inconsistency below
      try {
        const auto lr = find_lowrank_linear(ckpt_, *lowrank_, s.name, s.shape[0], s.shape[1]);
        for (const auto& n : lr->stored_tensors()) expected.insert(n);
      } catch (const Error& e) {
        out.push_back({Inconsistency::Kind::WrongShape, s.name, e.what()});
        for (const auto& n : lowrank_tensor_names(*m)) {
          expected.insert(n);
          const auto a = lowrank_->aliases.find(n);
          if (a != lowrank_->aliases.end()) expected.insert(a->second);
        }
      }
      continue;
    }
    if (const auto m = gptq_module_of(s.name); ct_ && m && !ckpt_.has(s.name) && s.shape.size() == 2 &&
                                                ckpt_.has(*m + ".weight_packed")) {
      // A compressed-tensors packed linear.
      for (const auto& n : ct_tensor_names(*m)) expected.insert(n);
      try {
        ct_linear(ckpt_, *ct_, *m, s.shape[0], s.shape[1]);
      } catch (const Error& e) {
        out.push_back({Inconsistency::Kind::WrongShape, s.name, e.what()});
      }
      continue;
    }
    if (!ckpt_.has(s.name) && s.shape.size() == 2) {
      // A GPTQ-quantized linear: "<module>.weight" stored as qweight/qzeros/scales/g_idx.
      std::optional<GPTQLinear> g;
      try {
        g = find_gptq_linear(ckpt_, s.name, s.shape[0], s.shape[1]);
      } catch (const Error& e) {
        out.push_back({Inconsistency::Kind::WrongShape, s.name, e.what()});
        if (auto m = gptq_module_of(s.name))
          for (const auto& n : gptq_tensor_names(*m)) expected.insert(n);
        continue;
      }
      if (g) {
        for (const auto& n : gptq_tensor_names(g->module)) expected.insert(n);
        continue;
      }
    }
    if (!ckpt_.has(s.name)) {
      out.push_back({Inconsistency::Kind::Missing, s.name, str("expected shape ", shape_str(s.shape))});
      continue;
    }
    check_shape(s.name, s.shape);
  }
  if (lowrank_)
    for (const auto& [m, r] : lowrank_->ranks)
      if (!factored.count(m))
        out.push_back({Inconsistency::Kind::WrongShape, m + ".weight",
                       str("config.json lowrank.ranks factors it (rank ", r, "), but this config has no such linear")});
  // Tied models may still store lm_head as a duplicate; that is not an inconsistency.
  if (config_.tie_word_embeddings) expected.insert(family_->tensor_name(Role::LmHead));
  for (const auto& n : ckpt_.names())
    if (!expected.count(n)) out.push_back({Inconsistency::Kind::Unexpected, n, ""});
  return out;
}

ParamCount count_params(const Family& f, const ModelConfig& c) {
  ParamCount p;
  for (const auto& s : f.tensors(c)) {
    const int64_t n = numel(s.shape);
    p.total += n;
    const bool expert_role = s.role == Role::ExpertGate || s.role == Role::ExpertUp || s.role == Role::ExpertDown;
    if (!expert_role) p.active += n;
    else if (c.moe && s.expert < c.moe->top_k) p.active += n;  // top_k experts' worth per token
  }
  return p;
}

}  // namespace moetool
