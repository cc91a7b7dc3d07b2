// convert/factorize.cc — FFN factorization into experts (see factorize.h).
//
// Per layer: (1) shared neurons, if asked: the most often active on the calibration text, rounded up
// so the rest divides into N groups; (2) the split of the routed neurons; (3) the router; (4) the
// experts written: expert e = rows g_e of gate/up, columns g_e of down × top-k; the shared expert =
// rows/columns of the shared neurons, down × the family's shared scale (2 for a sigmoid gate written
// as zeros). With renormalised top-k weights w (Σ w = 1) the routed output is k·Σ w_e·FFN_e(x): the
// dense sum when k = N with equal weights, the sum of the chosen experts when k < N and w ≈ 1/k.
#include "convert/factorize.h"

#include <cmath>
#include <numeric>

#include "convert/expert_refit.h"
#include "convert/moe_writer.h"
#include "convert/rng.h"
#include "convert/router_fit.h"
#include "convert/router_init.h"
#include "core/error.h"
#include "formats/checkpoint_files.h"
#include "core/fs.h"
#include "kernels/ops.h"
#include "engine/calibrate.h"
#include "engine/text.h"
#include "engine/weights.h"

namespace moetool {

const Choice<FactorRouter> kFactorRouters[] = {{FactorRouter::Centroid, "centroid"},
                                               {FactorRouter::Fit, "fit"},
                                               {FactorRouter::Random, "random"},
                                               {FactorRouter::Zero, "zero"}};

FactorRouter parse_factor_router(const std::string& s) {
  return parse_choice(kFactorRouters, s, "--router: unknown factorization router");
}
const char* factor_router_name(FactorRouter r) { return choice_name(kFactorRouters, r); }

namespace {

// Calibration of the dense model, reduced to what factorization uses.
struct Calib {
  CalibrationStats stats;
  bool have = false;                // hidden states too: routing diagnostics and fits possible
  std::vector<int64_t> pick;        // the subsampled token indices used
};

// What every layer of one factorization shares.
struct Job {
  const Model& dense;
  const FactorizeOptions& opt;
  const MoeTarget& tgt;
  const Calib& cal;
  int64_t n_shared;  // shared neurons per layer
};

// Router inputs of layer l for the picked tokens: rmsnorm(h_before) · ffn_norm, [T, H].
std::vector<float> router_inputs(const LayerCalibration& lc, const std::vector<int64_t>& pick, int64_t H,
                                 const std::vector<float>& norm_w, float eps) {
  const int64_t T = static_cast<int64_t>(pick.size());
  std::vector<float> h(static_cast<size_t>(T * H)), x(static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t)
    std::copy_n(lc.hidden_before.data() + pick[static_cast<size_t>(t)] * H, H, h.data() + t * H);
  ops::rmsnorm(h.data(), norm_w.data(), x.data(), T, H, eps);
  return x;
}

// Checks the options; returns the shared neuron count (rounded up so the rest splits into N equal
// groups).
int64_t shared_neuron_count(const ModelConfig& dc, const FactorizeOptions& opt) {
  const int64_t N = opt.experts, K = opt.top_k, I = dc.intermediate_size;
  check(N >= 1, "factorize: --experts must be at least 1, got ", N);
  check(K >= 1 && K <= N, "factorize: --top-k ", K, " must be between 1 and --experts (", N, ")");
  check(opt.shared_neurons_pct >= 0 && opt.shared_neurons_pct < 100,
        "factorize: --shared-neurons must be a percentage in [0, 100)");
  check(opt.calib_text.empty() || opt.calib_stats.empty(), "factorize: give --calib-text or --calib-stats, not both");
  check(opt.max_fit_tokens >= 1, "factorize: the calibration token limit must be positive");
  const bool have_calib = !opt.calib_text.empty() || !opt.calib_stats.empty();
  const char* needs = opt.split == SplitMethod::Coactivation ? "--split coactivation"
                      : opt.shared_neurons_pct > 0           ? "--shared-neurons"
                      : opt.router == FactorRouter::Fit      ? "--router fit"
                                                             : nullptr;
  if (needs && !have_calib) fail("factorize: ", needs, " needs calibration: --calib-text FILE or --calib-stats FILE");

  int64_t n_shared = static_cast<int64_t>(std::llround(opt.shared_neurons_pct / 100.0 * static_cast<double>(I)));
  if (opt.shared_neurons_pct > 0 && n_shared == 0) n_shared = 1;
  n_shared += (I - n_shared) % N;
  if (opt.shared_neurons_pct == 0 && n_shared > 0)
    fail("factorize: the FFN width ", I, " does not split into ", N, " equal experts (use --shared-neurons to keep ",
         "the remainder as a shared expert, or another --experts)");
  check(I - n_shared >= N, "factorize: ", I - n_shared, " routed neurons cannot make ", N, " experts");
  return n_shared;
}

// The calibration statistics (loaded or computed), checked, with the tokens to use picked.
void load_calibration(const Model& dense, const std::string& dense_path, const FactorizeOptions& opt, Calib& cal) {
  const ModelConfig& dc = dense.config();
  const int64_t L = dc.num_layers, H = dc.hidden_size, I = dc.intermediate_size;
  CalibrationStats& stats = cal.stats;
  if (!opt.calib_stats.empty()) {
    stats = CalibrationStats::load(opt.calib_stats);
    if (static_cast<int64_t>(stats.layers.size()) != L || stats.hidden_size != H)
      fail(opt.calib_stats, ": calibration of a model with ", stats.layers.size(), " layers and hidden size ",
           stats.hidden_size, ", but ", dense_path, " has ", L, " and ", H);
  } else {
    auto tok = load_tokenizer(dense_path);
    const int64_t maxpos = dc.max_position_embeddings;
    if (maxpos > 0 && opt.ctx > maxpos) fail("--ctx ", opt.ctx, " exceeds the model's context of ", maxpos);
    auto chunks = make_chunks(*tok, read_file(opt.calib_text), opt.ctx, opt.chunks, true, opt.calib_text);
    Engine eng(safetensors_weights(dense), /*keep_layers=*/false);
    CalibrationOptions co;
    co.router = false;
    co.hidden = true;
    co.ffn_activations = true;
    co.second_moments = false;
    if (opt.progress) co.progress = [&](const std::string& l) { opt.progress("calibrate " + l); };
    stats = calibrate(eng, chunks, co);
  }
  cal.have = true;
  for (int64_t l = 0; l < L; ++l) {
    const LayerCalibration& lc = stats.layers[static_cast<size_t>(l)];
    auto it = lc.activations.find(-1);
    if (it == lc.activations.end() || static_cast<int64_t>(it->second.size()) != stats.num_tokens * I)
      fail(opt.calib_stats.empty() ? opt.calib_text : opt.calib_stats, ": layer ", l,
           " has no dense FFN activations for every token (run `moetool calibrate --activations --hidden`)");
    if (static_cast<int64_t>(lc.hidden_before.size()) != stats.num_tokens * H) {
      if (opt.router == FactorRouter::Fit)
        fail(opt.calib_stats, ": layer ", l, " has no hidden states (run `moetool calibrate --hidden --activations`)");
      cal.have = false;  // splits can still use the activations; no routing diagnostics
    }
  }
  const int64_t T = std::min(stats.num_tokens, opt.max_fit_tokens);
  for (int64_t i = 0; i < T; ++i) cal.pick.push_back(i * stats.num_tokens / T);
}

// The router [N, H] of layer l by opt.router (the fit and diagnostics in lr). f_gate [I, H], f_down
// [H, I], A [T, I]: activations of the picked tokens.
// When calibration is there, also the routing of the calibration tokens by the final router.
struct Routing {
  std::vector<std::vector<int32_t>> sel;
  std::vector<std::vector<float>> w;
};
std::vector<float> layer_router(const Job& j, int64_t l, const std::vector<float>& f_gate,
                                const std::vector<float>& f_down, const std::vector<float>& A,
                                const NeuronGroups& groups, const std::vector<int64_t>& shared,
                                ConvertLayerReport& lr, Routing& routing) {
  const ModelConfig& dc = j.dense.config();
  const int64_t N = j.opt.experts, K = j.opt.top_k, H = dc.hidden_size, I = dc.intermediate_size;
  const int64_t T = static_cast<int64_t>(j.cal.pick.size());
  std::vector<float> R;
  std::unique_ptr<RoutingProbe> probe;
  if (j.cal.have) {
    const std::vector<float> nw = j.dense.weight(Role::FfnNorm, l).to_f32();
    probe = std::make_unique<RoutingProbe>(router_inputs(j.cal.stats.layers[static_cast<size_t>(l)], j.cal.pick, H,
                                                         nw, static_cast<float>(dc.rms_norm_eps)),
                                           T, H, A.data(), I, f_down.data(), groups, shared);
  }
  switch (j.opt.router) {
    case FactorRouter::Centroid: R = centroid_router(f_gate.data(), H, groups); break;
    case FactorRouter::Random: R = random_router(N, H, random_router_stdev(dc), j.opt.seed, l); break;
    case FactorRouter::Zero: R.assign(static_cast<size_t>(N * H), 0.0f); break;
    case FactorRouter::Fit: {
      const RidgeRouter fit = fit_ridge_router(probe->inputs(), T, H, probe->output_norms(), N);
      R = fit.W;
      lr.router_r2 = fit.r2;
      lr.router_lambda = fit.lambda;
      // The logit scale (softmax temperature) that reproduces the dense FFN best at this top-k.
      if (K < N) {
        const auto [s, err] = probe->best_scale(R, K);
        for (auto& x : R) x = static_cast<float>(x * s);
        lr.router_scale = s;
      }
      break;
    }
  }
  if (probe) {
    lr.recon_rel_err = probe->recon_error(R, 1.0, K);
    lr.recon_oracle_err = probe->oracle_error(K);
    probe->routing(R, K, routing.sel, routing.w);
  }
  return R;
}

// Writes the experts of layer l: expert e = rows g_e of gate/up, columns g_e of down × top-k; the shared
// expert = the shared neurons' rows/columns, down × the family's shared scale.
// routed_scale: top-k for the dense down, 1 for refitted (effective) columns.
void write_experts(MoeCheckpointWriter& w, const Job& j, int64_t l, const std::vector<float>& gate,
                   const std::vector<float>& up, const std::vector<float>& down, const NeuronGroups& groups,
                   const std::vector<int64_t>& shared, double routed_scale, ConvertLayerReport& lr) {
  const int64_t H = j.dense.config().hidden_size, I = j.dense.config().intermediate_size;
  std::vector<float> buf;
  auto gather_rows = [&](const std::vector<float>& M, const std::vector<int64_t>& idx) {
    buf.resize(idx.size() * static_cast<size_t>(H));
    for (size_t k = 0; k < idx.size(); ++k) std::copy_n(M.data() + idx[k] * H, H, buf.data() + k * static_cast<size_t>(H));
  };
  auto gather_cols = [&](const std::vector<int64_t>& idx, double scale) {
    const size_t n = idx.size();
    buf.resize(static_cast<size_t>(H) * n);
    const float s = static_cast<float>(scale);
    for (int64_t h = 0; h < H; ++h)
      for (size_t k = 0; k < n; ++k) buf[static_cast<size_t>(h) * n + k] = down[static_cast<size_t>(h * I + idx[k])] * s;
  };
  auto write_ffn = [&](Role g, Role u, Role d, int64_t e, const std::vector<int64_t>& idx, double down_scale) {
    gather_rows(gate, idx);
    w.write_f32({g, l, e}, buf.data(), buf.size());
    gather_rows(up, idx);
    w.write_f32({u, l, e}, buf.data(), buf.size());
    gather_cols(idx, down_scale);
    w.write_f32({d, l, e}, buf.data(), buf.size());
  };
  for (int64_t e = 0; e < j.opt.experts; ++e) {
    const auto& g = groups[static_cast<size_t>(e)];
    write_ffn(Role::ExpertGate, Role::ExpertUp, Role::ExpertDown, e, g, routed_scale);
    lr.expert_sizes.push_back(static_cast<int64_t>(g.size()));
  }
  if (j.tgt.config.moe->shared_intermediate > 0 && !j.tgt.placeholder_shared) {
    write_ffn(Role::SharedGate, Role::SharedUp, Role::SharedDown, -1, shared, j.tgt.shared_scale);
    lr.shared_size = static_cast<int64_t>(shared.size());
  }
}

// Layer l: shared neurons, the split of the others, the router, the experts.
ConvertLayerReport factorize_layer(MoeCheckpointWriter& w, const Job& j, int64_t l) {
  const ModelConfig& dc = j.dense.config();
  const int64_t N = j.opt.experts, H = dc.hidden_size, I = dc.intermediate_size;
  const Tensor gt = j.dense.weight(Role::Gate, l), ut = j.dense.weight(Role::Up, l), dt = j.dense.weight(Role::Down, l);
  const std::vector<float> gate = gt.to_f32(), up = ut.to_f32(), down = dt.to_f32();  // [I,H], [I,H], [H,I]
  for (const Tensor* t : {&gt, &ut, &dt}) release_pages(j.dense.checkpoint(), *t);

  // Activations of the picked tokens [T, I].
  const int64_t T = static_cast<int64_t>(j.cal.pick.size());
  std::vector<float> A;
  if (!j.cal.stats.layers.empty()) {
    const auto& all = j.cal.stats.layers[static_cast<size_t>(l)].activations.at(-1);
    A.resize(static_cast<size_t>(T * I));
    for (int64_t t = 0; t < T; ++t)
      std::copy_n(all.data() + j.cal.pick[static_cast<size_t>(t)] * I, I, A.data() + t * I);
  }

  std::vector<int64_t> shared;
  if (j.n_shared > 0) shared = most_active_neurons(A.data(), T, I, j.n_shared);
  std::vector<int64_t> routed;
  {
    std::vector<bool> is_shared(static_cast<size_t>(I), false);
    for (int64_t i : shared) is_shared[static_cast<size_t>(i)] = true;
    for (int64_t i = 0; i < I; ++i)
      if (!is_shared[static_cast<size_t>(i)]) routed.push_back(i);
  }
  const uint64_t skey = rng::key(j.opt.seed, str("split.", l));
  NeuronGroups groups;
  ConvertLayerReport lr;
  lr.layer = l;
  lr.router = factor_router_name(j.opt.router);
  if (j.opt.split == SplitMethod::Random) {
    groups = split_random(routed, N, skey);
  } else if (j.opt.split == SplitMethod::KMeans) {
    groups = split_kmeans((j.opt.kmeans_on_up ? up : gate).data(), H, routed, N, skey);
  } else {
    const std::vector<double> C = coactivation_matrix(A.data(), T, I, routed);
    double wi = 0;
    groups = split_coactivation(C, routed, N, skey, &wi);
    lr.coactivation_within = wi;
  }
  Routing routing;
  const std::vector<float> R = layer_router(j, l, gate, down, A, groups, shared, lr, routing);
  w.write_f32({Role::Router, l}, R.data(), R.size());
  if (j.opt.refit && j.opt.top_k < N && !routing.sel.empty()) {
    // The experts' down projections refitted for this routing (effective columns: routed scale 1).
    const DownRefit rf = refit_down(A.data(), T, I, down.data(), H, groups, shared, routing.sel, routing.w, j.opt.top_k,
                                     j.opt.refit_ridge);
    lr.refit_err_before = rf.err_before;
    lr.refit_err_after = rf.err_after;
    write_experts(w, j, l, gate, up, rf.G, groups, shared, 1.0, lr);
  } else {
    write_experts(w, j, l, gate, up, down, groups, shared, static_cast<double>(j.opt.top_k), lr);
  }
  return lr;
}

}  // namespace

ConvertReport factorize(const std::string& dense_path, const std::string& out_dir, const FactorizeOptions& opt) {
  const auto t0 = Clock::now();
  Model dense = Model::open(dense_path);
  const ModelConfig& dc = dense.config();
  const int64_t n_shared = shared_neuron_count(dc, opt);
  const int64_t N = opt.experts, K = opt.top_k, L = dc.num_layers, Ie = (dc.intermediate_size - n_shared) / N;
  const MoeTarget tgt = plan_moe_target(dc, {opt.to, N, K, Ie, n_shared});
  const ModelConfig& tc = tgt.config;

  ConvertReport rep = new_report("factorize", dense_path, out_dir, dc, tgt, opt);
  rep.shared_intermediate = n_shared;
  rep.split = split_method_name(opt.split);
  rep.router = factor_router_name(opt.router);
  rep.shared_neurons_pct = opt.shared_neurons_pct;
  rep.exact_when_all_active = true;
  if (K < N) rep.notes.push_back(str("routed down_proj carries the factor top-k = ", K, ": all ", N,
                                     " experts with equal weights give the dense FFN; top-", K, " drops the rest"));

  // Calibration (before anything is written).
  Calib cal;
  if (!opt.calib_text.empty() || !opt.calib_stats.empty()) {
    load_calibration(dense, dense_path, opt, cal);
    rep.calibration_tokens = static_cast<int64_t>(cal.pick.size());
  }

  MoeCheckpointWriter w(dense, tgt, out_dir, opt,
                        str("factorize from=", dc.family, " to=", tc.family, " experts=", N, " top_k=", K,
                            " split=", rep.split, " router=", rep.router, " shared_neurons=", n_shared));
  w.copy_layer(-1);
  const Job job{dense, opt, tgt, cal, n_shared};
  for (int64_t l = 0; l < L; ++l) {
    const auto tl = Clock::now();
    w.copy_layer(l);
    ConvertLayerReport lr = factorize_layer(w, job, l);
    lr.seconds = seconds_since(tl);
    if (opt.progress) {
      std::string line = str("[", l + 1, "/", L, "] layer ", l, ": ", N, " experts of ", Ie,
                             lr.shared_size ? str(" + shared ", lr.shared_size) : std::string(), ", split ", rep.split,
                             ", router ", rep.router);
      if (lr.router_r2) line += str(" (R² ", *lr.router_r2, ")");
      if (lr.recon_rel_err) line += str(", calibration reconstruction error ", *lr.recon_rel_err);
      if (lr.refit_err_after) line += str(", after the down refit ", *lr.refit_err_after);
      opt.progress(line + str(", ", lr.seconds, " s"));
    }
    if (lr.router_r2 && *lr.router_r2 < 0.1)
      add_warning(rep, opt, str("layer ", l, ": the fitted router explains little of the experts' output norms (R² ",
                                *lr.router_r2, ")"));
    rep.per_layer.push_back(std::move(lr));
  }
  finish_report(rep, w, tgt, t0);
  return rep;
}

}  // namespace moetool
