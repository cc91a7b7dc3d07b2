// cli/commands.cc — the option blocks and the progress printing the subcommands share.
#include <iostream>

#include "cli/commands.h"

namespace moetool::cli {

void add_json_quiet_flags(CLI::App* cmd, bool& json, bool& quiet, const std::string& json_help) {
  cmd->add_flag("--json", json, json_help);
  cmd->add_flag("-q,--quiet", quiet, "No progress lines");
}

void add_engine_run_flags(CLI::App* cmd, EngineRunFlags& f, const std::string& json_help) {
  add_json_quiet_flags(cmd, f.json, f.quiet, json_help);
  add_device_flags(cmd, f.dev);
}

void add_chunk_options(CLI::App* cmd, int64_t& ctx, int64_t& chunks, const std::string& ctx_help,
                       const std::string& chunks_help) {
  cmd->add_option("--ctx", ctx, ctx_help)->capture_default_str();
  cmd->add_option("--chunks", chunks, chunks_help)->capture_default_str();
}

std::function<void(const std::string&)> progress_sink(bool quiet) {
  if (quiet) return nullptr;
  return [](const std::string& l) { std::cerr << l << "\n"; };
}

}  // namespace moetool::cli
