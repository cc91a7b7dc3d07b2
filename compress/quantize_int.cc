// compress/quantize_int.cc — layer-by-layer GPTQ / importance / RTN quantization of a checkpoint
// into the GPTQ safetensors layout (see quantize_int.h).
#include "compress/quantize_int.h"

#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <regex>
#include <tuple>

#include "compress/expert_pool.h"
#include "compress/hessian_collect.h"
#include "compress/quantize_lowrank.h"
#include "compress/quantize_ct.h"
#include "formats/gptq_pack.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/checkpoint_writer.h"
#include "formats/gptq.h"
#include "formats/safetensors.h"
#include "kernels/linear_gptq.h"
#include "kernels/linear_lowrank.h"
#include "engine/engine.h"
#include "engine/layer_sweep.h"
#include "engine/overlay_weights.h"

namespace moetool {

bool int_quantizable_role(Role r) { return is_matrix_role(r) && r != Role::Embed && r != Role::LmHead; }

SkipRules::SkipRules(const std::vector<std::string>& patterns) {
  for (const auto& p : patterns) re_.emplace_back(p);
}
bool SkipRules::match(const std::string& name) const {
  for (const auto& re : re_)
    if (std::regex_search(name, re)) return true;
  return false;
}

namespace {

using Mat = std::shared_ptr<const WeightMatrix>;
using Key = HessianKey;

// Whether a [rows, cols] linear fits the GPTQ packing at s.bits (a group size that does not divide
// cols falls back to whole rows: int_spec_for_cols).
bool packable(const IntQuantSpec& s, int64_t rows, int64_t cols) {
  return (cols * s.bits) % 32 == 0 && (rows * s.bits) % 32 == 0;
}

std::string fmt_err(double e) { return e < 0 ? std::string("-") : str(std::round(e * 1e5) / 1e5); }

// One tensor of the output: a quantized linear (bits > 0, stored as its four GPTQ tensors) or a
// tensor copied in float.
struct Item {
  TensorSlot slot;
  int bits = 0;  // 0: float
  std::string note;
  bool factored = false;  // a low-rank module: its factors are GptqPlan::factors
};

// Every tensor of the output, its quantization_config and its safetensors specs.
struct GptqPlan {
  std::vector<Item> items;
  std::vector<FactorItem> factors;  // a low-rank checkpoint's stored factors
  GPTQConfig qc;
  std::optional<CheckpointPlan> tensors;  // the family table, quantized linears replaced by their GPTQ tensors
};

// The plan of m's output under o (widths per linear, fused-group checks); counts the float tensors'
// parameters and every tensor's bytes into rep and warns there about linears kept in float.
GptqPlan plan_gptq(const Model& m, const IntQuantOptions& o, const std::string& what, IntQuantReport& rep) {
  const ModelConfig& c = m.config();
  GptqPlan p;
  GPTQConfig& qc = p.qc;
  qc.bits = o.spec.bits;
  qc.group_size = o.spec.group_size;
  qc.desc_act = o.method == "gptq" && o.gptq.act_order;
  qc.sym = o.spec.sym;
  qc.static_groups = o.gptq.static_groups;
  qc.damp_percent = o.gptq.damp;
  qc.true_sequential = o.sequential;
  qc.quantizer = o.quantizer;
  qc.fused_rules = o.fused_groups;
  std::map<std::string, std::tuple<int, int64_t, std::string>> group_bits;  // fused rule → bits, group, first module
  p.tensors.emplace(m.family(), c, &m, [&](const TensorSlot& s) -> DType {
    if (s.shape.size() == 2 && m.lowrank(s.role, s.layer, s.expert)) return DType::F32;  // replaced below
    fail(what, ": tensor '", s.name, "' (", role_name(s.role), ") not found");
  });
  CheckpointPlan& plan = *p.tensors;
  p.factors = plan_factors(m, o, rep.warnings);
  std::map<std::string, std::vector<const FactorItem*>> first_use;  // slot name → factors planned there
  for (const auto& f : p.factors) first_use[f.first_slot].push_back(&f);
  const SkipRules skip(o.skip);
  // The GPTQ tensors of a linear `module` [rows, cols] at `bits` (group size fitted to cols).
  auto gptq_specs = [&](const std::string& module, int bits, int64_t rows, int64_t cols) {
    const IntQuantSpec fit = int_spec_for_cols(o.spec, cols);
    const int64_t ng = fit.group_size > 0 ? cols / fit.group_size : 1;
    if (fit.group_size != o.spec.group_size) {
      qc.module_group_size[module] = fit.group_size;
      rep.warnings.push_back(str(module, ": ", cols, " inputs are not a multiple of the group size ",
                                 o.spec.group_size, "; stored with one group per row (group_size -1)"));
    }
    if (bits != o.spec.bits) qc.module_bits[module] = bits;
    qc.quantized_modules.push_back(module);
    if (o.compressed_tensors) return ct_specs(m, module, bits, rows, cols, ng);
    return std::vector<TensorSpec>{{module + ".qweight", DType::I32, {cols * bits / 32, rows}},
                                   {module + ".qzeros", DType::I32, {ng, rows * bits / 32}},
                                   {module + ".scales", DType::F16, {ng, rows}},
                                   {module + ".g_idx", DType::I32, {cols}}};
  };
  for (const auto& s : m.family().tensors(c)) {
    Item it{s, 0, ""};
    if (s.shape.size() == 2 && m.lowrank(s.role, s.layer, s.expert)) {
      // A factored module: its stored factors, each planned once (at its first user).
      std::vector<TensorSpec> specs;
      for (const FactorItem* f : first_use[s.name]) {
        if (f->bits > 0) {
          auto g = gptq_specs(f->name, f->bits, f->rows, f->cols);
          specs.insert(specs.end(), g.begin(), g.end());
        } else {
          specs.push_back({f->name, o.float_dtype.value_or(f->dtype), {f->rows, f->cols}});
          rep.params += f->rows * f->cols;
        }
      }
      plan.replace(s.name, specs);
      it.factored = true;
      p.items.push_back(std::move(it));
      continue;
    }
    if (const auto mod = gptq_module_of(s.name); mod && skip.match(*mod)) {
      it.note = "kept in float (--skip)";
    } else if (int_quantizable_role(s.role) && s.shape.size() == 2) {
      auto b = o.bits.find(LinearKey{s.role, s.layer, s.expert});
      IntQuantSpec sp = o.spec;
      sp.bits = b != o.bits.end() ? b->second : o.spec.bits;
      if (sp.bits == 0) {
        it.note = "kept in float (no width fits it in the allocation)";
      } else if (packable(sp, s.shape[0], s.shape[1])) {
        it.bits = sp.bits;
      } else {
        it.note = str("kept in float: [", s.shape[0], ", ", s.shape[1], "] does not fit ", sp.bits, "-bit groups of ",
                      sp.group_size);
        rep.warnings.push_back(str(s.name, ": ", it.note));
      }
    }
    const auto module = gptq_module_of(s.name);
    if (it.bits > 0) {
      const IntQuantSpec fit = int_spec_for_cols(o.spec, s.shape[1]);
      plan.replace(s.name, gptq_specs(*module, it.bits, s.shape[0], s.shape[1]));
      if (o.fused_groups) {
        const std::string rule = gptq_fused_rule(*module);
        auto [g, fresh] = group_bits.emplace(rule, std::make_tuple(it.bits, fit.group_size, *module));
        if (!fresh && (std::get<0>(g->second) != it.bits || std::get<1>(g->second) != fit.group_size))
          fail(what, ": '", *module, "' gets ", it.bits, " bits, group size ", fit.group_size, " but '",
               std::get<2>(g->second), "' of the same fused group (", rule, ") gets ", std::get<0>(g->second),
               " bits, group size ", std::get<1>(g->second), "; vLLM loads one storage per group");
      }
    } else {
      auto t = m.find(s.role, s.layer, s.expert);
      if (!t) fail(what, ": tensor '", s.name, "' (", role_name(s.role), ") not found");
      if (m.gptq(s.role, s.layer, s.expert)) fail(what, ": '", s.name, "' is already GPTQ-quantized");
      if (o.float_dtype && is_float(t->dtype)) plan.set_dtype(s.name, *o.float_dtype);
      rep.params += t->numel();
      if (int_quantizable_role(s.role) && module) qc.unquantized_modules.push_back(*module);
    }
    p.items.push_back(std::move(it));
  }
  rep.bytes += plan.bytes();
  return p;
}

// The output checkpoint (formats/checkpoint_writer.h), staged until commit(): config.json with
// quantization_config, the tokenizer files, and the tensors — float ones copied from m at once, quantized
// linears written as their layers are done (write_packed, from any thread).
class GptqOutput {
 public:
  GptqOutput(const Model& m, const std::string& out_dir, const IntQuantOptions& o, GptqPlan& p)
      : w_(out_dir, config_json(m, p, o), std::move(*p.tensors), writer_options(m, o)), ct_(o.compressed_tensors) {
    for (int64_t l = -1; l < m.config().num_layers; ++l) w_.copy_untouched(l);
  }
  void write_packed(const std::string& module, const GPTQTensors& p) {
    if (ct_) {
      const CTTensors t = ct_from_gptq(p, module);
      const auto n = ct_tensor_names(module);
      w_.write(n[0], t.packed.data(), t.packed.size() * 4);
      w_.write_f32(n[1], t.scale.data(), t.scale.size());
      const int64_t shape[2] = {p.rows, p.cols};
      w_.write(n[2], shape, sizeof shape);
      return;
    }
    w_.write(module + ".qweight", p.qweight.data(), p.qweight.size() * 4);
    w_.write(module + ".qzeros", p.qzeros.data(), p.qzeros.size() * 4);
    w_.write(module + ".scales", p.scales.data(), p.scales.size() * 2);
    w_.write(module + ".g_idx", p.g_idx.data(), p.g_idx.size() * 4);
  }
  // A float tensor in its planned dtype.
  void write_tensor(const std::string& name, const Tensor& t) {
    const DType dt = w_.spec(name).dtype;
    const Tensor c = t.dtype == dt ? t : t.to(dt);
    w_.write(name, c.data, c.nbytes());
  }
  void commit() { w_.finish(); }

