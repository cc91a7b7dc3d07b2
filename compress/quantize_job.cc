// compress/quantize_job.cc — `moetool quantize` as a library call (see quantize_job.h): the options
// checked, calibration chunks cut, the --bpw allocation measured and solved, then the GGUF or the
// GPTQ pass run (or planned) with it; or the FP8 pass, which needs none of that.
#include "compress/quantize_job.h"

#include "compress/bit_alloc_kld.h"

#include <memory>
#include <regex>
#include <sstream>
#include <tuple>

#include "compress/quantize_gguf.h"
#include "compress/quantize_job_internal.h"
#include "compress/quantize_lowrank.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/file_kind.h"
#include "engine/calibrate_job.h"
#include "engine/text.h"

namespace moetool::quantize {
std::string method_of(const Options& o) {
  if (o.method == "importance") return "imatrix";
  if (!o.method.empty()) return o.method;
  if (o.format != "gguf") return "gptq";
  return o.imatrix.empty() && o.calib_text.empty() ? "rtn" : "imatrix";
}

namespace {

using Chunks = std::vector<std::vector<int32_t>>;

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ','))
    if (!x.empty()) out.push_back(x);
  return out;
}

// The checks that need no file, and the one of the output, in the command's order.
// --fp8-block "RxC" (rows x columns of one scale).
std::pair<int64_t, int64_t> parse_fp8_block(const std::string& s) {
  const auto x = s.find('x');
  try {
    size_t a = 0, b = 0;
    if (x != std::string::npos) {
      const long long r = std::stoll(s.substr(0, x), &a), c = std::stoll(s.substr(x + 1), &b);
      if (a == x && b == s.size() - x - 1 && r > 0 && c > 0 && r <= 65536 && c <= 65536) return {r, c};
    }
  } catch (const std::exception&) {
  }
  fail("--fp8-block '", s, "': expected ROWSxCOLS of positive integers, e.g. 128x128");
}

// FP8, DF11 and BF16 need none of the GPTQ / GGUF / mixed-precision options.
void check_plain_options(const Options& o) {
  const Options d;
  if (o.format == "fp8") parse_fp8_block(o.fp8_block);
  else if (o.fp8_block != d.fp8_block) fail("--fp8-block applies to --format fp8");
  if (o.fp8_channel && o.format != "fp8") fail("--fp8-channel applies to --format fp8");
  if (o.fp8_channel && o.fp8_block != d.fp8_block)
    fail("--fp8-channel and --fp8-block ", o.fp8_block, ": one scale per channel has no block; give one of them");
  if (o.format != "df11" && o.df11_block != d.df11_block) fail("--df11-block applies to --format df11");
  if (o.format == "df11" && (o.df11_block < 256 || o.df11_block > (int64_t{1} << 30)))
    fail("--df11-block ", o.df11_block, ": expected 256 .. 2^30 values per block");
  const std::string why = o.format == "fp8" ? "block FP8 rounds every weight to E4M3 with one scale per --fp8-block; it "
                                              "needs no calibration"
                                            : "it writes the BF16 model" +
                                                  std::string(o.format == "df11" ? ", losslessly coded" : "");
  const std::pair<bool, const char*> other[] = {
      {o.bpw > 0, "--bpw"}, {!o.calib_text.empty(), "--calib-text"}, {!o.imatrix.empty(), "--imatrix"},
      {o.bits != d.bits, "--bits"}, {o.base_bits != 0, "--base-bits"}, {o.method != d.method, "--method"},
      {o.group_size != d.group_size, "--group-size"}, {o.asym, "--asym"}, {o.act_order, "--act-order"},
      {o.fused_widths, "--fused-widths"}, {o.type != d.type, "--type"}, {o.iters != d.iters, "--iters"},
      {o.lr != d.lr, "--lr"},
      {o.format != "fp8" && o.float_dtype != d.float_dtype, "--float-dtype"}};
  for (const auto& [set, flag] : other)
    if (set) fail(flag, " does not apply to --format ", o.format, " (", why, ")");
  for (const auto& r : o.skip) try {
      std::regex re(r);
    } catch (const std::regex_error& e) {
      fail("--skip '", r, "': not a regular expression (", e.what(), ")");
    }
}

}  // namespace

