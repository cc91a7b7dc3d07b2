// cli/cmd_quantize.cc — `moetool quantize MODEL -o OUT --format gguf|gptq`: a Hugging Face
// checkpoint as a GGUF file llama.cpp runs (ggml block types, llama-quantize's per-tensor rules,
// importance from calibration) or as a GPTQ checkpoint transformers / vLLM load (GPTQ, importance
// or RTN rounding, 2–8 bits). `--bpw B` chooses every expert's / linear's storage with the exact
// knapsack of compress/bit_alloc.h; --dry-run prints the plan (and the allocation) without writing.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cli/commands.h"
#include "compress/bit_alloc.h"
#include "compress/quantize_gguf.h"
#include "compress/quantize_int.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf_export.h"
#include "formats/model.h"
#include "engine/calibrate.h"
#include "engine/engine.h"
#include "engine/text.h"

namespace moetool::cli {

namespace {

std::string ne_text(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

nlohmann::ordered_json plan_json(const GGUFExportPlan& p, const std::string& out, bool written) {
  nlohmann::ordered_json j;
  j["output"] = out;
  j["written"] = written;
  j["format"] = "gguf";
  j["family"] = p.family;
  j["architecture"] = p.arch;
  j["file_type"] = p.file_type.name;
  j["general.file_type"] = p.file_type.ftype;
  j["params"] = p.params;
  j["bytes"] = p.bytes;
  j["source_bytes"] = p.source_bytes;
  j["bpw"] = p.bpw();
  j["bpw_weights"] = p.bpw_quantizable();
  auto& ts = j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : p.tensors) {
    nlohmann::ordered_json e;
    e["name"] = t.name;
    e["ne"] = t.ne;
    e["source_dtype"] = t.source_dtype;
    e["type"] = ggml_type_name(t.type);
    e["bytes"] = t.bytes;
    e["why"] = t.why;
    ts.push_back(e);
  }
  return j;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ','))
    if (!x.empty()) out.push_back(x);
  return out;
}

nlohmann::ordered_json alloc_json(const Allocation& a, const AllocOptions& ao) {
  nlohmann::ordered_json j;
  j["budget_bpw"] = ao.bpw;
  j["scope"] = a.all_weights ? "all quantizable linears" : "routed experts";
  j["achieved_bpw_scope"] = a.bpw_scope;
  j["achieved_bpw_linears"] = a.bpw_linears;
  j["routed_average_bpw"] = a.routed_avg_bpw;
  j["cost_alpha"] = ao.alpha;
  j["cost_beta"] = ao.beta;
  j["cost_gamma"] = ao.gamma;
  j["total_cost"] = a.total_cost;
  j["solver"] = a.solution.solver;
  j["solver_seconds"] = a.solution.seconds;
  j["notes"] = a.notes;
  auto& us = j["units"] = nlohmann::ordered_json::array();
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto& u = a.units[i];
    nlohmann::ordered_json e;
    e["unit"] = u.name;
    e["layer"] = u.layer;
    e["expert"] = u.expert;
    e["routed"] = u.routed;
    e["params"] = u.params;
    e["tokens"] = u.tokens;
    e["freq"] = u.freq;
    e["weight"] = u.weight;
    e["choice"] = a.choice[i] >= 0 ? ao.candidates[static_cast<size_t>(a.choice[i])].name : "float";
    if (a.choice[i] >= 0) {
      e["bpw"] = 8.0 * static_cast<double>(u.bytes[static_cast<size_t>(a.choice[i])]) / static_cast<double>(u.params);
      e["error"] = u.error[static_cast<size_t>(a.choice[i])];
    }
    nlohmann::ordered_json errs = nlohmann::ordered_json::object();
    for (size_t k = 0; k < ao.candidates.size(); ++k)
      if (!std::isnan(u.error[k])) errs[ao.candidates[k].name] = u.error[k];
    e["error_by_candidate"] = errs;
    us.push_back(e);
  }
  return j;
}

