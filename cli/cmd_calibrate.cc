// cli/cmd_calibrate.cc — `moetool calibrate MODEL --text FILE -o STATS`: run calibration text
// through the model layer by layer and save the statistics later passes consume. The job is
// engine/calibrate_job.h; this file declares its options and prints its summary.
#include <iostream>

#include "cli/commands.h"
#include "engine/calibrate_job.h"

namespace moetool::cli {

void add_calibrate(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("calibrate", "Collect calibration statistics (router, experts, input moments)");
  struct Flags : calibration::Options {
    bool no_router = false;
    EngineRunFlags flags;
  };
  auto o = std::make_shared<Flags>();
  cmd->add_option("MODEL", o->model, "Model directory")->required();
  cmd->add_option("--text", o->text, "Calibration text file")->required();
  cmd->add_option("-o,--output", o->output, "Statistics file to write (safetensors)")->required();
  add_chunk_options(cmd, o->ctx, o->chunks, "Tokens per chunk", "Use at most this many chunks (0 = all)");
  cmd->add_flag("--hidden", o->collect.hidden, "Also keep hidden states before/after each FFN block");
  cmd->add_flag("--activations", o->collect.ffn_activations,
                "Also keep FFN/expert intermediate activations (co-activation)");
  cmd->add_flag("--gram", o->collect.gram, "Also accumulate full input Gram matrices XᵀX per linear (large)");
  cmd->add_flag("--no-router", o->no_router, "Skip router logits and selections");
  add_engine_run_flags(cmd, o->flags, "Print a JSON summary");
  cmd->callback([o, &ctx] {
    o->device = o->flags.dev.resolve();
    o->collect.router = !o->no_router;
    o->collect.progress = progress_sink(o->flags.quiet);
    o->metadata = ctx.provenance.metadata();
    const calibration::Result r = calibration::run(*o);
    for (const auto& [l, e] : r.unrouted)
      std::cerr << "moetool: warning: layer " << l << " expert " << e << " received no calibration token\n";
    if (o->flags.json) {
      nlohmann::ordered_json j;
      j["output"] = o->output;
      j["tokens"] = r.stats.num_tokens;
      j["chunks"] = r.stats.num_chunks;
      j["ctx"] = r.stats.ctx;
      j["device"] = device_name(o->device.device);
      if (o->device.device == Device::Cuda) j["dtype"] = precision_name(o->device.precision);
      auto u = nlohmann::json::array();
      for (const auto& [l, e] : r.unrouted) u.push_back({{"layer", l}, {"expert", e}});
      j["unrouted_experts"] = u;
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "wrote " << o->output << ": " << r.stats.num_tokens << " tokens in " << r.stats.num_chunks
                << " chunks, " << r.unrouted.size() << " experts without calibration tokens\n";
    }
  });
}

}  // namespace moetool::cli