void check_options(const Options& o) {
  if (o.format != "gguf" && o.format != "gptq" && o.format != "fp8" && o.format != "compressed-tensors" &&
      o.format != "df11" && o.format != "bf16")
    fail("--format: unsupported output format '", o.format,
         "' (expected gguf, gptq, compressed-tensors, fp8, df11 or bf16)");
  if (o.format == "compressed-tensors") {
    const std::pair<bool, const char*> gptq_only[] = {
        {o.asym, "--asym"}, {o.act_order, "--act-order"}, {o.base_bits != 0, "--base-bits"}};
    for (const auto& [set, flag] : gptq_only)
      if (set) fail(flag, " is not supported with --format compressed-tensors (moetool writes symmetric "
                    "pack-quantized weights with groups in column order; use --format gptq)");
  }
  if (o.format == "fp8" || o.format == "df11" || o.format == "bf16") {
    check_plain_options(o);
    if (o.format != "fp8" && !o.skip.empty()) fail("--skip does not apply to --format ", o.format);
    if (!o.dry_run && !o.force && file_exists(o.output) && !is_directory(o.output))
      fail(o.output, ": output already exists (use --force to replace it)");
    return;
  }
  if (o.fp8_block != Options().fp8_block) fail("--fp8-block applies to --format fp8");
  if (o.fp8_channel) fail("--fp8-channel applies to --format fp8");
  if (o.df11_block != Options().df11_block) fail("--df11-block applies to --format df11");
  const bool gguf = o.format == "gguf";
  if (o.bpw < 0 || (o.bpw > 0 && o.bpw > 16)) fail("--bpw ", o.bpw, ": expected a value in (0, 16]");
  if (o.bpw > 0 && o.calib_text.empty()) fail("--bpw needs --calib-text (errors are measured on calibration text)");
  if (o.sensitivity != "kld" && o.sensitivity != "output")
    fail("--sensitivity ", o.sensitivity, ": expected kld or output");
  if (o.kld_tokens < 1) fail("--kld-tokens ", o.kld_tokens, ": expected a positive token count");
  if (o.kld_anchor != "float" && o.kld_anchor != "both")
    fail("--kld-anchor ", o.kld_anchor, ": expected float or both");
  if (o.kld_anchor != Options().kld_anchor && o.sensitivity != "kld")
    fail("--kld-anchor applies to --sensitivity kld");
  if (!gguf && !o.imatrix.empty()) fail("--imatrix applies to --format gguf; GPTQ reads --calib-text");
  const std::string method = method_of(o);
  if (method != "gptq" && method != "imatrix" && method != "rtn" && method != "autoround")
    fail("--method '", method, "': expected gptq, imatrix (or importance), rtn or autoround");
  if (!gguf && method == "autoround")
    fail("--method autoround applies to --format gguf (GPTQ checkpoints: --method gptq or rtn)");
  if (method != "autoround" && (o.iters != Options().iters || o.lr != Options().lr))
    fail(o.iters != Options().iters ? "--iters" : "--lr", " applies to --method autoround");
  if (method == "autoround" && o.iters < 1) fail("--iters ", o.iters, ": expected at least 1 step");
  if (method == "autoround" && !(o.lr >= 0 && o.lr < 1))
    fail("--lr ", o.lr, ": expected a step in (0, 1), or 0 for 1/--iters");
  if (gguf && method == "autoround" && !o.imatrix.empty())
    fail("--method autoround reads its Hessians from --calib-text; --imatrix holds only Σx² (drop it, or use --method imatrix)");
  if (gguf && method == "autoround" && o.calib_text.empty())
    fail("--method autoround needs --calib-text (or use --method rtn)");
  if (gguf && method == "gptq" && !o.imatrix.empty())
    fail("--method gptq reads its Hessians from --calib-text; --imatrix holds only Σx² (drop it, or use --method imatrix)");
  if (gguf && method == "gptq" && o.calib_text.empty()) fail("--method gptq needs --calib-text (or use --method rtn)");
  if (gguf && method == "imatrix" && o.imatrix.empty() && o.calib_text.empty())
    fail("--method imatrix needs --imatrix or --calib-text");
  if (gguf && method == "rtn" && !o.imatrix.empty()) fail("--method rtn uses no importance; drop --imatrix");
  if (gguf && method == "rtn" && !o.calib_text.empty() && o.bpw == 0)
    fail("--method rtn uses no calibration; drop --calib-text (it is read only for --bpw)");
  if (gguf && o.act_order && method != "gptq") fail("--act-order applies to --method gptq");
  if (gguf && o.static_groups)
    fail("--static-groups applies to --format gptq (a ggml block's scales are always chosen from its own weights)");
  if (gguf && !o.imatrix.empty() && !o.calib_text.empty() && o.bpw == 0)
    fail("--imatrix and --calib-text both give importance; choose one");
  if (gguf && o.fused_widths) fail("--fused-widths applies to --format gptq (GGUF stores one type per tensor)");
  if (!gguf) {
    if (o.bits != 2 && o.bits != 3 && o.bits != 4 && o.bits != 8)
      fail("--bits ", o.bits, ": GPTQ checkpoints hold 2, 3, 4 or 8 bits (what transformers', GPTQModel's and vLLM's "
           "GPTQ kernels accept)");
    if (o.group_size != -1 && (o.group_size < 16 || o.group_size > 1024 || (o.group_size & (o.group_size - 1))))
      fail("--group-size ", o.group_size, ": expected -1 (one group per row) or a power of two in 16..1024");
    if (method != "rtn" && o.calib_text.empty())
      fail("--method ", method, " needs --calib-text (or use --method rtn)");
    if (o.base_bits != 0 && o.base_bits != 2 && o.base_bits != 3 && o.base_bits != 4 && o.base_bits != 8)
      fail("--base-bits ", o.base_bits, ": GPTQ checkpoints hold 2, 3, 4 or 8 bits");
    for (const auto& r : o.skip) try {
        std::regex re(r);
      } catch (const std::regex_error& e) {
        fail("--skip '", r, "': not a regular expression (", e.what(), ")");
      }
  } else if (o.base_bits != 0 || !o.skip.empty()) {
    fail(o.base_bits ? "--base-bits" : "--skip", " applies to --format gptq (GGUF: --tensor-type)");
  }
  if (!o.dry_run && !o.force && file_exists(o.output) && !(is_directory(o.output) && !gguf))
    fail(o.output, ": output already exists (use --force to replace it)");
}

