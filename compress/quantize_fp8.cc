// compress/quantize_fp8.cc — the block-FP8 writer (see quantize_fp8.h).
#include "compress/quantize_fp8.h"

#include <chrono>
#include <cmath>
#include <set>

#include "compress/quantize_int.h"
#include "core/error.h"
#include "formats/checkpoint_writer.h"
#include "formats/compressed_tensors.h"

namespace moetool {
namespace {

// "model.layers.3.mlp.experts.5.down_proj" → "model.layers.3.mlp.experts" ("" for a non-expert).
std::string experts_module(const std::string& module) {
  const auto ex = module.find(".experts.");
  return ex == std::string::npos ? std::string() : module.substr(0, ex + 8);
}

bool is_routed(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

// The scale block of a linear with `cols` inputs: --fp8-block, or one row (channel).
std::pair<int64_t, int64_t> block_of(const FP8QuantOptions& o, int64_t cols) {
  return o.channel ? std::make_pair(int64_t{1}, cols) : std::make_pair(o.block_rows, o.block_cols);
}

// "<module>.weight_scale_inv" (block FP8) or "<module>.weight_scale" (compressed-tensors).
std::string scale_name(const FP8QuantOptions& o, const std::string& module) {
  return o.channel ? module + ".weight_scale" : fp8_scale_name(module + ".weight");
}

// Which linears become FP8, the output plan and config. Kept-float linears, routers and the output
// head go to modules_to_not_convert.
struct Fp8Plan {
  std::vector<FP8LinearRecord> linears;  // every quantizable linear, FP8 or not
  FP8Config qc;
  CTConfig ct;  // with FP8QuantOptions::channel
  std::optional<CheckpointPlan> tensors;
};

Fp8Plan plan_fp8(const Model& m, const FP8QuantOptions& o, FP8QuantReport& rep) {
  const ModelConfig& c = m.config();
  const std::string what = m.checkpoint().dir();
  if (m.lowrank_layout())
    fail(what, ": a low-rank checkpoint (config.json lowrank) has no FP8 form; quantize it with --format gptq, or "
         "write it with `svd --materialize` first");
  Fp8Plan p;
  p.qc.block_rows = o.block_rows;
  p.qc.block_cols = o.block_cols;
  p.qc.quantizer = o.quantizer;
  p.tensors.emplace(m.family(), c, &m, [&](const TensorSlot& s) -> DType {
    fail(what, ": tensor '", s.name, "' (", role_name(s.role), ") not found");
  });
  CheckpointPlan& plan = *p.tensors;
  const SkipRules skip(o.skip);
  std::set<std::string> not_convert;
  std::map<std::string, std::pair<bool, std::string>> experts_fp8;  // experts module → (fp8?, first module)
  for (const auto& s : m.family().tensors(c)) {
    const auto module = gptq_module_of(s.name);
    if (m.gptq(s.role, s.layer, s.expert)) fail(what, ": '", s.name, "' is GPTQ-quantized; FP8 needs float weights");
    if (!int_quantizable_role(s.role) || s.shape.size() != 2 || !module) {
      // Linears transformers would otherwise replace: the output head, routers, the shared-expert gate.
      if (s.role != Role::Embed && s.shape.size() == 2 && module) not_convert.insert(*module);
      if (o.float_dtype) plan.set_dtype(s.name, *o.float_dtype);
      rep.params += numel(s.shape);
      continue;
    }
    FP8LinearRecord r;
    r.module = *module, r.role = s.role, r.layer = s.layer, r.expert = s.expert;
    r.rows = s.shape[0], r.cols = s.shape[1];
    if (skip.match(*module)) {
      r.note = "kept in float (--skip)";
    } else if (!o.channel && (s.shape[0] % o.block_rows || s.shape[1] % o.block_cols)) {
      r.note = str("kept in float: ", shape_str(s.shape), " is not a multiple of the ", o.block_rows, " x ",
                   o.block_cols, " block");
      rep.warnings.push_back(str(*module, ": ", r.note));
    } else {
      r.fp8 = true;
    }
    if (is_routed(s.role)) {
      const std::string em = experts_module(*module);
      auto [it, fresh] = experts_fp8.emplace(em, std::make_pair(r.fp8, *module));
      if (!fresh && it->second.first != r.fp8)
        fail(what, ": '", *module, "' would be ", r.fp8 ? "FP8" : "float", " but '", it->second.second, "' ",
             it->second.first ? "FP8" : "float", "; transformers and vLLM store a layer's experts as one module ('",
             em, "'), so all of them must be quantized or all kept (adjust --skip or --fp8-block)");
    }
    if (r.fp8) {
      const auto [br, bc] = block_of(o, s.shape[1]);
      const Shape g = fp8_scale_shape(s.shape[0], s.shape[1], br, bc);
      plan.replace(s.name, {{s.name, DType::F8_E4M3, s.shape}, {scale_name(o, *module), DType::F32, g}});
      r.bytes = static_cast<uint64_t>(numel(s.shape)) + 4u * static_cast<uint64_t>(numel(g));
      rep.quantized_params += numel(s.shape);
      rep.quantized_bytes += r.bytes;
    } else {
      not_convert.insert(is_routed(s.role) ? experts_module(*module) : *module);
      if (o.float_dtype) plan.set_dtype(s.name, *o.float_dtype);
    }
    rep.params += numel(s.shape);
    p.linears.push_back(std::move(r));
  }
  // The output head also when tied (no slot of its own): transformers builds it as a Linear all the same.
  if (const auto head = gptq_module_of(m.family().tensor_name(Role::LmHead))) not_convert.insert(*head);
  p.qc.modules_to_not_convert.assign(not_convert.begin(), not_convert.end());
  p.ct.groups = {CTGroup{8, -1, {"Linear"}, true}};
  p.ct.ignore = p.qc.modules_to_not_convert;
  p.ct.quantizer = o.quantizer;
  rep.bytes = plan.bytes();
  return p;
}

}  // namespace

FP8QuantReport quantize_to_fp8(const Model& m, const std::string& out_dir, const FP8QuantOptions& o, bool dry_run) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.block_rows <= 0 || o.block_cols <= 0) fail("FP8 block ", o.block_rows, " x ", o.block_cols, ": expected positive sizes");
  FP8QuantReport rep;
  rep.output = out_dir;
  rep.block_rows = o.channel ? 1 : o.block_rows;
  rep.block_cols = o.channel ? 0 : o.block_cols;
  Fp8Plan p = plan_fp8(m, o, rep);
  if (dry_run) {
    rep.linears = std::move(p.linears);
    return rep;
  }
  nlohmann::ordered_json cj = nlohmann::ordered_json::parse(m.config().raw.dump());
  cj["quantization_config"] = o.channel ? p.ct.to_json() : p.qc.to_json();
  CheckpointWriterOptions wo;
  wo.overwrite = o.overwrite;
  wo.max_shard_bytes = o.max_shard_bytes;
  wo.metadata = o.metadata;
  wo.tokenizer_dir = m.checkpoint().dir();
  CheckpointWriter w(out_dir, cj, std::move(*p.tensors), wo);
  const int64_t L = m.config().num_layers;
  w.copy_untouched(-1);
  size_t next = 0;
  for (int64_t l = 0; l < L; ++l) {
    int n = 0;
    for (; next < p.linears.size() && p.linears[next].layer == l; ++next) {
      FP8LinearRecord& r = p.linears[next];
      if (!r.fp8) continue;
      const std::string name = r.module + ".weight";
      const std::vector<float> W = m.weight(r.role, r.layer, r.expert).to_f32();
      for (size_t i = 0; i < W.size(); ++i)
        if (!std::isfinite(W[i]))
          fail(m.checkpoint().dir(), ": tensor '", name, "' holds a non-finite value (", W[i], " at element ", i,
               "); FP8 block scales need finite weights");
      const auto [br, bc] = block_of(o, r.cols);
      const FP8Quantized q = fp8_quantize(W.data(), r.rows, r.cols, br, bc);
      double num = 0, den = 0;
      const int64_t gc = (r.cols + bc - 1) / bc;
      for (int64_t i = 0; i < r.rows; ++i)
        for (int64_t j = 0; j < r.cols; ++j) {
          const size_t k = static_cast<size_t>(i * r.cols + j);
          const double v = static_cast<double>(f8e4m3_to_f32(q.q[k])) *
                           q.scale[static_cast<size_t>((i / br) * gc + j / bc)];
          num += (v - W[k]) * (v - W[k]);
          den += static_cast<double>(W[k]) * W[k];
        }
      r.rel_error = den > 0 ? std::sqrt(num / den) : 0.0;
      rep.max_rel_error = std::max(rep.max_rel_error, r.rel_error);
      w.write(name, q.q.data(), q.q.size());
      w.write(scale_name(o, r.module), q.scale.data(), q.scale.size() * 4);
      ++n;
    }
    w.copy_untouched(l);
    if (o.progress) o.progress(str("layer ", l + 1, "/", L, ": ", n, " linears in FP8"));
  }
  w.finish();
  rep.linears = std::move(p.linears);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace moetool
