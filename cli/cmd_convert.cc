// cli/cmd_convert.cc — `moetool convert upcycle|factorize DENSE -o OUT ...`: dense → MoE conversion
// (FFN copies, optionally fine-grained and beside a shared expert; or FFN neurons split into experts
// with a router), written as a standard MoE checkpoint with a per-layer report.
#include <iostream>

#include "cli/commands.h"
#include "convert/factorize.h"
#include "convert/upcycle.h"
#include "core/error.h"
#include "core/fs.h"

namespace moetool::cli {

namespace {

void emit(const ConvertReport& r, bool json, const std::string& report_path) {
  if (!report_path.empty()) write_file_atomic(report_path, r.to_json().dump(2) + "\n");
  if (json)
    std::cout << r.to_json().dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
  else
    std::cout << r.to_text();
}

std::string family_list(bool moe) {
  std::string s;
  for (const Family* f : all_families())
    if (f->is_moe() == moe) s += (s.empty() ? "" : ", ") + f->name();
  return s;
}

// The options every method takes.
struct Common {
  std::string dense, out, to, report, shard;
  int64_t experts = 8, top_k = 2;
  uint64_t seed = 0;
  bool json = false, force = false, quiet = false;
};

// The library's common options from the command line's.
void fill_common(ConvertOptions& o, const Common& c, Context& ctx) {
  o.to = c.to;
  o.experts = c.experts;
  o.top_k = c.top_k;
  o.seed = c.seed;
  o.overwrite = c.force;
  o.max_shard_bytes = c.shard.empty() ? 0 : parse_byte_size(c.shard, "--max-shard-size");
  o.metadata = ctx.provenance.metadata();
  if (!c.quiet) o.progress = [](const std::string& l) { std::cerr << l << "\n"; };
  o.warn = [](const std::string& w) { std::cerr << "moetool: warning: " << w << "\n"; };
}

}  // namespace

void add_convert(CLI::App& app, Context& ctx) {
  auto* conv = app.add_subcommand("convert", "Turn a dense checkpoint into a Mixture-of-Experts checkpoint");
  conv->require_subcommand(1);

  auto add_common = [](CLI::App* c, Common& o) {
    c->add_option("DENSE", o.dense, "Dense model directory")->required();
    c->add_option("-o,--output", o.out, "Output directory")->required();
    c->add_option("--to", o.to, "Target MoE family: " + family_list(true))->required();
    c->add_option("--experts", o.experts, "Routed experts per layer")->capture_default_str();
    c->add_option("--top-k", o.top_k, "Experts per token")->capture_default_str();
    c->add_option("--seed", o.seed, "Random seed (same seed, same output)")->capture_default_str();
    c->add_option("--report", o.report, "Write the conversion report (JSON) to this file");
    c->add_option("--max-shard-size", o.shard, "Split safetensors into shards of at most this size (e.g. 5GB)");
    c->add_flag("--json", o.json, "Print the summary as JSON on stdout");
    c->add_flag("--force", o.force, "Replace an existing output directory");
    c->add_flag("-q,--quiet", o.quiet, "No progress lines");
  };

  // ---- upcycle ----
  auto* up = conv->add_subcommand("upcycle", "Experts as copies of each FFN (optionally fine-grained, with a shared expert)");
  struct U : Common {
    int64_t granularity = 1;
    double noise = 0;
    bool shared = false;
    std::string router = "random", prompts;
    double cond_warn = 100;
  };
  auto u = std::make_shared<U>();
  add_common(up, *u);
  up->add_option("--granularity", u->granularity, "Cut each FFN copy into G neuron slices (G experts per copy)")
      ->capture_default_str();
  up->add_option("--noise", u->noise, "Perturb each expert by N(0, σ²)·RMS of its matrix (0: identical experts)")
      ->capture_default_str();
  up->add_flag("--shared-expert", u->shared, "Keep the original FFN as an always-on shared expert");
  up->add_option("--router", u->router, "Router initialisation: random, zero or prompts")->capture_default_str();
  up->add_option("--prompts", u->prompts, "Prompt recipe (YAML or JSON, mergekit-moe style) for --router prompts");
  up->add_option("--max-router-cond", u->cond_warn, "Warn when a prompts router's condition number exceeds this")
      ->capture_default_str();
  up->callback([u, &ctx] {
    UpcycleOptions o;
    fill_common(o, *u, ctx);
    o.granularity = u->granularity;
    o.noise = u->noise;
    o.shared_expert = u->shared;
    o.router = parse_router_init(u->router);
    o.prompts = u->prompts;
    o.router_cond_warn = u->cond_warn;
    emit(upcycle(u->dense, u->out, o), u->json, u->report);
  });

  // ---- factorize ----
  auto* fa = conv->add_subcommand("factorize", "Experts as groups of each FFN's neurons, with a router");
  struct F : Common {
    std::string split = "kmeans", router = "centroid", calib_text, calib_stats;
    double shared_pct = 0;
    int64_t ctx = 512, chunks = 0, max_tokens = 8192;
    bool on_up = false, no_refit = false;
    double refit_ridge = 0.3;
  };
  auto f = std::make_shared<F>();
  add_common(fa, *f);
  fa->add_option("--split", f->split, "Neuron split: random, kmeans (weights only) or coactivation (calibration)")
      ->capture_default_str();
  fa->add_flag("--kmeans-on-up", f->on_up, "Cluster up_proj rows instead of gate_proj rows (--split kmeans)");
  fa->add_option("--router", f->router, "Router: centroid (weights only), fit (ridge on calibration), random or zero")
      ->capture_default_str();
  fa->add_option("--shared-neurons", f->shared_pct, "Percentage of neurons (most often active) kept as a shared expert")
      ->capture_default_str();
  auto* ct = fa->add_option("--calib-text", f->calib_text, "Calibration text file");
  auto* cs = fa->add_option("--calib-stats", f->calib_stats,
                            "Saved calibration statistics (moetool calibrate --hidden --activations)");
  ct->excludes(cs);
  fa->add_option("--ctx", f->ctx, "Calibration tokens per chunk")->capture_default_str();
  fa->add_option("--chunks", f->chunks, "Use at most this many calibration chunks (0 = all)")->capture_default_str();
  fa->add_option("--max-calib-tokens", f->max_tokens, "Calibration tokens used for splits and fits (subsampled)")
      ->capture_default_str();
  fa->add_flag("--no-refit", f->no_refit,
               "With calibration and top-k < experts, do not refit the experts' down projections (closed-form ridge "
               "for the router's routing; on by default)");
  fa->add_option("--refit-ridge", f->refit_ridge,
                 "Ridge of the down refit towards the construction, relative to the mean feature energy")
      ->capture_default_str();
  fa->callback([f, &ctx] {
    FactorizeOptions o;
    fill_common(o, *f, ctx);
    o.split = parse_split_method(f->split);
    o.kmeans_on_up = f->on_up;
    o.router = parse_factor_router(f->router);
    o.shared_neurons_pct = f->shared_pct;
    o.refit = !f->no_refit;
    o.refit_ridge = f->refit_ridge;
    o.calib_text = f->calib_text;
    o.calib_stats = f->calib_stats;
    o.ctx = f->ctx;
    o.chunks = f->chunks;
    o.max_fit_tokens = f->max_tokens;
    emit(factorize(f->dense, f->out, o), f->json, f->report);
  });
}

}  // namespace moetool::cli