namespace {

// The --bpw candidates: ggml types (--gguf-types) or GPTQ widths (--widths) at --group-size.
std::vector<QuantCandidate> candidates(const Options& o, bool gguf) {
  std::vector<QuantCandidate> out;
  for (const auto& t : split_list(gguf ? o.gguf_types : o.widths)) {
    QuantCandidate qc;
    if (gguf) {
      qc.ggml = true;
      qc.type = parse_gguf_tensor_type(t, "--gguf-types " + t);
      qc.name = ggml_type_name(qc.type);
      out.push_back(qc);
      continue;
    }
    try {
      qc.spec.bits = std::stoi(t);
    } catch (const std::exception&) {
      fail("--widths: '", t, "' is not a bit width");
    }
    if (qc.spec.bits != 2 && qc.spec.bits != 3 && qc.spec.bits != 4 && qc.spec.bits != 8)
      fail("--widths ", t, ": GPTQ checkpoints hold 2, 3, 4 or 8 bits");
    qc.spec.group_size = o.group_size;
    qc.spec.sym = !o.asym;
    check_int_spec(qc.spec, 32, o.group_size > 0 ? o.group_size : 32, "--widths " + t);
    qc.name = str("int", qc.spec.bits);
    out.push_back(qc);
  }
  return out;
}

// --sensitivity kld: the units measured around float and solved; with anchor "both" measured again
// around the uniform width whose size is nearest the budget (its choice, where that width does not
// fit a unit, the float solution's) and solved again; the check measures both solutions and the
// uniform widths and keeps the best. Without the check (nothing would choose) and with fused groups
// (one choice for several separately measured units) only around float.
Allocation anchored_allocation(const Engine& eng, KldReference& ref, const AllocOptions& ao,
                               std::vector<AllocUnit> units, const std::string& anchor) {
  std::vector<AllocUnit> around = units;
  measure_unit_kld(eng, ref, ao, units);
  Allocation a = solve_allocation(std::move(units), ao);
  std::optional<Allocation> u;
  if (anchor == "both" && ao.check && !ao.fused_groups) u = anchor_allocation(a, ao);
  if (!u) {
    if (ao.check) check_allocation(eng, ref, ao, a);
    return a;
  }
  measure_unit_kld(eng, ref, ao, around, u->choice);
  Allocation b = solve_allocation(std::move(around), ao);
  b.notes.insert(b.notes.begin(), str("KLDs measured around ", u->used, " (", u->bpw_scope, " bpw)"));
  check_allocation(eng, ref, ao, a, {{str("allocation around ", u->used), b}});
  return a;
}

// GGUF --method gptq|autoround: the encoder's options from the command's.
GGUFGPTQOptions gguf_gptq_options(const Options& o, const std::string& method) {
  GGUFGPTQOptions go;
  go.method = method == "autoround" ? GGUFGPTQOptions::Method::AutoRound : GGUFGPTQOptions::Method::Gptq;
  go.autoround.iters = o.iters;
  go.autoround.lr = o.lr;
  go.gptq.damp = o.damp;
  go.gptq.act_order = o.act_order;
  go.gptq.block_size = o.block_size;
  go.min_tokens = o.min_tokens;
  go.pool_rows = o.pool_rows;
  go.sequential = !o.no_sequential;
  go.progress = o.progress;
  return go;
}

// Mixed precision (bpw > 0): every unit's error measured at every candidate on the calibration
// chunks, and the knapsack solved. Sets r.alloc_options (always) and r.allocation. GGUF with
// --method gptq|autoround: each unit is measured as that method encodes it (every matrix encoded in
// every candidate type first, encode_gguf_candidates).
void allocate(const Options& o, const Model& m, bool gguf, const std::shared_ptr<const WeightSource>& weights,
              const Chunks& chunks, Result& r) {
  AllocOptions& ao = r.alloc_options;
  ao.bpw = o.bpw;
  ao.all_weights = o.bpw_all;
  ao.alpha = o.alpha;
  ao.beta = o.beta;
  ao.gamma = o.gamma;
  ao.per_role_experts = gguf;
  ao.fused_groups = o.fused_widths && !gguf;
  if (o.bpw <= 0) return;
  ao.candidates = candidates(o, gguf);
  if (ao.candidates.empty()) fail("--bpw: no candidate widths/types");
  ao.sensitivity = o.sensitivity;
  ao.kld_tokens = o.kld_tokens;
  ao.check = !o.no_alloc_check;
  const std::string method = method_of(o);
  std::optional<GGUFCandidateEncodings> enc;
  if (gguf && (method == "gptq" || method == "autoround")) {
    std::vector<std::optional<GGMLType>> types;
    for (const auto& c : ao.candidates) types.push_back(c.ggml ? std::optional<GGMLType>(c.type) : std::nullopt);
    enc = encode_gguf_candidates(m, plan_gguf_export(m, gguf_options(o)), types, o.output + ".bpw-spool", chunks,
                                 gguf_gptq_options(o, method));
    ao.encoded = [&e = *enc](size_t k, Role role, int64_t l, int64_t x) { return e.get(k, role, l, x); };
    r.warnings = enc->warnings;
  }
  Engine eng(weights, /*keep_layers=*/false);
  ao.progress = o.progress;
  std::vector<AllocUnit> units = measure_alloc_units(eng, chunks, ao);
  std::optional<KldReference> ref;
  if (ao.sensitivity == "kld" || ao.check) ref.emplace(eng, chunks, ao.kld_tokens);
  if (ao.sensitivity != "kld") {
    r.allocation = solve_allocation(std::move(units), ao);
    if (ao.check) check_allocation(eng, *ref, ao, *r.allocation);
  } else {
    r.allocation = anchored_allocation(eng, *ref, ao, std::move(units), o.kld_anchor);
  }
  ao.progress = nullptr;
  if (o.on_allocation) o.on_allocation(*r.allocation, ao);
  ao.encoded = nullptr;  // the encodings go with this scope
}

// The allocation's type for every GGUF tensor of a unit (one role of one layer).
std::map<std::string, GGMLType> gguf_allocation(const GGUFExportPlan& plan, const Allocation& a,
                                                const AllocOptions& ao) {
  std::map<std::string, GGMLType> types;
  for (const auto& t : plan.tensors) {
    if (!t.quantizable || t.layer < 0) continue;
    for (size_t i = 0; i < a.units.size(); ++i) {
      const auto& u = a.units[i];
      if (u.layer != t.layer || u.roles.size() != 1 || u.roles[0] != t.role || a.choice[i] < 0) continue;
      types[t.name] = ao.candidates[static_cast<size_t>(a.choice[i])].type;
    }
  }
  return types;
}

// GGUF: the plan (importance from the statistics, unless rtn); with gptq the weight matrices GPTQ
// can encode are encoded into a spool beside the output first, the writer takes their rows from it.
void run_gguf(const Options& o, const Model& m, const std::shared_ptr<const WeightSource>& weights,
              const Chunks& chunks, Result& r) {
  GGUFExportOptions eo = gguf_options(o);
  const std::string method = method_of(o);
  const auto stats = method == "rtn" ? nullptr : gguf_statistics(o, m.config().num_layers, weights, chunks);
  if (stats) {
    eo.importance = importance_from(stats);
    r.importance = o.imatrix.empty() ? o.calib_text : o.imatrix;
  }
  if (r.allocation) eo.allocation = gguf_allocation(plan_gguf_export(m, eo), *r.allocation, r.alloc_options);
  r.gguf = plan_gguf_export(m, eo);
  if (o.dry_run) return;
  if (method != "gptq" && method != "autoround") {
    write_gguf(m, *r.gguf, o.output, eo);
    return;
  }
  GGUFGPTQResult g = gptq_encode_gguf(m, *r.gguf, o.output + ".gptq-spool", chunks, gguf_gptq_options(o, method));
  eo.encoded = [spool = g.spool](const GGUFTensorPlan& t, int64_t e) { return spool->get(t.name, e); };
  write_gguf(m, *r.gguf, o.output, eo);
  r.gguf_gptq = std::move(g.records);
  r.warnings.insert(r.warnings.end(), g.warnings.begin(), g.warnings.end());
}

// The GPTQ pass's options from the command's.
IntQuantOptions gptq_options(const Options& o) {
  IntQuantOptions io;
  io.spec.bits = o.bits;
  io.spec.group_size = o.group_size;
  io.spec.sym = !o.asym;
  io.method = method_of(o);
  io.gptq.damp = o.damp;
  io.gptq.act_order = o.act_order;
  io.gptq.static_groups = o.static_groups;
  io.gptq.block_size = o.block_size;
  io.min_tokens = o.min_tokens;
  io.pool_rows = o.pool_rows;
  io.sequential = !o.no_sequential;
  io.fused_groups = o.fused_widths;
  io.base_bits = o.base_bits;
  io.compressed_tensors = o.format == "compressed-tensors";
  io.skip = o.skip;
  io.overwrite = o.force;
  if (o.float_dtype != "source") {
    const auto d = parse_dtype(o.float_dtype == "f16"    ? "F16"
                               : o.float_dtype == "bf16" ? "BF16"
                               : o.float_dtype == "f32"  ? "F32"
                                                         : "?");
    if (!d) fail("--float-dtype '", o.float_dtype, "': expected source, f16, bf16 or f32");
    io.float_dtype = *d;
  }
  if (!o.max_shard.empty()) io.max_shard_bytes = parse_byte_size(o.max_shard, "--max-shard-size");
  io.metadata = o.provenance.metadata();
  io.quantizer = "moetool:" + o.provenance.version;
  io.progress = o.progress;
  check_int_spec(io.spec, 32, o.group_size > 0 ? o.group_size : 32, "--bits/--group-size");
  return io;
}

// The allocation's width for every linear of a unit; a unit no candidate fits stays float (0), as
// the allocation counted it.
void gptq_allocation(const Model& m, const Allocation& a, const AllocOptions& ao, std::map<LinearKey, int>& bits) {
  const int64_t E = m.config().moe ? m.config().moe->num_experts : 0;
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto& u = a.units[i];
    const int b = a.choice[i] < 0 ? 0 : ao.candidates[static_cast<size_t>(a.choice[i])].spec.bits;
    for (Role role : u.roles) {
      if (u.expert == -2)  // every routed expert of the layer
        for (int64_t e = 0; e < E; ++e) bits[LinearKey{role, u.layer, e}] = b;
      else
        bits[LinearKey{role, u.layer, u.expert}] = b;
    }
  }
}

