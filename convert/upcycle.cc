// convert/upcycle.cc — upcycling dense FFNs into experts (see upcycle.h).
//
// Expert e = (copy c, slice s) with e = c·G + s holds neurons [s·I/G, (s+1)·I/G) of the FFN. Router
// rows are repeated per copy, so the G slices of a copy always tie and are chosen together (top-k is a
// multiple of G; on exact ties the lower index wins, which also keeps copies whole). With renormalised
// top-k weights each slice's weights over the chosen copies sum to 1/G, so down_proj carries the
// factor G. With a shared expert the output is split half/half: routed down_proj × G/2, and the shared
// expert (the original FFN) × 1/2, times 2 again when the family gates it by sigmoid(0) = 0.5.
#include "convert/upcycle.h"

#include <cmath>

#include "convert/moe_writer.h"
#include "convert/rng.h"
#include "core/error.h"
#include "formats/checkpoint_files.h"
#include "engine/text.h"
#include "engine/weights.h"

namespace moetool {

namespace {

double rms(const float* v, size_t n) {
  double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static) if (n > 65536)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) s += static_cast<double>(v[i]) * v[i];
  return n ? std::sqrt(s / static_cast<double>(n)) : 0.0;
}

// v ← scale · (v + σ·rms(v)·N(0, 1)) with the noise stream `key` (σ = 0: scale only).
void perturb_and_scale(float* v, size_t n, double sigma, uint64_t key, double scale) {
  const double amp = sigma > 0 ? sigma * rms(v, n) : 0.0;
  const float fs = static_cast<float>(scale);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) {
    float x = v[i];
    if (amp > 0) x += static_cast<float>(amp * rng::normal(key, static_cast<uint64_t>(i)));
    v[i] = x * fs;
  }
}

void check_options(const ModelConfig& dc, const UpcycleOptions& opt) {
  const int64_t G = opt.granularity, N = opt.experts, K = opt.top_k, I = dc.intermediate_size;
  check(G >= 1, "upcycle: --granularity must be at least 1, got ", G);
  check(N >= 1, "upcycle: --experts must be at least 1, got ", N);
  check(K >= 1 && K <= N, "upcycle: --top-k ", K, " must be between 1 and --experts (", N, ")");
  check(N % G == 0, "upcycle: --experts ", N, " must be a multiple of --granularity ", G,
        " (each copy of the FFN becomes ", G, " experts)");
  check(K % G == 0, "upcycle: --top-k ", K, " must be a multiple of --granularity ", G,
        " (the slices of one copy are chosen together; otherwise the output is not the dense FFN)");
  check(I % G == 0, "upcycle: the FFN width ", I, " is not divisible by --granularity ", G);
  check(opt.noise >= 0 && std::isfinite(opt.noise), "upcycle: --noise must be a non-negative number");
  check(opt.router == RouterInit::Prompts || opt.prompts.empty(), "upcycle: --prompts is used only with --router prompts");
  check(opt.router != RouterInit::Prompts || !opt.prompts.empty(), "upcycle: --router prompts needs --prompts FILE");
}

// Router rows of every layer, one per copy of the FFN [copies, H]; the condition number of each
// layer's prompts router in `conds` (warnings in the report).
std::vector<std::vector<float>> copy_routers(const Model& dense, const std::string& dense_path,
                                             const UpcycleOptions& opt, int64_t copies,
                                             std::vector<std::optional<double>>& conds, ConvertReport& rep) {
  const ModelConfig& dc = dense.config();
  const int64_t L = dc.num_layers, H = dc.hidden_size;
  conds.assign(static_cast<size_t>(L), std::nullopt);
  std::vector<std::vector<float>> rows(static_cast<size_t>(L));
  if (opt.router != RouterInit::Prompts) {
    const double sd = random_router_stdev(dc);
    for (int64_t l = 0; l < L; ++l)
      rows[static_cast<size_t>(l)] = opt.router == RouterInit::Random
                                         ? random_router(copies, H, sd, opt.seed, l)
                                         : std::vector<float>(static_cast<size_t>(copies * H), 0.0f);
    return rows;
  }
  const PromptRecipe recipe = load_prompt_recipe(opt.prompts);
  if (static_cast<int64_t>(recipe.experts.size()) != copies)
    fail(opt.prompts, ": the recipe has ", recipe.experts.size(), " experts but the conversion makes ", copies,
         " copies of the FFN (--experts ", opt.experts, " / --granularity ", opt.granularity, ")");
  auto tok = load_tokenizer(dense_path);
  Engine eng(safetensors_weights(dense), /*keep_layers=*/false);
  rows = prompt_routers(eng, *tok, recipe, opt.progress);
  for (int64_t l = 0; l < L; ++l) {
    const double c = condition_number(rows[static_cast<size_t>(l)].data(), copies, H);
    conds[static_cast<size_t>(l)] = c;
    if (!(c <= opt.router_cond_warn))
      add_warning(rep, opt,
                  str("layer ", l, ": the prompts router is ill-conditioned (condition number ", c, " > ",
                      opt.router_cond_warn, "): the experts' prompts are too similar to separate them"));
  }
  return rows;
}

