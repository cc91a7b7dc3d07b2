// cli/cmd_prune.cc — `moetool prune MODEL -o OUT --keep K --method ...`: remove the routed experts a
// domain does not need (and optionally slim the kept ones); the job is compress/prune.h.
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "compress/prune.h"
#include "core/fs.h"

namespace moetool::cli {

void add_prune(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("prune", "Remove the routed experts a domain does not need (and slim the kept ones)");
  struct O {
    prune::Options p;
    std::string max_shard;
    EngineRunFlags run;
  };
  auto o = std::make_shared<O>();
  cmd->add_option("MODEL", o->p.model, "Mixture-of-Experts model directory (Hugging Face checkpoint)")->required();
  cmd->add_option("-o,--output", o->p.output, "Output directory (same family, fewer experts)")->required();
  cmd->add_option("--keep", o->p.keep, "Experts kept in every MoE layer (K)");
  cmd->add_option("--keep-fraction", o->p.keep_fraction, "Fraction of each layer's experts kept (K = round(F·E))");
  cmd->add_option("--method", o->p.method,
                  "Expert scores: reap (router-weighted output norm, domain-agnostic), easy-ep (REAP weighted by how "
                  "much each token's hidden state changes; calibrate on your domain), frequency (routed tokens), "
                  "reconstruct (measured: experts removed one by one by the layer-output error their removal causes on "
                  "the calibration text, layer after layer on the pruned model), random (seeded baseline)")
      ->capture_default_str();
  cmd->add_option("--calib-text", o->p.calib_texts, "Calibration text file(s), e.g. in-domain demonstrations")
      ->expected(1, -1);
  cmd->add_option("--calib-stats", o->p.calib_stats, "Saved statistics from `moetool calibrate` instead");
  add_chunk_options(cmd, o->p.ctx, o->p.chunks, "Calibration tokens per chunk",
                    "Use at most this many chunks per calibration file (0 = all)");
  cmd->add_option("--measure-tokens", o->p.max_measure_tokens,
                  "--method reconstruct: calibration tokens each layer re-run uses")
      ->capture_default_str();
  cmd->add_option("--seed", o->p.seed, "Seed of --method random (same seed, same experts)")->capture_default_str();
  cmd->add_option("--protect-super-experts", o->p.protect,
                  "auto (detected super experts are never pruned), off, or LAYER:EXPERT,... to protect")
      ->capture_default_str();
  cmd->add_option("--slim", o->p.slim,
                  "Also remove this fraction of each kept expert's intermediate neurons (activation-aware; "
                  "writes narrower experts). Alone, without --keep: every expert kept and slimmed");
  cmd->add_option("--max-shard-size", o->max_shard, "Split safetensors into shards of at most this size (e.g. 5GB)");
  cmd->add_flag("--dry-run", o->p.dry_run, "Print the plan (scores, kept experts, super experts, a per-layer budget) and write nothing");
  cmd->add_flag("--force", o->p.overwrite, "Replace an existing output directory");
  add_engine_run_flags(cmd, o->run, "Print the result (plan, scores, super experts, files) as JSON on stdout");
  cmd->callback([o, &ctx] {
    prune::Options p = o->p;
    p.device = o->run.dev.resolve();
    if (!o->max_shard.empty()) p.max_shard_bytes = parse_byte_size(o->max_shard, "--max-shard-size");
    p.metadata = ctx.provenance.metadata();
    p.progress = progress_sink(o->run.quiet);
    const prune::Result r = prune::run(p);
    for (const auto& w : r.warnings) std::cerr << "moetool: warning: " << w << "\n";
    if (o->run.json) {
      std::cout << r.to_json().dump(2) << "\n";
    } else {
      std::cout << r.table();
      if (r.written)
        std::cout << "wrote " << r.output << ": " << r.params << " parameters (from " << r.source_params << "), "
                  << r.bytes << " bytes of tensors in " << std::fixed << std::setprecision(2) << r.seconds << " s\n";
    }
  });
}

}  // namespace moetool::cli