// Sizes without writing: every quantizable linear at its width.
GptqSizes gptq_sizes(const Model& m, const IntQuantOptions& io) {
  GptqSizes s;
  s.method = io.method;
  std::vector<std::string> warnings;
  for (const auto& f : plan_factors(m, io, warnings)) {
    IntQuantSpec sp = int_spec_for_cols(io.spec, f.cols);
    sp.bits = f.bits;
    s.bytes += f.bits ? int_quant_bytes(sp, f.rows, f.cols) : f.rows * f.cols * dtype_size(f.dtype);
    s.params += f.rows * f.cols;
  }
  const SkipRules skip(io.skip);
  for (const auto& t : m.family().tensors(m.config())) {
    if (!int_quantizable_role(t.role) || t.shape.size() != 2 || m.lowrank(t.role, t.layer, t.expert)) continue;
    if (skip.match(gptq_module_of(t.name).value_or(t.name))) continue;
    auto b = io.bits.find(LinearKey{t.role, t.layer, t.expert});
    IntQuantSpec sp = io.spec;
    sp.bits = b != io.bits.end() ? b->second : io.spec.bits;
    s.bytes += int_quant_bytes(sp, t.shape[0], t.shape[1]);
    s.params += t.shape[0] * t.shape[1];
  }
  return s;
}

