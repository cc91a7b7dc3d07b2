// cli/cmd_run.cc — `moetool run RECIPE.yaml`: a whole job (convert, prune, merge, svd, quantize, with
// verification gates after any step) over one or many checkpoints, resumable, with one summary CI can
// gate on. The recipe is recipe/recipe.h, the execution recipe/runner.h; this file checks every
// step's options against the commands' own option tables before any work starts.
#include <glob.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "core/error.h"
#include "core/process.h"
#include "recipe/recipe.h"
#include "recipe/runner.h"
#include "recipe/summary.h"

namespace moetool::cli {

namespace {

// Every subcommand (and theirs) with a callback that does nothing: parsing checks options only.
void disarm(CLI::App* a) {
  for (CLI::App* sc : a->get_subcommands({})) {
    sc->callback([] {});
    disarm(sc);
  }
}

// Checks a step's options as its command would parse them: unknown options, wrong types, values
// out of range. Throws "RECIPE:LINE: steps[i].options.KEY: message".
void check_step_options(const recipe::Recipe& r, size_t i) {
  const recipe::Step& s = r.steps[i];
  CLI::App app;
  Context ctx;
  add_convert(app, ctx);
  add_prune(app, ctx);
  add_merge(app, ctx);
  add_svd(app, ctx);
  add_quantize(app, ctx);
  disarm(&app);
  std::vector<std::string> args = recipe::step_args(s, "INPUT", "OUTPUT");
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));
  } catch (const CLI::ParseError& e) {
    const std::string msg = e.what();
    for (const auto& o : s.options)
      if (msg.find("--" + o.key) != std::string::npos)
        fail(r.path, ":", o.line, ": ", str("steps[", i, "].options.", o.key), ": ", msg);
    fail(r.path, ":", s.line, ": ", str("steps[", i, "].options"), ": ", msg);
  }
}

std::vector<std::string> expand_models(const std::vector<std::string>& patterns) {
  std::vector<std::string> out;
  for (const auto& p : patterns) {
    glob_t g{};
    if (glob(p.c_str(), GLOB_NOCHECK, nullptr, &g) == 0)
      for (size_t k = 0; k < g.gl_pathc; ++k)
        out.push_back(std::filesystem::absolute(g.gl_pathv[k]).lexically_normal().string());
    globfree(&g);
  }
  return out;
}

}  // namespace

void add_run(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("run", "Run a recipe: a chain of passes with verification gates over one or many checkpoints");
  struct O {
    std::string recipe, output;
    std::vector<std::string> models;
    int jobs = 1;
    std::string memory;
    bool resume = false, explain = false, json = false, quiet = false;
  };
  auto o = std::make_shared<O>();
  cmd->add_option("RECIPE", o->recipe, "Recipe file (YAML; docs/run.md)")->required();
  cmd->add_option("-o,--output", o->output, "Output folder (default: the recipe's output, else ./moetool-run/<recipe name>)");
  cmd->add_option("--models", o->models, "Checkpoints (paths or globs) instead of the recipe's models")->expected(1, -1);
  cmd->add_option("--jobs", o->jobs, "Models processed at the same time")->check(CLI::Range(1, 64))->capture_default_str();
  cmd->add_option("--memory-budget", o->memory,
                  "With --jobs: start a model only while the checkpoints in progress total at most this size (e.g. 64GB)");
  cmd->add_flag("--resume", o->resume, "Reuse steps an earlier run completed with the same inputs and options");
  cmd->add_flag("--explain", o->explain, "Print the plan (models, commands, gates) and run nothing");
  add_json_quiet_flags(cmd, o->json, o->quiet, "Print summary.json on stdout instead of the table");
  cmd->callback([o, &ctx] {
    recipe::Recipe r = recipe::parse_recipe(o->recipe);
    for (size_t i = 0; i < r.steps.size(); ++i) check_step_options(r, i);
    recipe::RunOptions ro;
    ro.models = o->models.empty() ? r.models : expand_models(o->models);
    if (ro.models.empty()) fail("--models: no checkpoint matched");
    ro.output = !o->output.empty() ? o->output
                : !r.output.empty() ? r.output
                                    : "moetool-run/" + (r.name.empty() ? std::filesystem::path(r.path).stem().string() : r.name);
    ro.output = std::filesystem::absolute(ro.output).lexically_normal().string();
    ro.recipe = std::move(r);
    ro.jobs = o->jobs;
    if (!o->memory.empty()) ro.memory_budget = parse_byte_size(o->memory, "--memory-budget");
    ro.resume = o->resume;
    ro.binary = self_executable();
    ro.version = ctx.provenance.version;
    recipe::check_applicability(ro.recipe, ro.models);  // throws for a pass that does not apply
    if (o->explain) {
      std::cout << recipe::explain(ro);
      return;
    }
    const bool tty = isatty(2);
    if (!o->quiet) {
      ro.progress = [tty](const std::string& l) { std::cerr << (tty ? "\r\033[K" : "") << l << "\n"; };
      ro.status = [tty](const std::string& l) {
        if (tty) std::cerr << "\r\033[K" << l.substr(0, 160) << std::flush;
        else std::cerr << l << "\n";
      };
    }
    std::error_code ec;
    std::filesystem::create_directories(ro.output, ec);
    if (ec) fail(ro.output, ": cannot create the output folder: ", ec.message());
    const recipe::RunResult res = recipe::run(ro);
    if (tty && !o->quiet) std::cerr << "\r\033[K";
    recipe::write_summary(res);
    if (o->json) {
      std::cout << recipe::summary_json(res).dump(2) << "\n";
    } else {
      std::cout << recipe::summary_text(res);
      std::cout << "summary: " << ro.output << "/summary.html\n";
    }
    ctx.exit_code = res.exit_code();
  });
}

}  // namespace moetool::cli
