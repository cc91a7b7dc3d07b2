// cli/commands.h — registration of moetool's subcommands. Each command lives in its own
// cli/cmd_*.cc, parses options with CLI11, calls the library and returns an exit code
// (0 ok, 1 verification failed its thresholds, 2 bad input or usage).
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "core/provenance.h"

namespace moetool::cli {

struct Context {
  Provenance provenance;  // command line and version for output metadata
  int exit_code = 0;      // set by the command that ran
};

void add_inspect(CLI::App& app, Context& ctx);
void add_synth(CLI::App& app, Context& ctx);
void add_generate(CLI::App& app, Context& ctx);  // tokenize, generate, logits
void add_calibrate(CLI::App& app, Context& ctx);
void add_verify(CLI::App& app, Context& ctx);
void add_quantize(CLI::App& app, Context& ctx);
void add_convert(CLI::App& app, Context& ctx);  // convert upcycle, convert factorize

}  // namespace moetool::cli