// The writer options the FP8 and DF11 passes share with GPTQ (--force, --max-shard-size, provenance,
// progress), as gptq_options() parsed them.
template <class WriterOptions>
void copy_writer_options(const IntQuantOptions& io, WriterOptions& w) {
  w.overwrite = io.overwrite;
  w.max_shard_bytes = io.max_shard_bytes;
  w.metadata = io.metadata;
  w.progress = io.progress;
}

void run_fp8(const Options& o, const Model& m, Result& r) {
  FP8QuantOptions fo;
  std::tie(fo.block_rows, fo.block_cols) = parse_fp8_block(o.fp8_block);
  fo.channel = o.fp8_channel;
  const IntQuantOptions io = gptq_options(o);  // the shared ones: --skip, --float-dtype, shards, provenance
  fo.skip = io.skip;
  fo.float_dtype = io.float_dtype;
  fo.quantizer = io.quantizer;
  copy_writer_options(io, fo);
  r.fp8 = quantize_to_fp8(m, o.output, fo, o.dry_run);
}

void run_gptq(const Options& o, const Model& m, const Chunks& chunks, Result& r) {
  IntQuantOptions io = gptq_options(o);
  if (r.allocation) gptq_allocation(m, *r.allocation, r.alloc_options, io.bits);
  if (o.dry_run)
    r.gptq_sizes = gptq_sizes(m, io);
  else
    r.gptq = quantize_to_gptq(m, o.output, chunks, io);
}

}  // namespace