// Writes layer l's MoE block: router rows of copy c repeated for its G slices; expert e = (copy e / G,
// slice e % G) with the slice's gate/up rows and down columns (× routed_scale), perturbed when asked;
// the shared expert as the whole FFN (down × shared_scale).
void upcycle_layer(MoeCheckpointWriter& w, const Model& dense, const MoeTarget& tgt, const UpcycleOptions& opt,
                   int64_t l, const std::vector<float>& copy_rows, double routed_scale, double shared_scale) {
  const int64_t G = opt.granularity, N = opt.experts, H = dense.config().hidden_size;
  const int64_t I = dense.config().intermediate_size, Is = I / G;
  const bool plain_copies = opt.noise == 0;
  const Tensor gate = dense.weight(Role::Gate, l);  // [I, H]
  const Tensor up = dense.weight(Role::Up, l);      // [I, H]
  const Tensor down = dense.weight(Role::Down, l);  // [H, I]

  std::vector<float> router(static_cast<size_t>(N * H));  // [N, H]
  for (int64_t e = 0; e < N; ++e) std::copy_n(copy_rows.data() + (e / G) * H, H, router.data() + e * H);
  w.write_f32({Role::Router, l}, router.data(), router.size());

  std::vector<float> down_f32;  // [H, I], when slices or scaling need it
  const bool down_raw = plain_copies && G == 1 && routed_scale == 1.0;
  if (!down_raw) down_f32 = down.to_f32();
  std::vector<float> buf;
  for (int64_t e = 0; e < N; ++e) {
    const int64_t s = e % G;
    for (Role r : {Role::ExpertGate, Role::ExpertUp}) {
      const Tensor src = (r == Role::ExpertGate ? gate : up).slice0(s * Is, (s + 1) * Is);  // [Is, H]
      if (plain_copies) {
        w.write({r, l, e}, src);
      } else {
        buf = src.to_f32();
        perturb_and_scale(buf.data(), buf.size(), opt.noise,
                          rng::key(opt.seed, str("noise.", l, ".", e, ".", role_name(r))), 1.0);
        w.write_f32({r, l, e}, buf.data(), buf.size());
      }
    }
    if (down_raw) {
      w.write({Role::ExpertDown, l, e}, down);
    } else {
      buf.resize(static_cast<size_t>(H * Is));  // [H, Is]: columns of slice s
      for (int64_t h = 0; h < H; ++h) std::copy_n(down_f32.data() + h * I + s * Is, Is, buf.data() + h * Is);
      perturb_and_scale(buf.data(), buf.size(), plain_copies ? 0.0 : opt.noise,
                        rng::key(opt.seed, str("noise.", l, ".", e, ".", role_name(Role::ExpertDown))), routed_scale);
      w.write_f32({Role::ExpertDown, l, e}, buf.data(), buf.size());
    }
  }

  if (tgt.config.moe->shared_intermediate > 0 && !tgt.placeholder_shared) {
    w.write({Role::SharedGate, l}, gate);
    w.write({Role::SharedUp, l}, up);
    if (shared_scale == 1.0) {
      w.write({Role::SharedDown, l}, down);
    } else {
      if (down_f32.empty()) down_f32 = down.to_f32();
      perturb_and_scale(down_f32.data(), down_f32.size(), 0.0, 0, shared_scale);
      w.write_f32({Role::SharedDown, l}, down_f32.data(), down_f32.size());
    }
  }
  for (const Tensor* t : {&gate, &up, &down}) release_pages(dense.checkpoint(), *t);
}

}  // namespace

ConvertReport upcycle(const std::string& dense_path, const std::string& out_dir, const UpcycleOptions& opt) {
  const auto t0 = Clock::now();
  Model dense = Model::open(dense_path);
  const ModelConfig& dc = dense.config();
  check_options(dc, opt);
  const int64_t G = opt.granularity, N = opt.experts, K = opt.top_k, L = dc.num_layers;
  const int64_t copies = N / G, Is = dc.intermediate_size / G;
  const MoeTarget tgt =
      plan_moe_target(dc, {opt.to, N, K, Is, opt.shared_expert ? dc.intermediate_size : 0});
  const ModelConfig& tc = tgt.config;

  ConvertReport rep = new_report("upcycle", dense_path, out_dir, dc, tgt, opt);
  rep.granularity = G;
  rep.router = router_init_name(opt.router);
  rep.noise = opt.noise;
  rep.exact_when_all_active = opt.noise == 0;

  // Routers are computed before anything is written.
  std::vector<std::optional<double>> conds;
  const std::vector<std::vector<float>> copy_rows = copy_routers(dense, dense_path, opt, copies, conds, rep);

  MoeCheckpointWriter w(dense, tgt, out_dir, opt,
                        str("upcycle from=", dc.family, " to=", tc.family, " experts=", N, " top_k=", K,
                            " granularity=", G, " noise=", opt.noise,
                            " shared_expert=", opt.shared_expert ? "true" : "false", " router=", rep.router));
  w.copy_layer(-1);

  const double shared_fraction = opt.shared_expert ? 0.5 : 0.0;
  const double routed_scale = (1.0 - shared_fraction) * static_cast<double>(G);
  const double shared_scale = shared_fraction * tgt.shared_scale;
  for (int64_t l = 0; l < L; ++l) {
    const auto tl = Clock::now();
    w.copy_layer(l);
    upcycle_layer(w, dense, tgt, opt, l, copy_rows[static_cast<size_t>(l)], routed_scale, shared_scale);

    ConvertLayerReport lr;
    lr.layer = l;
    lr.expert_sizes.assign(static_cast<size_t>(N), Is);
    lr.shared_size = tgt.placeholder_shared ? 0 : tc.moe->shared_intermediate;
    lr.router = rep.router;
    lr.router_cond = conds[static_cast<size_t>(l)];
    lr.seconds = seconds_since(tl);
    rep.per_layer.push_back(lr);
    if (opt.progress)
      opt.progress(str("[", l + 1, "/", L, "] layer ", l, ": ", N, " experts of ", Is,
                       lr.shared_size ? str(" + shared ", lr.shared_size) : std::string(), ", router ", rep.router,
                       lr.router_cond ? str(" (cond ", *lr.router_cond, ")") : std::string(), ", ", lr.seconds, " s"));
  }
  finish_report(rep, w, tgt, t0);
  return rep;
}

}  // namespace moetool