 private:
  static nlohmann::ordered_json config_json(const Model& m, const GptqPlan& p, const IntQuantOptions& o) {
    nlohmann::ordered_json cj = nlohmann::ordered_json::parse(m.config().raw.dump());
    cj["quantization_config"] = o.compressed_tensors ? ct_config_for(m, p.qc).to_json() : p.qc.to_json();
    return cj;
  }
  static CheckpointWriterOptions writer_options(const Model& m, const IntQuantOptions& o) {
    CheckpointWriterOptions wo;
    wo.overwrite = o.overwrite;
    wo.max_shard_bytes = o.max_shard_bytes;
    wo.metadata = o.metadata;
    wo.tokenizer_dir = m.checkpoint().dir();
    return wo;
  }
  CheckpointWriter w_;
  bool ct_ = false;
};

// One linear quantized: its record, a warning (or ""), its packed tensors and, when `keep`, its
// dequantizing matrix (for the sequential re-run). `mo`: its input moments (null: uncalibrated).
struct QuantizedLinear {
  LinearQuantRecord rec;
  std::string warning;
  GPTQTensors packed;
  Mat matrix;
  Tensor dequantized;  // a factor's values after rounding (for the sequential re-run)
};

// W [rec.rows, rec.cols] rounded at rec.bits into `out` (rec's names, shape and width set by the
// caller); mo: its input moments (null: uncalibrated), full Σxxᵀ for gptq, Σx² for imatrix.
void quantize_into(const std::vector<float>& W, const Moments* mo, bool calibrated, bool keep, const IntQuantOptions& o,
                   const std::string& name, QuantizedLinear& out) {
  LinearQuantRecord& r = out.rec;
  IntQuantSpec sp = int_spec_for_cols(o.spec, r.cols);
  sp.bits = r.bits;
  r.tokens = mo ? mo->count : 0;
  IntQuantized q;
  if (!calibrated) {
    q = rtn_quantize(W.data(), r.rows, r.cols, sp, nullptr, name);
    r.method = "rtn";
  } else if (r.tokens < std::max<int64_t>(o.min_tokens, 1)) {
    q = rtn_quantize(W.data(), r.rows, r.cols, sp, nullptr, name);
    r.method = str("rtn (fallback: ", r.tokens, " calibration tokens)");
    out.warning = str(r.module, ": ", r.tokens, " calibration tokens (< ", std::max<int64_t>(o.min_tokens, 1),
                      "), rounded without importance (", o.method, " needs calibration inputs)");
  } else if (o.method == "imatrix") {
    std::vector<float> imp(mo->H.begin(), mo->H.end());
    q = rtn_quantize(W.data(), r.rows, r.cols, sp, imp.data(), name);
    r.method = "imatrix";
  } else {
    GPTQOptions go = o.gptq;
    go.spec = sp;
    GPTQStats gs;
    q = gptq_quantize(W.data(), r.rows, r.cols, mo->H.data(), mo->count, go, &gs, name);
    r.method = "gptq";
    if (gs.damp_used > o.gptq.damp * 1.0001)
      out.warning = str(r.module, ": Hessian not positive definite at damp ", o.gptq.damp, ", used ", gs.damp_used);
  }
  if (mo && o.method == "gptq") {
    std::vector<float> Wq(W.size());
    int_dequantize(q, Wq.data());
    r.rel_error = relative_output_error(W.data(), Wq.data(), r.rows, r.cols, mo->H);
  }
  out.packed = gptq_pack(q);
  const GPTQTensors& p = out.packed;
  r.bytes = o.compressed_tensors  // weight_packed, weight_scale, weight_shape
                ? static_cast<uint64_t>(r.rows * ct_packed_cols(r.cols, r.bits)) * 4 +
                      static_cast<uint64_t>(r.rows * p.ngroups * o.ct_scale_bytes) + 16
                : p.qweight.size() * 4 + p.qzeros.size() * 4 + p.scales.size() * 2 + p.g_idx.size() * 4;
  if (keep && r.factor) {
    out.dequantized = Tensor::zeros(DType::F32, {r.rows, r.cols});
    int_dequantize(q, out.dequantized.as<float>());
  } else if (keep) {
    out.matrix = make_gptq_matrix(q, r.module);
  }
}

QuantizedLinear quantize_linear(const WeightSource& w, const Item& it, const Moments* mo, bool calibrated, bool keep,
                                const IntQuantOptions& o) {
  QuantizedLinear out;
  const TensorSlot& s = it.slot;
  LinearQuantRecord& r = out.rec;
  r.module = *gptq_module_of(s.name);
  r.role = s.role;
  r.layer = s.layer;
  r.expert = s.expert;
  r.rows = s.shape[0];
  r.cols = s.shape[1];
  r.bits = it.bits;
  std::vector<float> W(static_cast<size_t>(r.rows * r.cols));
  w.matrix(s.role, s.layer, s.expert)->to_dense(W.data());
  quantize_into(W, mo, calibrated, keep, o, s.name, out);
  return out;
}

// A low-rank factor quantized: its own input moments derived from its users' (factor_moments).
QuantizedLinear quantize_factor(const Checkpoint& ck, const FactorItem& f, const std::map<Key, Moments>* moments,
                                bool calibrated, bool keep, const IntQuantOptions& o) {
  QuantizedLinear out;
  LinearQuantRecord& r = out.rec;
  r.module = f.name;
  r.factor = true;
  r.role = f.uses.front().role;
  r.layer = f.layer;
  r.expert = f.uses.size() == 1 ? f.uses.front().expert : -1;
  r.rows = f.rows;
  r.cols = f.cols;
  r.bits = f.bits;
  std::optional<Moments> mo;
  if (calibrated) {
    const auto fm = factor_moments(ck, f, [&](Role role, int64_t e) -> std::pair<const std::vector<double>*, int64_t> {
      const auto it = moments->find(Key{input_role(role), f.layer, e});
      if (it == moments->end()) return {nullptr, 0};
      return {&it->second.H, it->second.count};
    });
    mo = Moments{fm.count, fm.H};
  }
  quantize_into(ck.get(f.name).to_f32(), mo ? &*mo : nullptr, calibrated, keep, o, f.name, out);
  return out;
}

// Records (method "float") of the quantizable linears the plan keeps in float.
void record_float_linears(const GptqPlan& p, IntQuantReport& rep) {
  for (const auto& it : p.items)
    if (it.bits == 0 && !it.factored && int_quantizable_role(it.slot.role)) {
      LinearQuantRecord r;
      r.module = gptq_module_of(it.slot.name).value_or(it.slot.name);
      r.role = it.slot.role;
      r.layer = it.slot.layer;
      r.expert = it.slot.expert;
      r.rows = it.slot.shape[0];
      r.cols = it.slot.shape[1];
      r.method = "float";
      rep.linears.push_back(r);
    }
}

}  // namespace

IntQuantReport quantize_to_gptq(const Model& m, const std::string& out_dir,
                                const std::vector<std::vector<int32_t>>& chunks, const IntQuantOptions& o_in) {
  const auto t0 = std::chrono::steady_clock::now();
  IntQuantOptions o = o_in;
  if (o.compressed_tensors) o.ct_scale_bytes = static_cast<int>(dtype_size(ct_scale_dtype(m)));
  const std::string what = str("quantize ", m.checkpoint().dir());
  if (o.method != "gptq" && o.method != "imatrix" && o.method != "rtn")
    fail(what, ": unknown method '", o.method, "' (expected gptq, imatrix or rtn)");
  check_int_spec(o.spec, 1, o.spec.group_size > 0 ? o.spec.group_size : 32, what);
  const bool calibrated = o.method != "rtn";
  if (calibrated && chunks.empty()) fail(what, ": method ", o.method, " needs calibration text (--calib-text)");
  const ModelConfig& c = m.config();
  IntQuantReport rep;
  rep.output = out_dir;
  rep.method = o.method;
  rep.spec = o.spec;
  GptqPlan plan = plan_gptq(m, o, what, rep);
  GptqOutput output(m, out_dir, o, plan);

  // ---- layer by layer: layer l's input moments on the float weights, its linears quantized; with
  // `sequential` the next layer's inputs come from this layer quantized ----
  auto base = safetensors_weights(m);
  auto overlay = std::make_shared<OverlayWeights>(base);
  Engine eng(base, /*keep_layers=*/false);
  Engine qeng(overlay, /*keep_layers=*/false);
  for (const auto& ch : chunks) rep.calib_tokens += static_cast<int64_t>(ch.size());
  std::optional<LayerSweep> sweep;
  if (calibrated) sweep.emplace(eng, chunks);
  const bool sequential = calibrated && o.sequential;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::vector<const Item*> todo;
    for (const auto& it : plan.items)
      if (it.slot.layer == l && it.bits > 0) todo.push_back(&it);
    HessianCollector col(o.method != "gptq", *base, l);
    ExpertPool pool(o.pool_rows);
    if (o.method == "gptq" && o.pool_rows > 0 && c.moe && c.is_moe_layer(l)) col.pool = &pool;
    if (calibrated) {
      sweep->run(l, &col, sequential ? SweepStreams::Keep : SweepStreams::Advance);
      col.symmetrize_all();
    }
    std::vector<QuantizedLinear> done(todo.size());
    // Experts are many small independent problems: parallel over linears; otherwise inside each.
    const bool outer = todo.size() >= 8 && omp_get_max_threads() > 1;
#pragma omp parallel for schedule(dynamic, 1) if (outer)
    for (size_t i = 0; i < todo.size(); ++i) {
      const TensorSlot& s = todo[i]->slot;
      const Moments* mo = nullptr;
      if (calibrated) {
        auto f = col.moments.find(Key{input_role(s.role), s.layer, s.expert});
        if (f != col.moments.end()) mo = &f->second;
      }
      // Coverage guard: an expert with fewer than min_tokens rows gets the layer's pool added.
      const int64_t own = mo ? mo->count : 0;
      Moments pooled;
      if (col.pool && s.expert >= 0 && own < std::max<int64_t>(o.min_tokens, 1) && pool.rows() > 0) {
        pooled.H = pooled_hessian(pool, *base, s.role, l, s.expert);
        if (mo)
          for (size_t j = 0; j < pooled.H.size(); ++j) pooled.H[j] += mo->H[j];
        pooled.count = own + pool.rows();
        mo = &pooled;
      }
      done[i] = quantize_linear(*base, *todo[i], mo, calibrated, sequential, o);
      if (mo == &pooled) {
        done[i].rec.tokens = own;
        done[i].rec.pooled = pool.rows();
        done[i].rec.method = "gptq (pooled Hessian)";
        done[i].warning = str(done[i].rec.module, ": ", own, " calibration tokens (< ",
                              std::max<int64_t>(o.min_tokens, 1), "): Hessian from them plus ", pool.rows(),
                              " pooled tokens of layer ", l, " run through the expert");
      }
      output.write_packed(done[i].rec.module, done[i].packed);
      done[i].packed = {};
    }
    // A low-rank checkpoint's factors of this layer (float ones copied as they are).
    std::vector<const FactorItem*> ftodo;
    for (const auto& f : plan.factors)
      if (f.layer == l) ftodo.push_back(&f);
    const size_t nlin = done.size();
    done.resize(nlin + ftodo.size());
    const Checkpoint& ck = m.checkpoint();
#pragma omp parallel for schedule(dynamic, 1) if (ftodo.size() >= 8 && omp_get_max_threads() > 1)
    for (size_t i = 0; i < ftodo.size(); ++i) {
      const FactorItem& f = *ftodo[i];
      QuantizedLinear& d = done[nlin + i];
      if (f.bits == 0) {
        output.write_tensor(f.name, ck.get(f.name));
        d.dequantized = ck.get(f.name);
        d.rec = LinearQuantRecord{f.name, f.uses.front().role, l, -1, f.rows, f.cols, 0, "float", true};
        continue;
      }
      d = quantize_factor(ck, f, calibrated ? &col.moments : nullptr, calibrated, sequential, o);
      output.write_packed(f.name, d.packed);
      d.packed = {};
    }
    for (const auto& d : done) {
      const auto& r = d.rec;
      if (r.bits == 0) {  // a float factor
        rep.linears.push_back(r);
        continue;
      }
      if (!d.warning.empty()) rep.warnings.push_back(d.warning);
      rep.quantized_params += r.rows * r.cols;
      rep.quantized_bytes += r.bytes;
      rep.params += r.rows * r.cols;
      if (o.progress)
        o.progress(str("[", l + 1, "/", c.num_layers, "] ", r.module, " [", r.rows, ", ", r.cols, "] int", r.bits,
                       " ", r.method, r.tokens ? str(", ", r.tokens, " tokens") : std::string(),
                       r.rel_error >= 0 ? str(", rel. output error ", fmt_err(r.rel_error)) : std::string()));
      rep.linears.push_back(r);
    }
    // The next layer's inputs come from this layer quantized.
    if (sequential) {
      std::map<std::string, Tensor> factors;  // this layer's factors as the next layer will see them
      for (const auto& d : done) {
        if (d.rec.factor) factors[d.rec.module] = d.dequantized;
        else overlay->set(d.rec.role, d.rec.layer, d.rec.expert, d.matrix);
      }
      for (const auto& it : plan.items)
        if (it.factored && it.slot.layer == l) {
          const auto lr = m.lowrank(it.slot.role, l, it.slot.expert);
          std::optional<Tensor> b;
          if (!lr->base.empty()) b = factors.at(lr->base);
          overlay->set(it.slot.role, l, it.slot.expert,
                       make_lowrank_matrix(factors.at(lr->u), factors.at(lr->v), std::move(b), lr->module));
        }
      sweep->rerun_advance(l, qeng);
      overlay->drop_layer(l);
    }
  }
  if (sweep) sweep->release();
  record_float_linears(plan, rep);
  output.commit();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace moetool