Result run(const Options& o) {
  if (file_kind_of(o.model) == "GGUF") return run_requantize(o);  // checks the options itself
  check_options(o);
  const bool gguf = o.format == "gguf";
  Model m = Model::open(o.model);
  if (o.format == "fp8" || o.format == "df11" || o.format == "bf16") {
    Result r;
    r.written = !o.dry_run;
    if (o.format == "fp8") {
      run_fp8(o, m, r);
    } else {
      DF11Options d;
      d.coded = o.format == "df11";
      d.block = o.df11_block;
      copy_writer_options(gptq_options(o), d);
      r.df11 = write_df11(m, o.output, d, o.dry_run);
    }
    return r;
  }
  if (m.lowrank_layout() && o.format == "compressed-tensors")
    fail(o.model, ": a low-rank checkpoint (config.json lowrank) has no compressed-tensors form; use --format gptq, "
         "or write it with `svd --materialize` first");
  if (m.lowrank_layout()) {  // a checkpoint `svd` wrote: only its GPTQ form exists (quantize_lowrank.h)
    if (gguf)
      fail(o.model, ": a low-rank checkpoint (config.json lowrank) has no GGUF form that llama.cpp runs; quantize it "
           "with --format gptq, or write it with `svd --materialize` first");
    if (o.bpw > 0) fail("--bpw: not supported on a low-rank checkpoint (", o.model, "); use --bits and --base-bits");
    if (method_of(o) == "imatrix")
      fail("--method imatrix: not supported on a low-rank checkpoint (", o.model, "); use gptq or rtn");
  }
  Chunks chunks;
  if (!o.calib_text.empty())
    chunks = calibration_chunks(*load_tokenizer(o.model), m.config().max_position_embeddings, o.calib_text, o.ctx,
                                o.chunks);
  auto weights = safetensors_weights(m);
  Result r;
  r.written = !o.dry_run;
  allocate(o, m, gguf, weights, chunks, r);
  if (gguf)
    run_gguf(o, m, weights, chunks, r);
  else
    run_gptq(o, m, chunks, r);
  return r;
}

}  // namespace moetool::quantize
