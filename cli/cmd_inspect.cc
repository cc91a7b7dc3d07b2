// cli/cmd_inspect.cc — `moetool inspect MODEL [--json]`: structure, parameter counts, bytes by
// dtype, and config/tensor inconsistencies (which make it exit 2).
#include <iostream>

#include "cli/commands.h"
#include "formats/inspect.h"

namespace moetool::cli {

void add_inspect(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("inspect", "Summarise a checkpoint and check it against its config");
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  cmd->add_option("MODEL", *path, "Checkpoint directory (config.json + safetensors), .safetensors file, or .gguf file")
      ->required();
  cmd->add_flag("--json", *json, "Print the report as JSON");
  cmd->callback([path, json, &ctx] {
    if (path->size() > 5 && path->compare(path->size() - 5, 5, ".gguf") == 0) {
      const GGUFSummary g = inspect_gguf(*path);
      std::cout << (*json ? g.to_json().dump(2) + "\n" : g.to_text());
      return;
    }
    const Model m = Model::open(*path);
    const InspectReport r = inspect_model(m);
    if (*json)
      std::cout << r.to_json().dump(2) << "\n";
    else
      std::cout << r.to_text();
    if (!r.inconsistencies.empty()) {
      std::cerr << "moetool: error: " << m.checkpoint().dir() << ": " << r.inconsistencies.size()
                << " inconsistenc" << (r.inconsistencies.size() == 1 ? "y" : "ies")
                << " between config.json and tensors; first: " << r.inconsistencies.front() << "\n";
      ctx.exit_code = 2;
    }
  });
}

}  // namespace moetool::cli
