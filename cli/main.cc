// cli/main.cc — the moetool binary: parses the command line, runs one subcommand, and maps
// failures to exit codes. The only place that catches moetool::Error.
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  using namespace moetool;
  // A layer's activations and a tensor's buffers (up to tens of MiB) come and go every layer: served
  // from the heap and kept for the next layer, they cost no fresh pages. glibc's defaults give each
  // one a new mapping (the kernel zeroing and faulting it in again): 4–5 s of system time in a 1 B
  // model's logits run. 32 MiB is the largest threshold glibc accepts.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
  cli::Context ctx;
  ctx.provenance = make_provenance(argc, argv);

  CLI::App app{"moetool — turn dense transformer checkpoints into Mixture-of-Experts models and make MoE models small"};
  app.set_version_flag("--version", cli::version_string());
  app.require_subcommand(1);
  app.fallthrough(false);
  cli::add_inspect(app, ctx);
  cli::add_synth(app, ctx);
  cli::add_generate(app, ctx);
  cli::add_calibrate(app, ctx);
  cli::add_verify(app, ctx);
  cli::add_quantize(app, ctx);
  cli::add_convert(app, ctx);
  cli::add_prune(app, ctx);
  cli::add_merge(app, ctx);
  cli::add_svd(app, ctx);
  cli::add_run(app, ctx);

  // An unknown command gets a message naming it (CLI11 would only say a subcommand is required).
  std::vector<std::string> commands;
  for (const auto* sc : app.get_subcommands({})) commands.push_back(sc->get_name());
  if (argc > 1 && argv[1][0] != '-' && std::find(commands.begin(), commands.end(), argv[1]) == commands.end()) {
    std::string names;
    for (const auto& c : commands) names += (names.empty() ? "" : ", ") + c;
    std::cerr << "moetool: error: unknown command '" << argv[1] << "' (expected one of: " << names << ")\n";
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "moetool: error: " << e.what() << " (see 'moetool --help')\n";
    return 2;
  } catch (const Error& e) {
    std::cerr << "moetool: error: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    std::cerr << "moetool: error: out of memory\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "moetool: error: " << e.what() << "\n";
    return 2;
  }
  return ctx.exit_code;
}