void print_alloc(const Allocation& a, const AllocOptions& ao) {
  std::printf("%-28s %10s %8s %7s %7s %-8s %7s %10s\n", "unit", "params", "tokens", "freq", "weight", "choice", "bpw",
              "error");
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto& u = a.units[i];
    const bool has = a.choice[i] >= 0;
    const size_t k = has ? static_cast<size_t>(a.choice[i]) : 0;
    std::printf("%-28s %10lld %8lld %7.4f %7.4f %-8s %7.3f %10.3g\n", u.name.c_str(), static_cast<long long>(u.params),
                static_cast<long long>(u.tokens), u.freq, u.weight, has ? ao.candidates[k].name.c_str() : "float",
                has ? 8.0 * static_cast<double>(u.bytes[k]) / static_cast<double>(u.params) : 0.0,
                has ? u.error[k] : 0.0);
  }
  bool routed = false;
  for (const auto& u : a.units) routed = routed || u.routed;
  const std::string ravg = routed ? str(std::round(a.routed_avg_bpw * 1000) / 1000) : std::string("n/a (dense)");
  std::printf("allocation: %.3f bits per weight over the %s (budget %.3f), %.3f over all quantized linears, routed "
              "experts average %s, total cost %.4g (%s, %.3f s)\n",
              a.bpw_scope, a.all_weights ? "quantizable linears" : "routed experts", ao.bpw, a.bpw_linears,
              ravg.c_str(), a.total_cost, a.solution.solver.c_str(), a.solution.seconds);
  for (const auto& n : a.notes) std::printf("note: %s\n", n.c_str());
}

}  // namespace

