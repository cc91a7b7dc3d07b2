// cli/cmd_synth.cc — `moetool synth --family F --preset P -o DIR [--seed S] [--dtype D]`: a
// deterministic random checkpoint of any supported family, for tests, demos and benchmarks.
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/synth.h"

namespace moetool::cli {

void add_synth(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("synth", "Write a deterministic random checkpoint of a supported family");
  struct Opts {
    std::string family = "llama", preset = "tiny", out, dtype = "f32", shard;
    uint64_t seed = 0;
    bool json = false, force = false, quiet = false;
  };
  auto o = std::make_shared<Opts>();
  std::string fams;
  for (const Family* f : all_families()) fams += (fams.empty() ? "" : ", ") + f->name();
  cmd->add_option("--family", o->family, "Model family: " + fams)->capture_default_str();
  cmd->add_option("--preset", o->preset, "Size preset: tiny, small, bench")->capture_default_str();
  cmd->add_option("-o,--output", o->out, "Output directory")->required();
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Weight dtype: f32, f16, bf16, f64")->capture_default_str();
  cmd->add_option("--max-shard-size", o->shard, "Split safetensors into shards of at most this size (e.g. 2GB)");
  cmd->add_flag("--force", o->force, "Replace an existing output directory");
  cmd->add_flag("--json", o->json, "Print a JSON summary on stdout");
  cmd->add_flag("-q,--quiet", o->quiet, "No progress lines");
  cmd->callback([o, &ctx] {
    SynthOptions so;
    so.family = o->family;
    so.preset = o->preset;
    so.seed = o->seed;
    so.dtype = parse_float_dtype_option(o->dtype, "--dtype");
    so.max_shard_bytes = o->shard.empty() ? 0 : parse_byte_size(o->shard, "--max-shard-size");
    so.overwrite = o->force;
    so.metadata = ctx.provenance.metadata();
    if (!o->quiet) so.progress = [](const std::string& l) { std::cerr << l << "\n"; };
    const SynthResult r = synth_model(o->out, so);
    if (o->json) {
      nlohmann::ordered_json j;
      j["output"] = o->out;
      j["family"] = o->family;
      j["preset"] = o->preset;
      j["seed"] = o->seed;
      j["dtype"] = dtype_name(so.dtype);
      j["params"] = r.params;
      j["bytes"] = r.bytes;
      j["files"] = r.files;
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << "wrote " << o->out << ": " << o->family << " (" << o->preset << "), " << r.params
                << " parameters, " << r.bytes << " bytes of " << dtype_name(so.dtype) << " in " << r.files.size()
                << " files\n";
    }
  });
}

}  // namespace moetool::cli
