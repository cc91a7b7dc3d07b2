// cli/cmd_merge.cc — `moetool merge MODEL -o OUT --experts K --method msmoe|hc ...`: fewer experts by
// merging groups of similar ones; the job is compress/merge.h.
#include <iomanip>
#include <iostream>

#include "cli/commands.h"
#include "compress/merge.h"
#include "core/fs.h"

namespace moetool::cli {

void add_merge(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("merge", "Merge groups of similar routed experts into one (E -> K experts per layer)");
  struct O {
    merge::Options p;
    std::string max_shard;
    EngineRunFlags run;
  };
  auto o = std::make_shared<O>();
  cmd->add_option("MODEL", o->p.model, "Mixture-of-Experts model directory (Hugging Face checkpoint)")->required();
  cmd->add_option("-o,--output", o->p.output, "Output directory (same family, K experts)")->required();
  cmd->add_option("--experts", o->p.experts, "Experts per MoE layer after merging (K, top-k <= K <= E)")->required();
  cmd->add_option("--method", o->p.method,
                  "Grouping: msmoe (MC-SMoE: the K most frequently routed experts lead, every other joins the most "
                  "similar leader), hc (HC-SMoE: average-linkage hierarchical clustering) or sub-moe (hc grouping; each "
                  "group merged in the shared basis of one joint SVD of its members, coefficients averaged by frequency)")
      ->capture_default_str();
  cmd->add_option("--group-by", o->p.group_by,
                  "Similarity: router-logits (cosine of router-logit columns; msmoe's default), outputs (cosine of "
                  "the experts' outputs on the same calibration tokens; the default of hc and sub-moe) or weights");
  cmd->add_option("--align", o->p.align,
                  "permutation (align each member's neurons to the leader's by weight matching before averaging) or none")
      ->capture_default_str();
  cmd->add_option("--rank-fraction", o->p.rank_fraction,
                  "sub-moe: fraction of each group's joint-SVD rank kept (1 = full rank: the frequency-weighted average)")
      ->capture_default_str();
  cmd->add_option("--router", o->p.router,
                  "leader (the merged expert takes its leader's router row) or fit (a row fitted by ridge least "
                  "squares to the group's combined logit on the calibration tokens; softmax routers)")
      ->capture_default_str();
  cmd->add_option("--calib-text", o->p.calib_texts, "Calibration text file(s): routing frequencies and similarities")
      ->expected(1, -1);
  cmd->add_option("--calib-stats", o->p.calib_stats,
                  "Saved statistics from `moetool calibrate` instead (with --hidden for --group-by outputs or "
                  "--router fit)");
  add_chunk_options(cmd, o->p.ctx, o->p.chunks, "Calibration tokens per chunk",
                    "Use at most this many chunks per calibration file (0 = all)");
  cmd->add_option("--similarity-tokens", o->p.similarity_tokens,
                  "Calibration tokens whose router logits / expert outputs are compared (and --router fit is fitted on)")
      ->capture_default_str();
  cmd->add_option("--max-shard-size", o->max_shard, "Split safetensors into shards of at most this size (e.g. 5GB)");
  cmd->add_flag("--dry-run", o->p.dry_run, "Print the groups per layer (frequencies, similarities) and write nothing");
  cmd->add_flag("--force", o->p.overwrite, "Replace an existing output directory");
  add_engine_run_flags(cmd, o->run, "Print the result (groups, frequencies, similarities, files) as JSON on stdout");
  cmd->callback([o, &ctx] {
    merge::Options p = o->p;
    p.device = o->run.dev.resolve();
    if (!o->max_shard.empty()) p.max_shard_bytes = parse_byte_size(o->max_shard, "--max-shard-size");
    p.metadata = ctx.provenance.metadata();
    p.progress = progress_sink(o->run.quiet);
    const merge::Result r = merge::run(p);
    for (const auto& w : r.warnings) std::cerr << "moetool: warning: " << w << "\n";
    if (o->run.json) {
      std::cout << r.to_json().dump(2) << "\n";
    } else {
      std::cout << r.table();
      if (r.written)
        std::cout << "wrote " << r.output << ": " << r.params << " parameters (from " << r.source_params << "), "
                  << r.bytes << " bytes of tensors in " << std::fixed << std::setprecision(2) << r.seconds
                  << " s (alignment " << r.align_seconds << " s: " << r.aligned_members << " members, "
                  << r.moved_neurons << " neurons moved)\n";
    }
  });
}

}  // namespace moetool::cli