void add_quantize(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "quantize", "Quantize a checkpoint: GGUF for llama.cpp, or GPTQ safetensors for transformers / vLLM");
  struct O {
    std::string model, out, format = "gguf", type = "q8_0", embed_type, output_type, name;
    std::vector<std::string> tensor_types;
    bool pure = false, dry_run = false, json = false, quiet = false, force = false;
    // importance / calibration
    std::string imatrix, calib_text;
    int64_t ctx = 256, chunks = 0;
    // gptq
    std::string method = "gptq";
    int bits = 4;
    int64_t group_size = 128, min_tokens = 16, block_size = 128;
    bool asym = false, act_order = false, static_groups = false, no_sequential = false, fused_widths = false;
    double damp = 0.01;
    std::string max_shard, float_dtype = "source";
    // mixed precision
    double bpw = 0;
    bool bpw_all = false;
    double alpha = 1.0, beta = 1.0, gamma = 2.0;
    std::string widths = "2,3,4,8", gguf_types = "q4_0,q4_1,q5_0,q5_1,q4_k,q5_k,q6_k,q8_0";
  };
  auto o = std::make_shared<O>();
  std::string types;
  for (const auto& t : gguf_file_types()) types += (types.empty() ? "" : ", ") + t.name;
  cmd->add_option("MODEL", o->model, "Model directory (Hugging Face safetensors checkpoint)")->required();
  cmd->add_option("-o,--output", o->out, "Output .gguf file (gguf) or directory (gptq)")->required();
  cmd->add_option("--format", o->format, "Output format: gguf or gptq")->capture_default_str();
  auto* g_gguf = cmd->add_option_group("GGUF");
  g_gguf->add_option("--type", o->type, "File type (llama-quantize's): " + types + " (q4_k = q4_k_m, q5_k = q5_k_m)")
      ->capture_default_str();
  g_gguf->add_option("--tensor-type", o->tensor_types,
                     "REGEX=TYPE: tensors whose GGUF name matches REGEX get TYPE (first match wins; repeatable)");
  g_gguf->add_option("--embed-type", o->embed_type, "Type of token_embd (an untied embedding)");
  g_gguf->add_option("--output-type", o->output_type, "Type of the output head (or the tied embedding)");
  g_gguf->add_option("--name", o->name, "general.name (default: the model directory's name)");
  g_gguf->add_flag("--pure", o->pure, "No per-tensor rules: every weight matrix gets --type (shape fallbacks apply)");
  g_gguf->add_option("--imatrix", o->imatrix,
                     "Calibration statistics from `moetool calibrate` (Σx² per input column, per expert): "
                     "importance-weighted rounding");
  auto* g_cal = cmd->add_option_group("Calibration");
  g_cal->add_option("--calib-text", o->calib_text,
                    "Calibration text: GPTQ Hessians / importance (GGUF: instead of --imatrix) / --bpw errors");
  g_cal->add_option("--ctx", o->ctx, "Tokens per calibration chunk")->capture_default_str();
  g_cal->add_option("--chunks", o->chunks, "Use at most this many chunks (0 = all)")->capture_default_str();
  auto* g_gptq = cmd->add_option_group("GPTQ");
  g_gptq->add_option("--method", o->method, "gptq, imatrix (RTN weighted by Σx²) or rtn")->capture_default_str();
  g_gptq->add_option("--bits", o->bits, "Bit width (2, 3, 4 or 8) where --bpw does not choose")->capture_default_str();
  g_gptq->add_option("--group-size", o->group_size, "Input columns per scale/zero: a power of two 16..1024, or -1 (whole row); a linear whose inputs it does not divide gets -1")
      ->capture_default_str();
  g_gptq->add_flag("--asym", o->asym, "Asymmetric zero points (default symmetric)");
  g_gptq->add_flag("--act-order", o->act_order, "GPTQ: columns by decreasing Hessian diagonal (desc_act)");
  g_gptq->add_flag("--static-groups", o->static_groups, "GPTQ with --act-order: group parameters fixed up front");
  g_gptq->add_option("--damp", o->damp, "GPTQ dampening, fraction of the mean Hessian diagonal")->capture_default_str();
  g_gptq->add_option("--block-size", o->block_size, "GPTQ lazy-update block")->capture_default_str();
  g_gptq->add_option("--min-tokens", o->min_tokens,
                     "Linears (experts) with fewer calibration tokens are rounded without importance, with a warning")
      ->capture_default_str();
  g_gptq->add_flag("--no-sequential", o->no_sequential,
                   "Calibrate every layer on the float model (default: on the already-quantized layers)");
  g_gptq->add_option("--max-shard-size", o->max_shard, "Split the safetensors files (e.g. 5GB)");
  g_gptq->add_option("--float-dtype", o->float_dtype,
                     "dtype of the tensors kept in float (embedding, output head, norms, routers): source, f16, bf16, "
                     "f32")
      ->capture_default_str();
  auto* g_mix = cmd->add_option_group("Mixed precision");
  g_mix->add_option("--bpw", o->bpw,
                    "Average bits per weight over the routed experts (or all linears with --bpw-all): widths chosen "
                    "by an exact knapsack from measured errors (needs --calib-text)");
  g_mix->add_flag("--bpw-all", o->bpw_all, "The --bpw budget covers every quantizable linear");
  g_mix->add_flag("--fused-widths", o->fused_widths,
                  "GPTQ: one width per group vLLM fuses (q/k/v, gate/up, every expert of a layer), so that vLLM "
                  "loads the mixed widths (without it, per-expert widths load in GPTQModel and moetool)");
  g_mix->add_option("--widths", o->widths, "GPTQ candidate bit widths for --bpw")->capture_default_str();
  g_mix->add_option("--gguf-types", o->gguf_types, "GGUF candidate types for --bpw")->capture_default_str();
  g_mix->add_option("--cost-alpha", o->alpha, "Exponent of an expert's activation frequency in its cost")
      ->capture_default_str();
  g_mix->add_option("--cost-beta", o->beta, "Exponent of an expert's mean routing weight in its cost")
      ->capture_default_str();
  g_mix->add_option("--cost-gamma", o->gamma, "Exponent of the measured error in a unit's cost (2: squared errors)")
      ->capture_default_str();
  cmd->add_flag("--dry-run", o->dry_run, "Print the plan (and the --bpw allocation) and the size without writing");
  cmd->add_flag("--json", o->json, "Print a JSON summary (with the plan) on stdout");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress lines");
  cmd->add_flag("--force", o->force, "Replace an existing output");
  cmd->callback([o, &ctx] {
    if (o->format != "gguf" && o->format != "gptq")
      fail("--format: unsupported output format '", o->format, "' (expected gguf or gptq)");
    const bool gguf = o->format == "gguf";
    auto progress = [o](const std::string& l) {
      if (!o->quiet) std::cerr << l << "\n";
    };
    if (o->bpw < 0 || (o->bpw > 0 && o->bpw > 16)) fail("--bpw ", o->bpw, ": expected a value in (0, 16]");
    if (o->bpw > 0 && o->calib_text.empty()) fail("--bpw needs --calib-text (errors are measured on calibration text)");
    if (!gguf && !o->imatrix.empty()) fail("--imatrix applies to --format gguf; GPTQ reads --calib-text");
    if (gguf && !o->imatrix.empty() && !o->calib_text.empty() && o->bpw == 0)
      fail("--imatrix and --calib-text both give importance; choose one");
    if (gguf && o->fused_widths) fail("--fused-widths applies to --format gptq (GGUF stores one type per tensor)");
    if (!gguf) {
      if (o->bits != 2 && o->bits != 3 && o->bits != 4 && o->bits != 8)
        fail("--bits ", o->bits, ": GPTQ checkpoints hold 2, 3, 4 or 8 bits (what transformers', GPTQModel's and vLLM's "
             "GPTQ kernels accept)");
      if (o->group_size != -1 && (o->group_size < 16 || o->group_size > 1024 || (o->group_size & (o->group_size - 1))))
        fail("--group-size ", o->group_size, ": expected -1 (one group per row) or a power of two in 16..1024");
      if (o->method != "gptq" && o->method != "imatrix" && o->method != "rtn")
        fail("--method '", o->method, "': expected gptq, imatrix or rtn");
      if (o->method != "rtn" && o->calib_text.empty())
        fail("--method ", o->method, " needs --calib-text (or use --method rtn)");
    }
    if (!o->dry_run && !o->force && file_exists(o->out) && !(is_directory(o->out) && !gguf))
      fail(o->out, ": output already exists (use --force to replace it)");

    Model m = Model::open(o->model);
    std::vector<std::vector<int32_t>> chunks;
    if (!o->calib_text.empty()) {
      auto tok = load_tokenizer(o->model);
      const int64_t maxpos = m.config().max_position_embeddings;
      if (maxpos > 0 && o->ctx > maxpos) fail("--ctx ", o->ctx, " exceeds the model's context of ", maxpos);
      chunks = make_chunks(*tok, read_file(o->calib_text), o->ctx, o->chunks, true, o->calib_text);
    }
    auto weights = safetensors_weights(m);

    // ---- mixed precision: measure, solve ----
    std::optional<Allocation> alloc;
    AllocOptions ao;
    ao.bpw = o->bpw;
    ao.all_weights = o->bpw_all;
    ao.alpha = o->alpha;
    ao.beta = o->beta;
    ao.gamma = o->gamma;
    ao.per_role_experts = gguf;
    ao.fused_groups = o->fused_widths && !gguf;
    if (o->bpw > 0) {
      if (gguf) {
        for (const auto& t : split_list(o->gguf_types)) {
          QuantCandidate qc;
          qc.ggml = true;
          qc.type = parse_gguf_tensor_type(t, "--gguf-types " + t);
          qc.name = ggml_type_name(qc.type);
          ao.candidates.push_back(qc);
        }
      } else {
        for (const auto& t : split_list(o->widths)) {
          QuantCandidate qc;
          try {
            qc.spec.bits = std::stoi(t);
          } catch (const std::exception&) {
            fail("--widths: '", t, "' is not a bit width");
          }
          if (qc.spec.bits != 2 && qc.spec.bits != 3 && qc.spec.bits != 4 && qc.spec.bits != 8)
            fail("--widths ", t, ": GPTQ checkpoints hold 2, 3, 4 or 8 bits");
          qc.spec.group_size = o->group_size;
          qc.spec.sym = !o->asym;
          check_int_spec(qc.spec, 32, o->group_size > 0 ? o->group_size : 32, "--widths " + t);
          qc.name = str("int", qc.spec.bits);
          ao.candidates.push_back(qc);
        }
      }
      if (ao.candidates.empty()) fail("--bpw: no candidate widths/types");
      Engine eng(weights, /*keep_layers=*/false);
      ao.progress = progress;
      alloc = solve_allocation(measure_alloc_units(eng, chunks, ao), ao);
      if (!o->json) print_alloc(*alloc, ao);
    }

    if (gguf) {
      GGUFExportOptions eo;
      eo.file_type = parse_gguf_file_type(o->type, "--type").name;
      if (!o->embed_type.empty()) eo.embed_type = parse_gguf_tensor_type(o->embed_type, "--embed-type");
      if (!o->output_type.empty()) eo.output_type = parse_gguf_tensor_type(o->output_type, "--output-type");
      for (const auto& r : o->tensor_types) {
        const auto eq = r.rfind('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == r.size())
          fail("--tensor-type: expected REGEX=TYPE, got '", r, "'");
        eo.tensor_types.push_back(
            {r.substr(0, eq), parse_gguf_tensor_type(r.substr(eq + 1), "--tensor-type " + r)});
      }
      eo.pure = o->pure;
      eo.overwrite = o->force;
      eo.name = o->name;
      eo.provenance = ctx.provenance.metadata();
      if (!o->dry_run) eo.progress = progress;
      // Importance: a statistics file, or calibration run here.
      std::shared_ptr<CalibrationStats> stats;
      if (!o->imatrix.empty()) {
        stats = std::make_shared<CalibrationStats>(CalibrationStats::load(o->imatrix));
      } else if (!chunks.empty()) {
        CalibrationOptions co;
        co.router = false;
        co.second_moments = true;
        co.progress = progress;
        Engine eng(weights, /*keep_layers=*/false);
        stats = std::make_shared<CalibrationStats>(calibrate(eng, chunks, co));
      }
      if (stats) {
        if (static_cast<int64_t>(stats->layers.size()) != m.config().num_layers)
          fail(o->imatrix, ": statistics for ", stats->layers.size(), " layers, the model has ",
               m.config().num_layers);
        eo.importance = [stats](Role r, int64_t l, int64_t e) -> std::optional<std::vector<float>> {
          if (l < 0 || l >= static_cast<int64_t>(stats->layers.size())) return std::nullopt;
          const auto& in = stats->layers[static_cast<size_t>(l)].inputs;
          auto it = in.find(LinearKey{r, l, e});
          if (it == in.end() || it->second.count == 0) return std::nullopt;
          return std::vector<float>(it->second.sum_sq.begin(), it->second.sum_sq.end());
        };
      }
      if (alloc) {
        const GGUFExportPlan p0 = plan_gguf_export(m, eo);
        for (const auto& t : p0.tensors) {
          if (!t.quantizable || t.layer < 0) continue;
          for (size_t i = 0; i < alloc->units.size(); ++i) {
            const auto& u = alloc->units[i];
            if (u.layer != t.layer || u.roles.size() != 1 || u.roles[0] != t.role || alloc->choice[i] < 0) continue;
            eo.allocation[t.name] = ao.candidates[static_cast<size_t>(alloc->choice[i])].type;
          }
        }
      }
      const GGUFExportPlan p = o->dry_run ? plan_gguf_export(m, eo) : export_gguf(m, o->out, eo);
      if (o->json) {
        auto j = plan_json(p, o->out, !o->dry_run);
        j["importance"] = stats ? (o->imatrix.empty() ? o->calib_text : o->imatrix) : "";
        if (alloc) j["allocation"] = alloc_json(*alloc, ao);
        std::cout << j.dump(2) << "\n";
        return;
      }
      if (o->dry_run) {
        std::printf("%-36s %-22s %-8s %-6s %12s  %s\n", "tensor", "ne", "source", "type", "bytes", "why");
        for (const auto& t : p.tensors)
          std::printf("%-36s %-22s %-8s %-6s %12llu  %s\n", t.name.c_str(), ne_text(t.ne).c_str(),
                      t.source_dtype.c_str(), ggml_type_name(t.type), static_cast<unsigned long long>(t.bytes),
                      t.why.c_str());
      }
      std::printf("%s %s: %s (%s) as GGUF %s, %zu tensors, %.2f MiB (from %.2f MiB), %.3f bits per weight (%.3f "
                  "over the weight matrices)%s\n",
                  o->dry_run ? "would write" : "wrote", o->out.c_str(), p.family.c_str(), p.arch.c_str(),
                  p.file_type.name.c_str(), p.tensors.size(), static_cast<double>(p.bytes) / (1 << 20),
                  static_cast<double>(p.source_bytes) / (1 << 20), p.bpw(), p.bpw_quantizable(),
                  stats ? ", importance-weighted" : "");
      return;
    }

    // ---- GPTQ ----
    IntQuantOptions io;
    io.spec.bits = o->bits;
    io.spec.group_size = o->group_size;
    io.spec.sym = !o->asym;
    io.method = o->method;
    io.gptq.damp = o->damp;
    io.gptq.act_order = o->act_order;
    io.gptq.static_groups = o->static_groups;
    io.gptq.block_size = o->block_size;
    io.min_tokens = o->min_tokens;
    io.sequential = !o->no_sequential;
    io.fused_groups = o->fused_widths;
    io.overwrite = o->force;
    if (o->float_dtype != "source") {
      const auto d = parse_dtype(o->float_dtype == "f16" ? "F16" : o->float_dtype == "bf16" ? "BF16"
                                 : o->float_dtype == "f32" ? "F32" : "?");
      if (!d) fail("--float-dtype '", o->float_dtype, "': expected source, f16, bf16 or f32");
      io.float_dtype = *d;
    }
    if (!o->max_shard.empty()) io.max_shard_bytes = parse_byte_size(o->max_shard, "--max-shard-size");
    io.metadata = ctx.provenance.metadata();
    io.quantizer = "moetool:" + ctx.provenance.version;
    io.progress = progress;
    check_int_spec(io.spec, 32, o->group_size > 0 ? o->group_size : 32, "--bits/--group-size");
    if (io.method != "rtn" && chunks.empty())
      fail("--method ", io.method, " needs --calib-text (or use --method rtn)");
    if (alloc)
      for (size_t i = 0; i < alloc->units.size(); ++i) {
        const auto& u = alloc->units[i];
        // No candidate fits the unit: it stays float, as the allocation counted it.
        const int bits = alloc->choice[i] < 0 ? 0 : ao.candidates[static_cast<size_t>(alloc->choice[i])].spec.bits;
        const int64_t E = m.config().moe ? m.config().moe->num_experts : 0;
        for (Role r : u.roles) {
          if (u.expert == -2)  // every routed expert of the layer
            for (int64_t e = 0; e < E; ++e) io.bits[LinearKey{r, u.layer, e}] = bits;
          else
            io.bits[LinearKey{r, u.layer, u.expert}] = bits;
        }
      }
    if (o->dry_run) {
      // Sizes without writing: every quantizable linear at its width.
      uint64_t qb = 0;
      int64_t qp = 0;
      for (const auto& s : m.family().tensors(m.config())) {
        if (!int_quantizable_role(s.role) || s.shape.size() != 2) continue;
        auto b = io.bits.find(LinearKey{s.role, s.layer, s.expert});
        IntQuantSpec sp = io.spec;
        sp.bits = b != io.bits.end() ? b->second : io.spec.bits;
        qb += int_quant_bytes(sp, s.shape[0], s.shape[1]);
        qp += s.shape[0] * s.shape[1];
      }
      if (o->json) {
        nlohmann::ordered_json j;
        j["output"] = o->out;
        j["written"] = false;
        j["format"] = "gptq";
        j["quantized_params"] = qp;
        j["quantized_bytes"] = qb;
        j["bpw_quantized"] = qp ? 8.0 * static_cast<double>(qb) / static_cast<double>(qp) : 0.0;
        if (alloc) j["allocation"] = alloc_json(*alloc, ao);
        std::cout << j.dump(2) << "\n";
      } else {
        std::printf("would write %s: GPTQ %s, %lld quantized weights in %.2f MiB, %.3f bits per weight\n",
                    o->out.c_str(), io.method.c_str(), static_cast<long long>(qp),
                    static_cast<double>(qb) / (1 << 20), qp ? 8.0 * static_cast<double>(qb) / qp : 0.0);
      }
      return;
    }
    const IntQuantReport rep = quantize_to_gptq(m, o->out, chunks, io);
    for (const auto& w : rep.warnings) std::cerr << "moetool: warning: " << w << "\n";
    if (o->json) {
      nlohmann::ordered_json j;
      j["output"] = rep.output;
      j["written"] = true;
      j["format"] = "gptq";
      j["method"] = rep.method;
      j["bits"] = rep.spec.bits;
      j["group_size"] = rep.spec.group_size;
      j["sym"] = rep.spec.sym;
      j["calibration_tokens"] = rep.calib_tokens;
      j["params"] = rep.params;
      j["bytes"] = rep.bytes;
      j["quantized_params"] = rep.quantized_params;
      j["quantized_bytes"] = rep.quantized_bytes;
      j["bpw"] = rep.bpw();
      j["bpw_quantized"] = rep.bpw_quantized();
      j["seconds"] = rep.seconds;
      j["warnings"] = rep.warnings;
      auto& ls = j["linears"] = nlohmann::ordered_json::array();
      for (const auto& r : rep.linears) {
        nlohmann::ordered_json e;
        e["module"] = r.module;
        e["layer"] = r.layer;
        e["expert"] = r.expert;
        e["bits"] = r.bits;
        e["method"] = r.method;
        e["tokens"] = r.tokens;
        if (r.rel_error >= 0) e["rel_error"] = r.rel_error;
        e["bytes"] = r.bytes;
        ls.push_back(e);
      }
      // Calibration coverage per routed expert.
      auto& cov = j["expert_coverage"] = nlohmann::ordered_json::array();
      for (const auto& r : rep.linears)
        if (r.role == Role::ExpertGate)
          cov.push_back({{"layer", r.layer}, {"expert", r.expert}, {"tokens", r.tokens}, {"method", r.method}});
      if (alloc) j["allocation"] = alloc_json(*alloc, ao);
      std::cout << j.dump(2) << "\n";
      return;
    }
    int64_t experts = 0, uncovered = 0;
    for (const auto& r : rep.linears)
      if (r.role == Role::ExpertGate) {
        ++experts;
        uncovered += r.method.rfind("rtn (fallback", 0) == 0;
      }
    std::printf("wrote %s: GPTQ (%s) int%d g%lld %s, %lld of %lld weights quantized, %.2f MiB, %.3f bits per "
                "quantized weight (%.3f over all tensors), %s%s, %.1f s\n",
                rep.output.c_str(), rep.method.c_str(), rep.spec.bits, static_cast<long long>(rep.spec.group_size),
                rep.spec.sym ? "sym" : "asym", static_cast<long long>(rep.quantized_params),
                static_cast<long long>(rep.params), static_cast<double>(rep.bytes) / (1 << 20), rep.bpw_quantized(),
                rep.bpw(), rep.method == "rtn" ? "no calibration" : str(rep.calib_tokens, " calibration tokens").c_str(),
                experts && rep.method != "rtn"
                    ? str(", ", experts - uncovered, "/", experts, " experts covered by calibration").c_str()
                    : "",
                rep.seconds);
  });
}

}  // namespace moetool::cli
