// cli/cmd_quantize.cc — `moetool quantize MODEL -o OUT --format gguf|gptq|fp8`: a Hugging Face
// checkpoint as a GGUF file llama.cpp runs (ggml block types, llama-quantize's per-tensor rules,
// importance from calibration), as a GPTQ checkpoint transformers / vLLM load (GPTQ, importance
// or RTN rounding, 2–8 bits; or the same in compressed-tensors' pack-quantized layout), as block
// FP8 (E4M3, a scale per --fp8-block), or as the BF16 model, DF11-coded (lossless) or plain. `--bpw B` chooses every expert's / linear's storage with the exact
// knapsack of compress/bit_alloc.h; --dry-run prints the plan (and the allocation) without writing.
// The job is compress/quantize_job.h; this file declares its options and prints its result.
#include <cmath>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "compress/quantize_gguf.h"
#include "compress/quantize_job.h"
#include "core/error.h"

namespace moetool::cli {

namespace {

std::string ne_text(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

// The keys every JSON summary starts with.
nlohmann::ordered_json summary_json(const std::string& out, bool written, const char* format) {
  return {{"output", out}, {"written", written}, {"format", format}};
}

nlohmann::ordered_json plan_json(const GGUFExportPlan& p, const std::string& out, bool written) {
  nlohmann::ordered_json j = summary_json(out, written, "gguf");
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
  for (const auto& t : p.tensors)
    ts.push_back({{"name", t.name}, {"ne", t.ne}, {"source_dtype", t.source_dtype},
                  {"type", ggml_type_name(t.type)}, {"bytes", t.bytes}, {"why", t.why}});
  return j;
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
  j["sensitivity"] = ao.sensitivity;
  j["used"] = a.used;
  auto& tr = j["trials"] = nlohmann::ordered_json::array();
  for (const auto& t : a.trials) tr.push_back({{"name", t.name}, {"bpw_scope", t.bpw_scope}, {"calib_kld", t.kld}});
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
    char err[32] = "-";  // not measured: outside the budget's scope (--sensitivity kld)
    if (has && !std::isnan(u.error[k])) std::snprintf(err, sizeof err, "%.3g", u.error[k]);
    std::printf("%-28s %10lld %8lld %7.4f %7.4f %-8s %7.3f %10s\n", u.name.c_str(), static_cast<long long>(u.params),
                static_cast<long long>(u.tokens), u.freq, u.weight, has ? ao.candidates[k].name.c_str() : "float",
                has ? 8.0 * static_cast<double>(u.bytes[k]) / static_cast<double>(u.params) : 0.0, err);
  }
  bool routed = false;
  for (const auto& u : a.units) routed = routed || u.routed;
  const std::string ravg = routed ? str(std::round(a.routed_avg_bpw * 1000) / 1000) : std::string("n/a (dense)");
  std::printf("allocation: %.3f bits per weight over the %s (budget %.3f), %.3f over all quantized linears, routed "
              "experts average %s, total cost %.4g (%s, %.3f s)\n",
              a.bpw_scope, a.all_weights ? "quantizable linears" : "routed experts", ao.bpw, a.bpw_linears,
              ravg.c_str(), a.total_cost, a.solution.solver.c_str(), a.solution.seconds);
  for (const auto& t : a.trials)
    std::printf("check: %-14s %.3f bits per weight, KLD %.5f on the calibration text%s\n", t.name.c_str(), t.bpw_scope,
                t.kld, t.name == a.used ? " (used)" : "");
  for (const auto& n : a.notes) std::printf("note: %s\n", n.c_str());
}

// How the matrices were encoded, for the summary line.
std::string encoded_note(const quantize::Result& r, const quantize::Options& o) {
  const std::string m = quantize::method_of(o);
  const std::string name = m == "autoround" ? "AutoRound" : "GPTQ";
  if (!r.gguf_gptq.empty()) return str(", ", name, "-encoded (", r.gguf_gptq.size(), " matrices)");
  if (o.dry_run && (m == "gptq" || m == "autoround")) return str(", ", name, "-encoded where the type has a level grid");
  return r.importance.empty() ? "" : ", importance-weighted";
}

void print_gguf(const quantize::Result& r, const quantize::Options& o, bool json) {
  const GGUFExportPlan& p = *r.gguf;
  if (json) {
    auto j = plan_json(p, o.output, r.written);
    j["importance"] = r.importance;
    j["method"] = quantize::method_of(o);
    if (!r.gguf_gptq.empty()) {
      auto& g = j["gptq"] = nlohmann::ordered_json::array();
      for (const auto& e : r.gguf_gptq)
        g.push_back({{"tensor", e.tensor}, {"expert", e.expert}, {"type", ggml_type_name(e.type)}, {"method", e.method},
                     {"tokens", e.tokens}, {"pooled", e.pooled}, {"rel_error", e.rel_error}});
    }
    j["warnings"] = r.warnings;
    if (r.allocation) j["allocation"] = alloc_json(*r.allocation, r.alloc_options);
    std::cout << j.dump(2) << "\n";
    return;
  }
  if (o.dry_run) {
    std::printf("%-36s %-22s %-8s %-6s %12s  %s\n", "tensor", "ne", "source", "type", "bytes", "why");
    for (const auto& t : p.tensors)
      std::printf("%-36s %-22s %-8s %-6s %12llu  %s\n", t.name.c_str(), ne_text(t.ne).c_str(),
                  t.source_dtype.c_str(), ggml_type_name(t.type), static_cast<unsigned long long>(t.bytes),
                  t.why.c_str());
  }
  std::printf("%s %s: %s (%s) as GGUF %s, %zu tensors, %.2f MiB (from %.2f MiB), %.3f bits per weight (%.3f "
              "over the weight matrices)%s\n",
              o.dry_run ? "would write" : "wrote", o.output.c_str(), p.family.c_str(), p.arch.c_str(),
              p.file_type.name.c_str(), p.tensors.size(), static_cast<double>(p.bytes) / (1 << 20),
              static_cast<double>(p.source_bytes) / (1 << 20), p.bpw(), p.bpw_quantizable(),
              encoded_note(r, o).c_str());
  for (const auto& w : r.warnings) std::fprintf(stderr, "moetool: warning: %s\n", w.c_str());
}

void print_gptq_sizes(const quantize::Result& r, const quantize::Options& o, bool json) {
  const quantize::GptqSizes& s = *r.gptq_sizes;
  if (json) {
    nlohmann::ordered_json j = summary_json(o.output, false, o.format.c_str());
    j["quantized_params"] = s.params;
    j["quantized_bytes"] = s.bytes;
    j["bpw_quantized"] = s.bpw();
    if (r.allocation) j["allocation"] = alloc_json(*r.allocation, r.alloc_options);
    std::cout << j.dump(2) << "\n";
  } else {
    std::printf("would write %s: GPTQ %s, %lld quantized weights in %.2f MiB, %.3f bits per weight\n",
                o.output.c_str(), s.method.c_str(), static_cast<long long>(s.params),
                static_cast<double>(s.bytes) / (1 << 20), s.bpw());
  }
}

nlohmann::ordered_json gptq_json(const quantize::Result& r, const std::string& format) {
  const IntQuantReport& rep = *r.gptq;
  nlohmann::ordered_json j = summary_json(rep.output, true, format.c_str());
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
  for (const auto& l : rep.linears) {
    nlohmann::ordered_json e = {{"module", l.module}, {"layer", l.layer},   {"expert", l.expert},
                                {"bits", l.bits},     {"method", l.method}, {"tokens", l.tokens}};
    if (l.rel_error >= 0) e["rel_error"] = l.rel_error;
    if (l.factor) e["lowrank_factor"] = true;  // a factor of a low-rank checkpoint (module = its tensor name)
    e["bytes"] = l.bytes;
    ls.push_back(e);
  }
  // Calibration coverage per routed expert.
  auto& cov = j["expert_coverage"] = nlohmann::ordered_json::array();
  for (const auto& l : rep.linears)
    if (l.role == Role::ExpertGate)
      cov.push_back({{"layer", l.layer},
                     {"expert", l.expert},
                     {"tokens", l.tokens},
                     {"share", rep.calib_tokens ? static_cast<double>(l.tokens) / rep.calib_tokens : 0.0},
                     {"pooled_tokens", l.pooled},
                     {"method", l.method}});
  if (r.allocation) j["allocation"] = alloc_json(*r.allocation, r.alloc_options);
  return j;
}

void print_gptq(const quantize::Result& r, const std::string& format, bool json) {
  const IntQuantReport& rep = *r.gptq;
  for (const auto& w : rep.warnings) std::cerr << "moetool: warning: " << w << "\n";
  if (json) {
    std::cout << gptq_json(r, format).dump(2) << "\n";
    return;
  }
  int64_t experts = 0, uncovered = 0, pooled = 0;
  for (const auto& l : rep.linears)
    if (l.role == Role::ExpertGate) {
      ++experts;
      uncovered += l.method.rfind("rtn (fallback", 0) == 0 || l.pooled > 0;
      pooled += l.pooled > 0;
    }
  std::printf("wrote %s: %s (%s) int%d g%lld %s, %lld of %lld weights quantized, %.2f MiB, %.3f bits per "
              "quantized weight (%.3f over all tensors), %s%s, %.1f s\n",
              rep.output.c_str(), format == "gptq" ? "GPTQ" : "compressed-tensors pack-quantized", rep.method.c_str(),
              rep.spec.bits, static_cast<long long>(rep.spec.group_size),
              rep.spec.sym ? "sym" : "asym", static_cast<long long>(rep.quantized_params),
              static_cast<long long>(rep.params), static_cast<double>(rep.bytes) / (1 << 20), rep.bpw_quantized(),
              rep.bpw(), rep.method == "rtn" ? "no calibration" : str(rep.calib_tokens, " calibration tokens").c_str(),
              experts && rep.method != "rtn"
                  ? str(", ", experts - uncovered, "/", experts, " experts covered by calibration",
                        pooled ? str(" (", pooled, " with pooled Hessians)") : std::string())
                        .c_str()
                  : "",
              rep.seconds);
}

void print_fp8(const quantize::Result& r, const quantize::Options& o, bool json) {
  const FP8QuantReport& rep = *r.fp8;
  for (const auto& w : rep.warnings) std::cerr << "moetool: warning: " << w << "\n";
  int64_t n8 = 0;
  for (const auto& l : rep.linears) n8 += l.fp8;
  if (json) {
    nlohmann::ordered_json j = summary_json(o.output, r.written, "fp8");
    if (o.fp8_channel) j["scales"] = "channel";
    else j["block"] = {rep.block_rows, rep.block_cols};
    j["params"] = rep.params;
    j["bytes"] = rep.bytes;
    j["quantized_params"] = rep.quantized_params;
    j["quantized_bytes"] = rep.quantized_bytes;
    j["bpw"] = rep.bpw();
    j["bpw_quantized"] = rep.bpw_quantized();
    j["max_rel_error"] = rep.max_rel_error;
    j["seconds"] = rep.seconds;
    j["warnings"] = rep.warnings;
    auto& ls = j["linears"] = nlohmann::ordered_json::array();
    for (const auto& l : rep.linears) {
      nlohmann::ordered_json e = {{"module", l.module}, {"layer", l.layer}, {"expert", l.expert},
                                  {"fp8", l.fp8},       {"bytes", l.bytes}};
      if (l.fp8 && r.written) e["rel_error"] = l.rel_error;
      if (!l.note.empty()) e["note"] = l.note;
      ls.push_back(e);
    }
    std::cout << j.dump(2) << "\n";
    return;
  }
  if (o.dry_run)
    for (const auto& l : rep.linears)
      std::printf("%-56s [%lld, %lld] %s\n", l.module.c_str(), static_cast<long long>(l.rows),
                  static_cast<long long>(l.cols), l.fp8 ? "fp8" : l.note.c_str());
  const std::string layout = o.fp8_channel ? std::string("compressed-tensors float-quantized FP8 (E4M3, a scale per "
                                                          "output channel)")
                                            : str("block FP8 (E4M3, ", rep.block_rows, "x", rep.block_cols, " blocks)");
  std::printf("%s %s: %s, %lld of %zu linears, %lld of %lld weights in FP8, %.2f MiB, "
              "%.3f bits per FP8 weight with scales (%.3f over all tensors)%s\n",
              o.dry_run ? "would write" : "wrote", o.output.c_str(), layout.c_str(), static_cast<long long>(n8),
              rep.linears.size(),
              static_cast<long long>(rep.quantized_params), static_cast<long long>(rep.params),
              static_cast<double>(rep.bytes) / (1 << 20), rep.bpw_quantized(), rep.bpw(),
              o.dry_run ? "" : str(", max relative weight error ", rep.max_rel_error, ", ", rep.seconds, " s").c_str());
}

void print_df11(const quantize::Result& r, const quantize::Options& o, bool json) {
  const DF11Report& rep = *r.df11;
  if (json) {
    nlohmann::ordered_json j = summary_json(o.output, r.written, o.format.c_str());
    j["block"] = rep.block;
    j["bf16_bytes"] = rep.bf16_bytes;
    j["bytes"] = rep.bytes;
    j["ratio"] = rep.ratio();
    j["rounded_from_other_dtypes"] = rep.rounded_from_f32;
    j["seconds"] = rep.seconds;
    auto& ts = j["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : rep.tensors)
      ts.push_back({{"name", t.name}, {"values", t.n}, {"bf16_bytes", t.bf16_bytes}, {"bytes", t.stored_bytes},
                    {"ratio", t.ratio()}, {"exponent_bits", t.exponent_bits}});
    std::cout << j.dump(2) << "\n";
    return;
  }
  if (o.dry_run)
    for (const auto& t : rep.tensors)
      std::printf("%-56s %10lld values  %6.3f of BF16  exponent %.3f bits\n", t.name.c_str(),
                  static_cast<long long>(t.n), t.ratio(), t.exponent_bits);
  std::printf("%s %s: the BF16 model%s, %.2f MiB (BF16 %.2f MiB, ratio %.4f)%s%s\n", o.dry_run ? "would write" : "wrote",
              o.output.c_str(), rep.coded ? str(", DF11-coded (", rep.tensors.size(), " tensors, blocks of ", rep.block, ")").c_str() : "",
              static_cast<double>(rep.bytes) / (1 << 20), static_cast<double>(rep.bf16_bytes) / (1 << 20), rep.ratio(),
              rep.rounded_from_f32 ? str(", ", rep.rounded_from_f32, " tensors rounded to BF16 from their dtype").c_str() : "",
              o.dry_run ? "" : str(", ", rep.seconds, " s").c_str());
}

}  // namespace

void add_quantize(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand(
      "quantize", "Quantize a checkpoint: GGUF for llama.cpp, GPTQ or block-FP8 safetensors for transformers / vLLM");
  struct Flags : quantize::Options {
    bool json = false, quiet = false;
  };
  auto o = std::make_shared<Flags>();
  std::string types;
  for (const auto& t : gguf_file_types()) types += (types.empty() ? "" : ", ") + t.name;
  cmd->add_option("MODEL", o->model, "Model directory (Hugging Face safetensors checkpoint), or a GGUF file to requantize (--format gguf; F32/F16/BF16 GGUF are lossless sources, quantized ones warn)")->required();
  cmd->add_option("-o,--output", o->output, "Output .gguf file (gguf) or directory (gptq, compressed-tensors, fp8)")
      ->required();
  cmd->add_option("--format", o->format,
                  "Output format: gguf, gptq, compressed-tensors (vLLM's pack-quantized int; the GPTQ options apply), "
                  "fp8, df11 (the BF16 model, lossless entropy-coded: ~70 % of its bytes) or bf16 (the plain BF16 model)")
      ->capture_default_str();
  cmd->add_option("--df11-block", o->df11_block, "DF11: values per independently decodable block")
      ->capture_default_str();
  cmd->add_flag("--fp8-channel", o->fp8_channel,
                "FP8: one scale per output channel, written as compressed-tensors float-quantized (llm-compressor's "
                "FP8 weight-only layout, vLLM W8A16) instead of block FP8");
  cmd->add_option("--fp8-block", o->fp8_block,
                  "FP8: ROWSxCOLS weights per scale (DeepSeek-V3 / Qwen3 FP8 use 128x128); linears it does not "
                  "divide stay float")
      ->capture_default_str();
  auto* g_gguf = cmd->add_option_group("GGUF");
  g_gguf->add_option("--type", o->type, "File type (llama-quantize's): " + types + " (q4_k = q4_k_m, q5_k = q5_k_m)")
      ->capture_default_str();
  g_gguf->add_option("--tensor-type", o->tensor_types,
                     "REGEX=TYPE: tensors whose GGUF name matches REGEX get TYPE (first match wins; repeatable)");
  g_gguf->add_option("--embed-type", o->embed_type, "Type of token_embd (an untied embedding)");
  g_gguf->add_option("--output-type", o->output_type, "Type of the output head (or the tied embedding)");
  g_gguf->add_option("--name", o->name, "general.name (default: the model directory's name; a GGUF input's own)");
  g_gguf->add_flag("--pure", o->pure, "No per-tensor rules: every weight matrix gets --type (shape fallbacks apply)");
  g_gguf->add_option("--imatrix", o->imatrix,
                     "Calibration statistics from `moetool calibrate` (Σx² per input column, per expert): "
                     "importance-weighted rounding");
  auto* g_cal = cmd->add_option_group("Calibration");
  g_cal->add_option("--calib-text", o->calib_text,
                    "Calibration text: GPTQ Hessians / importance (GGUF: instead of --imatrix) / --bpw errors");
  add_chunk_options(g_cal, o->ctx, o->chunks, "Tokens per calibration chunk", "Use at most this many chunks (0 = all)");
  auto* g_gptq = cmd->add_option_group("GPTQ");
  g_gptq->add_option("--method", o->method, "gptq, imatrix (alias importance: RTN weighted by Σx²), rtn, or autoround (gguf). Default: gptq for --format gptq / compressed-tensors; "
                     "for gguf imatrix with --imatrix or --calib-text, else rtn. gguf with autoround: rounding offsets and block scales "
                     "tuned by signed gradient descent on each matrix's output error. gguf with gptq: GPTQ error feedback "
                     "over ggml's block quantizers (same types, same blocks; needs --calib-text)");
  g_gptq->add_option("--bits", o->bits, "Bit width (2, 3, 4 or 8) where --bpw does not choose")->capture_default_str();
  g_gptq->add_option("--base-bits", o->base_bits,
                     "A low-rank checkpoint's delta bases (shared by every expert of a layer): their width (default --bits)");
  g_gptq->add_option("--skip", o->skip, "Keep modules (or low-rank factors) whose name matches this regex in float "
                                        "(repeatable), e.g. 'self_attn' (also for fp8)");
  g_gptq->add_option("--group-size", o->group_size, "Input columns per scale/zero: a power of two 16..1024, or -1 (whole row); a linear whose inputs it does not divide gets -1")
      ->capture_default_str();
  g_gptq->add_flag("--asym", o->asym, "Asymmetric zero points (default symmetric)");
  g_gptq->add_flag("--act-order", o->act_order, "GPTQ: columns by decreasing Hessian diagonal (desc_act; gguf: whole ggml blocks)");
  g_gptq->add_flag("--static-groups", o->static_groups, "GPTQ with --act-order: group parameters fixed up front");
  g_gptq->add_option("--damp", o->damp, "GPTQ dampening, fraction of the mean Hessian diagonal")->capture_default_str();
  g_gptq->add_option("--block-size", o->block_size, "GPTQ lazy-update block")->capture_default_str();
  g_gptq->add_option("--iters", o->iters, "AutoRound: signed-gradient steps per matrix")->capture_default_str();
  g_gptq->add_option("--lr", o->lr, "AutoRound: first step size, decaying linearly to 0 (0: 1/--iters)")->capture_default_str();
  g_gptq->add_option("--pool-rows", o->pool_rows,
                     "GPTQ: an expert with fewer than --min-tokens calibration tokens gets its Hessian from them plus "
                     "this many pooled tokens of its layer run through it (0: rounded without importance instead)")
      ->capture_default_str();
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
  g_mix->add_option("--sensitivity", o->sensitivity,
                    "A unit's measured sensitivity: kld (end-to-end KLD on the calibration text with the unit alone "
                    "quantized) or output (its relative output error, costed with --cost-*)")
      ->capture_default_str();
  g_mix->add_option("--kld-tokens", o->kld_tokens, "Calibration tokens the --bpw KLDs are measured on")
      ->capture_default_str();
  g_mix->add_option("--kld-anchor", o->kld_anchor,
                    "Where --sensitivity kld measures each unit: float (alone in the float model) or both (also "
                    "within the uniform width of size nearest the budget: two solutions, the check keeps the better)")
      ->capture_default_str();
  g_mix->add_flag("--no-alloc-check", o->no_alloc_check,
                  "Do not measure the solved allocation against every uniform width within the budget (by default "
                  "the one with the lowest calibration KLD is used)");
  g_mix->add_option("--cost-alpha", o->alpha, "Exponent of an expert's activation frequency in its cost")
      ->capture_default_str();
  g_mix->add_option("--cost-beta", o->beta, "Exponent of an expert's mean routing weight in its cost")
      ->capture_default_str();
  g_mix->add_option("--cost-gamma", o->gamma, "Exponent of the measured error in a unit's cost (2: squared errors)")
      ->capture_default_str();
  cmd->add_flag("--dry-run", o->dry_run, "Print the plan (and the --bpw allocation) and the size without writing");
  add_json_quiet_flags(cmd, o->json, o->quiet, "Print a JSON summary (with the plan) on stdout");
  cmd->add_flag("--force", o->force, "Replace an existing output");
  cmd->callback([o, &ctx] {
    const bool json = o->json;
    o->provenance = ctx.provenance;
    o->progress = progress_sink(o->quiet);
    if (!json) o->on_allocation = print_alloc;
    const quantize::Result r = quantize::run(*o);
    if (r.fp8)
      print_fp8(r, *o, json);
    else if (r.df11)
      print_df11(r, *o, json);
    else if (r.gguf)
      print_gguf(r, *o, json);
    else if (r.gptq_sizes)
      print_gptq_sizes(r, *o, json);
    else
      print_gptq(r, o->format, json);
  });
}

}  // namespace moetool::cli
