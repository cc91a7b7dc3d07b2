// cli/cmd_quantize.cc — `moetool quantize MODEL -o OUT.gguf --format gguf --type T`: a Hugging
// Face checkpoint as a GGUF file llama.cpp runs, quantized with ggml's block formats and
// llama-quantize's per-tensor rules (formats/gguf_export.h). --dry-run prints the plan only.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "formats/gguf_export.h"
#include "formats/model.h"

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

}  // namespace

void add_quantize(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a checkpoint to a GGUF file that llama.cpp runs");
  struct O {
    std::string model, out, format = "gguf", type = "q8_0", embed_type, output_type, name;
    std::vector<std::string> tensor_types;
    bool pure = false, dry_run = false, json = false, quiet = false, force = false;
  };
  auto o = std::make_shared<O>();
  std::string types;
  for (const auto& t : gguf_file_types()) types += (types.empty() ? "" : ", ") + t.name;
  cmd->add_option("MODEL", o->model, "Model directory (Hugging Face safetensors checkpoint)")->required();
  cmd->add_option("-o,--output", o->out, "Output .gguf file")->required();
  cmd->add_option("--format", o->format, "Output format: gguf")->capture_default_str();
  cmd->add_option("--type", o->type, "File type (llama-quantize's): " + types + " (q4_k = q4_k_m, q5_k = q5_k_m)")
      ->capture_default_str();
  cmd->add_option("--tensor-type", o->tensor_types,
                  "REGEX=TYPE: tensors whose GGUF name matches REGEX get TYPE (first match wins; repeatable)");
  cmd->add_option("--embed-type", o->embed_type, "Type of token_embd (an untied embedding)");
  cmd->add_option("--output-type", o->output_type, "Type of the output head (or the tied embedding)");
  cmd->add_option("--name", o->name, "general.name (default: the model directory's name)");
  cmd->add_flag("--pure", o->pure, "No per-tensor rules: every weight matrix gets --type (shape fallbacks still apply)");
  cmd->add_flag("--dry-run", o->dry_run, "Print the per-tensor plan and the resulting size without writing");
  cmd->add_flag("--json", o->json, "Print a JSON summary (with the per-tensor plan) on stdout");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress lines");
  cmd->add_flag("--force", o->force, "Replace an existing output file");
  cmd->callback([o, &ctx] {
    if (o->format != "gguf") fail("--format: unsupported output format '", o->format, "' (expected gguf)");
    GGUFExportOptions eo;
    eo.file_type = parse_gguf_file_type(o->type, "--type").name;
    if (!o->embed_type.empty()) eo.embed_type = parse_gguf_tensor_type(o->embed_type, "--embed-type");
    if (!o->output_type.empty()) eo.output_type = parse_gguf_tensor_type(o->output_type, "--output-type");
    for (const auto& r : o->tensor_types) {
      const auto eq = r.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == r.size())
        fail("--tensor-type: expected REGEX=TYPE, got '", r, "'");
      eo.tensor_types.push_back({r.substr(0, eq), parse_gguf_tensor_type(r.substr(eq + 1), "--tensor-type " + r)});
    }
    eo.pure = o->pure;
    eo.overwrite = o->force;
    eo.name = o->name;
    eo.provenance = ctx.provenance.metadata();
    if (!o->quiet && !o->dry_run) eo.progress = [](const std::string& l) { std::cerr << l << "\n"; };
    Model m = Model::open(o->model);
    const GGUFExportPlan p = o->dry_run ? plan_gguf_export(m, eo) : export_gguf(m, o->out, eo);
    if (o->json) {
      std::cout << plan_json(p, o->out, !o->dry_run).dump(2) << "\n";
      return;
    }
    if (o->dry_run) {
      std::printf("%-36s %-22s %-8s %-6s %12s  %s\n", "tensor", "ne", "source", "type", "bytes", "why");
      for (const auto& t : p.tensors)
        std::printf("%-36s %-22s %-8s %-6s %12llu  %s\n", t.name.c_str(), ne_text(t.ne).c_str(),
                    t.source_dtype.c_str(), ggml_type_name(t.type), static_cast<unsigned long long>(t.bytes),
                    t.why.c_str());
    }
    std::printf("%s %s: %s (%s) as GGUF %s, %zu tensors, %.2f MiB (from %.2f MiB), %.3f bits per weight (%.3f over "
                "the weight matrices)\n",
                o->dry_run ? "would write" : "wrote", o->out.c_str(), p.family.c_str(), p.arch.c_str(),
                p.file_type.name.c_str(), p.tensors.size(), static_cast<double>(p.bytes) / (1 << 20),
                static_cast<double>(p.source_bytes) / (1 << 20), p.bpw(), p.bpw_quantizable());
  });
}

}  // namespace moetool::cli
