// cli/cmd_svd.cc — `moetool svd MODEL -o OUT (--ratio P | --rank R) --method ...`: routed experts
// stored low rank; the job is compress/lowrank.h, the layout formats/lowrank.h.
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "compress/lowrank.h"

namespace moetool::cli {

void add_svd(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("svd", "Store routed experts low rank (U·V per matrix, ranks from a budget)");
  struct O {
    svd::Options p;
    std::string max_shard;
    EngineRunFlags run;
  };
  auto o = std::make_shared<O>();
  cmd->add_option("MODEL", o->p.model, "Mixture-of-Experts model directory (Hugging Face checkpoint)")->required();
  cmd->add_option("-o,--output", o->p.output, "Output directory")->required();
  cmd->add_option("--ratio", o->p.ratio,
                  "Fraction of the expert parameters kept, in (0, 1]; ranks per matrix from an exact knapsack over "
                  "the measured truncation errors");
  cmd->add_option("--rank", o->p.rank, "One rank for every expert matrix instead of --ratio");
  cmd->add_option("--method", o->p.method,
                  "plain (SVD of W), whitened (SVD-LLM: SVD of W·S, S the Cholesky factor of the calibration inputs' "
                  "Gram; needs calibration), shared-basis (one basis per layer and projection on the hidden side, "
                  "each expert keeps its coefficients) or delta (base = routing-weighted mean expert + a low-rank "
                  "difference per expert)")
      ->capture_default_str();
  cmd->add_option("--targets", o->p.targets,
                  "What to factor: experts (the routed experts' matrices) or all-linears (also attention, dense and "
                  "shared-expert MLPs, plain or whitened; a dense model too)")
      ->check(CLI::IsMember({"experts", "all-linears"}))
      ->capture_default_str();
  cmd->add_option("--calib-text", o->p.calib_texts, "Calibration text file(s): routing shares and input Grams")
      ->expected(1, -1);
  cmd->add_option("--calib-stats", o->p.calib_stats,
                  "Saved statistics from `moetool calibrate` instead (with --gram for whitened / delta)");
  add_chunk_options(cmd, o->p.ctx, o->p.chunks, "Calibration tokens per chunk",
                    "Use at most this many chunks per calibration file (0 = all)");
  cmd->add_option("--damp", o->p.damp, "Whitening: Gram + damp·mean(diag)·I before the Cholesky factor")
      ->capture_default_str();
  cmd->add_option("--rank-steps", o->p.rank_steps, "Ranks per matrix the knapsack chooses from")->capture_default_str();
  cmd->add_option("--rank-multiple", o->p.rank_multiple,
                  "Ranks the knapsack chooses are multiples of this (8: every factor packs into int4 GPTQ for quantize; "
                  "16 or 64: GEMM-friendly shapes)")
      ->capture_default_str();
  cmd->add_option("--seed", o->p.seed, "Seed of the randomized SVD's probes")->capture_default_str();
  cmd->add_flag("--materialize", o->p.materialize,
                "Write standard dense experts (W' = U·V) that stock loaders read, instead of the low-rank layout");
  cmd->add_option("--max-shard-size", o->max_shard, "Split safetensors into shards of at most this size (e.g. 5GB)");
  cmd->add_flag("--dry-run", o->p.dry_run, "Print the ranks per layer and projection and write nothing");
  cmd->add_flag("--force", o->p.overwrite, "Replace an existing output directory");
  add_engine_run_flags(cmd, o->run, "Print the result (ranks, errors, files) as JSON on stdout");
  cmd->callback([o, &ctx] {
    svd::Options p = o->p;
    p.device = o->run.dev.resolve();
    if (!o->max_shard.empty()) p.max_shard_bytes = parse_byte_size(o->max_shard, "--max-shard-size");
    p.metadata = ctx.provenance.metadata();
    p.progress = progress_sink(o->run.quiet);
    const svd::Result r = svd::run(p);
    for (const auto& w : r.warnings) std::cerr << "moetool: warning: " << w << "\n";
    if (o->run.json) {
      std::cout << r.to_json().dump(2) << "\n";
    } else {
      std::cout << r.table();
      if (r.written)
        std::cout << "wrote " << r.output << ": " << r.bytes << " bytes of tensors in " << std::fixed
                  << std::setprecision(2) << r.seconds << " s (SVD " << r.svd_seconds << " s)\n";
    }
  });
}

}  // namespace moetool::cli
