// cli/cmd_verify.cc — `moetool verify BASE CANDIDATE`: KL divergence, top-1 agreement,
// perplexities and per-layer hidden-state similarity of a candidate against its base on real
// text, routing fidelity of MoE layers, with thresholds for CI (exit 1 when one is missed; no
// threshold: the verdict is "unchecked", exit 0) and report files. The job is
// verify/verify_job.h; this file declares its options and prints its report.
#include <iostream>

#include "cli/commands.h"
#include "core/fs.h"
#include "verify/report.h"
#include "verify/verify_job.h"

namespace moetool::cli {

void add_verify(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("verify", "Compare a candidate model with its base on text (KLD, top-1, PPL)");
  struct Flags : verify::Options {
    std::string report, junit;
    bool no_hidden = false;
    EngineRunFlags flags;
  };
  auto o = std::make_shared<Flags>();
  cmd->add_option("BASE", o->base, "Base model directory, or a llama.cpp KL-divergence base-logits file")->required();
  cmd->add_option("CANDIDATE", o->candidate, "Candidate model directory")->required();
  cmd->add_option("--text", o->text, "Evaluation text file (not needed with a base-logits file)");
  add_chunk_options(cmd, o->ctx, o->chunks, "Tokens per chunk", "Evaluate at most this many chunks (0 = all)");
  cmd->add_option("--scored", o->scored,
                  "Scored positions: all-after-first (every prediction in the chunk) or second-half "
                  "(llama.cpp's convention)")
      ->capture_default_str();
  cmd->add_option("--max-kld", o->thresholds.max_kld, "Fail (exit 1) if mean KLD exceeds this");
  cmd->add_option("--min-top1", o->thresholds.min_top1, "Fail (exit 1) if the same-top-1 fraction is below this");
  cmd->add_option("--max-ppl-ratio", o->thresholds.max_ppl_ratio,
                  "Fail (exit 1) if PPL(candidate)/PPL(base) exceeds this");
  cmd->add_option("--max-route-mismatch", o->thresholds.max_route_mismatch,
                  "Fail (exit 1) if more than this fraction of (token, MoE layer) pairs route to other experts "
                  "than the base's (through the candidate's prune/merge provenance)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--report", o->report, "Write report.json, report.md and report.html into this directory");
  cmd->add_option("--junit", o->junit, "Write a JUnit XML file (one test case per threshold)");
  cmd->add_option("--save-base", o->save_base, "Also write the base logits as a llama.cpp KL-divergence base file");
  cmd->add_flag("--no-hidden", o->no_hidden, "Skip the per-layer hidden-state comparison");
  cmd->add_option("--dynamic-topk", o->dynamic_topk,
                  "Run the candidate with MC-MoE's online dynamic pruning: skip a token's second and later experts "
                  "whose routing weight (normalised over its top-k) is below this (CPU engine; the report gives "
                  "the fraction skipped)");
  add_engine_run_flags(cmd, o->flags, "Print the report as JSON instead of text");
  cmd->callback([o, &ctx] {
    o->device = o->flags.dev.resolve();
    o->hidden = !o->no_hidden;
    o->provenance = ctx.provenance;
    o->progress = progress_sink(o->flags.quiet);
    const verify::Result r = verify::run(*o);
    if (o->flags.json) {
      auto j = to_json(r.report);
      j["run"]["device"] = device_name(o->device.device);
      j["run"]["dtype"] = precision_name(o->device.precision);
      if (o->device.device == Device::Cpu) j["run"]["dot"] = quant_dot_name(quant_dot());
      std::cout << j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    } else {
      std::cout << to_text(r.report);
      if (!o->flags.quiet)
        std::cerr << "device: " << device_name(o->device.device) << " (" << precision_name(o->device.precision)
                  << (o->device.device == Device::Cpu ? std::string(", ") + quant_dot_name(quant_dot()) + " dot" : "")
                  << ")\n";
    }
    if (!o->report.empty()) write_report_dir(o->report, r.report);
    if (!o->junit.empty()) write_file_atomic(o->junit, to_junit(r.report));
    for (const auto& m : r.missed) std::cerr << "moetool: verification failed: " << m << "\n";
    if (!r.missed.empty()) ctx.exit_code = 1;
  });
}

}  // namespace moetool::cli
