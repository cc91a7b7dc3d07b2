// convert/factorize.cc — FFN factorization into experts (see factorize.h).
//
// Per layer: (1) shared neurons, if asked: the most often active on the calibration text, rounded up
// so the rest divides into N groups; (2) the split of the routed neurons; (3) the router; (4) the
// experts written: expert e = rows g_e of gate/up, columns g_e of down × top-k; the shared expert =
// rows/columns of the shared neurons, down × the family's shared scale (2 for a sigmoid gate written
// as zeros). With renormalised top-k weights w (Σ w = 1) the routed output is k·Σ w_e·FFN_e(x): the
// dense sum when k = N with equal weights, the sum of the chosen experts when k < N and w ≈ 1/k.
#include "convert/factorize.h"

#include <chrono>
#include <cmath>
#include <numeric>

#include "convert/moe_writer.h"
#include "convert/rng.h"
#include "convert/router_fit.h"
#include "convert/router_init.h"
#include "core/error.h"
#include "core/fs.h"
#include "kernels/ops.h"
#include "engine/calibrate.h"
#include "engine/text.h"
#include "engine/weights.h"

namespace moetool {

FactorRouter parse_factor_router(const std::string& s) {
  if (s == "centroid") return FactorRouter::Centroid;
  if (s == "fit") return FactorRouter::Fit;
  if (s == "random") return FactorRouter::Random;
  if (s == "zero") return FactorRouter::Zero;
  fail("--router: unknown factorization router '", s, "' (expected centroid, fit, random or zero)");
}

const char* factor_router_name(FactorRouter r) {
  switch (r) {
    case FactorRouter::Centroid: return "centroid";
    case FactorRouter::Fit: return "fit";
    case FactorRouter::Random: return "random";
    case FactorRouter::Zero: return "zero";
  }
  return "?";
}

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Calibration of the dense model, reduced to what factorization uses.
struct Calib {
  bool have = false;
  int64_t tokens = 0;               // all calibration tokens
  std::vector<int64_t> pick;        // the subsampled token indices used
  const CalibrationStats* st = nullptr;
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

}  // namespace

ConvertReport factorize(const std::string& dense_path, const std::string& out_dir, const FactorizeOptions& opt) {
  const auto t0 = Clock::now();
  Model dense = Model::open(dense_path);
  const ModelConfig& dc = dense.config();
  const int64_t N = opt.experts, K = opt.top_k, H = dc.hidden_size, I = dc.intermediate_size, L = dc.num_layers;
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

  // Neuron counts: shared (rounded up so the rest splits evenly) and per routed expert.
  int64_t n_shared = static_cast<int64_t>(std::llround(opt.shared_neurons_pct / 100.0 * static_cast<double>(I)));
  if (opt.shared_neurons_pct > 0 && n_shared == 0) n_shared = 1;
  n_shared += (I - n_shared) % N;
  if (opt.shared_neurons_pct == 0 && n_shared > 0)
    fail("factorize: the FFN width ", I, " does not split into ", N, " equal experts (use --shared-neurons to keep ",
         "the remainder as a shared expert, or another --experts)");
  check(I - n_shared >= N, "factorize: ", I - n_shared, " routed neurons cannot make ", N, " experts");
  const int64_t Ie = (I - n_shared) / N;

  MoeTargetRequest req;
  req.family = opt.to;
  req.experts = N;
  req.top_k = K;
  req.expert_intermediate = Ie;
  req.shared_intermediate = n_shared;
  const MoeTarget tgt = plan_moe_target(dc, req);
  const ModelConfig& tc = tgt.config;

  ConvertReport rep;
  rep.method = "factorize";
  rep.source = dense_path;
  rep.output = out_dir;
  rep.source_family = dc.family;
  rep.target_family = tc.family;
  rep.layers = L;
  rep.experts = N;
  rep.top_k = K;
  rep.expert_intermediate = Ie;
  rep.shared_intermediate = n_shared;
  rep.split = split_method_name(opt.split);
  rep.router = factor_router_name(opt.router);
  rep.shared_neurons_pct = opt.shared_neurons_pct;
  rep.seed = opt.seed;
  rep.exact_when_all_active = true;
  rep.notes = tgt.notes;
  if (K < N) rep.notes.push_back(str("routed down_proj carries the factor top-k = ", K, ": all ", N,
                                     " experts with equal weights give the dense FFN; top-", K, " drops the rest"));
  auto warn = [&](const std::string& w) {
    rep.warnings.push_back(w);
    if (opt.warn) opt.warn(w);
  };

  // Calibration (before anything is written).
  CalibrationStats stats;
  Calib cal;
  if (have_calib) {
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
    cal.st = &stats;
    cal.tokens = stats.num_tokens;
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
    const int64_t T = std::min(cal.tokens, opt.max_fit_tokens);
    for (int64_t i = 0; i < T; ++i) cal.pick.push_back(i * cal.tokens / T);
    rep.calibration_tokens = T;
  }

  MoeWriterOptions wo;
  wo.overwrite = opt.overwrite;
  wo.max_shard_bytes = opt.max_shard_bytes;
  wo.metadata = opt.metadata;
  wo.metadata["moetool.seed"] = std::to_string(opt.seed);
  wo.metadata["moetool.convert"] =
      str("factorize from=", dc.family, " to=", tc.family, " experts=", N, " top_k=", K, " split=", rep.split,
          " router=", rep.router, " shared_neurons=", n_shared);
  MoeCheckpointWriter w(dense, tgt, out_dir, wo);
  w.copy_model_tensors();
  const Checkpoint& ck = dense.checkpoint();
  const double routed_scale = static_cast<double>(K);
  const double shared_scale = tgt.shared_scale;
  const int64_t T = static_cast<int64_t>(cal.pick.size());

  for (int64_t l = 0; l < L; ++l) {
    const auto tl = Clock::now();
    w.copy_layer(l);
    const Tensor gt = dense.weight(Role::Gate, l), ut = dense.weight(Role::Up, l), dt = dense.weight(Role::Down, l);
    if (l + 1 < L)
      for (Role r : {Role::Gate, Role::Up, Role::Down}) prefetch_pages(ck, dense.weight(r, l + 1));
    const std::vector<float> gate = gt.to_f32(), up = ut.to_f32(), down = dt.to_f32();  // [I,H], [I,H], [H,I]
    for (const Tensor* t : {&gt, &ut, &dt}) release_pages(ck, *t);

    // Activations of the picked tokens [T, I].
    std::vector<float> A;
    if (!stats.layers.empty()) {
      const auto& all = stats.layers[static_cast<size_t>(l)].activations.at(-1);
      A.resize(static_cast<size_t>(T * I));
      for (int64_t t = 0; t < T; ++t)
        std::copy_n(all.data() + cal.pick[static_cast<size_t>(t)] * I, I, A.data() + t * I);
    }

    std::vector<int64_t> shared;
    if (n_shared > 0) shared = most_active_neurons(A.data(), T, I, n_shared);
    std::vector<int64_t> routed;
    {
      std::vector<bool> is_shared(static_cast<size_t>(I), false);
      for (int64_t i : shared) is_shared[static_cast<size_t>(i)] = true;
      for (int64_t i = 0; i < I; ++i)
        if (!is_shared[static_cast<size_t>(i)]) routed.push_back(i);
    }
    const uint64_t skey = rng::key(opt.seed, str("split.", l));
    NeuronGroups groups;
    std::optional<double> within;
    if (opt.split == SplitMethod::Random) {
      groups = split_random(routed, N, skey);
    } else if (opt.split == SplitMethod::KMeans) {
      groups = split_kmeans((opt.kmeans_on_up ? up : gate).data(), H, routed, N, skey);
    } else {
      const std::vector<double> C = coactivation_matrix(A.data(), T, I, routed);
      double wi = 0;
      groups = split_coactivation(C, routed, N, skey, &wi);
      within = wi;
    }

    // Router [N, H].
    ConvertLayerReport lr;
    lr.layer = l;
    lr.router = rep.router;
    std::vector<float> R;
    std::unique_ptr<RoutingProbe> probe;
    if (cal.have) {
      const std::vector<float> nw = dense.weight(Role::FfnNorm, l).to_f32();
      probe = std::make_unique<RoutingProbe>(
          router_inputs(stats.layers[static_cast<size_t>(l)], cal.pick, H, nw, static_cast<float>(dc.rms_norm_eps)), T,
          H, A.data(), I, down.data(), groups, shared);
    }
    switch (opt.router) {
      case FactorRouter::Centroid: R = centroid_router(gate.data(), H, groups); break;
      case FactorRouter::Random: R = random_router(N, H, random_router_stdev(dc), opt.seed, l); break;
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
    }
    lr.coactivation_within = within;
    w.write_f32(Role::Router, l, -1, R.data(), R.size());

    // Experts.
    std::vector<float> buf;
    auto gather_rows = [&](const std::vector<float>& M, const std::vector<int64_t>& idx) {
      buf.resize(idx.size() * static_cast<size_t>(H));
      for (size_t j = 0; j < idx.size(); ++j) std::copy_n(M.data() + idx[j] * H, H, buf.data() + j * static_cast<size_t>(H));
    };
    auto gather_cols = [&](const std::vector<int64_t>& idx, double scale) {
      const size_t n = idx.size();
      buf.resize(static_cast<size_t>(H) * n);
      const float s = static_cast<float>(scale);
      for (int64_t h = 0; h < H; ++h)
        for (size_t j = 0; j < n; ++j) buf[static_cast<size_t>(h) * n + j] = down[static_cast<size_t>(h * I + idx[j])] * s;
    };
    for (int64_t e = 0; e < N; ++e) {
      const auto& g = groups[static_cast<size_t>(e)];
      gather_rows(gate, g);
      w.write_f32(Role::ExpertGate, l, e, buf.data(), buf.size());
      gather_rows(up, g);
      w.write_f32(Role::ExpertUp, l, e, buf.data(), buf.size());
      gather_cols(g, routed_scale);
      w.write_f32(Role::ExpertDown, l, e, buf.data(), buf.size());
      lr.expert_sizes.push_back(static_cast<int64_t>(g.size()));
    }
    if (tc.moe->shared_intermediate > 0) {
      if (tgt.placeholder_shared) {
        for (Role r : {Role::SharedGate, Role::SharedUp, Role::SharedDown}) w.write_zeros(r, l);
      } else {
        gather_rows(gate, shared);
        w.write_f32(Role::SharedGate, l, -1, buf.data(), buf.size());
        gather_rows(up, shared);
        w.write_f32(Role::SharedUp, l, -1, buf.data(), buf.size());
        gather_cols(shared, shared_scale);
        w.write_f32(Role::SharedDown, l, -1, buf.data(), buf.size());
        lr.shared_size = static_cast<int64_t>(shared.size());
      }
      if (tc.moe->shared_gated) w.write_zeros(Role::SharedExpertGate, l);
    }
    lr.seconds = since(tl);
    if (opt.progress) {
      std::string line = str("[", l + 1, "/", L, "] layer ", l, ": ", N, " experts of ", Ie,
                             lr.shared_size ? str(" + shared ", lr.shared_size) : std::string(), ", split ", rep.split,
                             ", router ", rep.router);
      if (lr.router_r2) line += str(" (R² ", *lr.router_r2, ")");
      if (lr.recon_rel_err) line += str(", calibration reconstruction error ", *lr.recon_rel_err);
      opt.progress(line + str(", ", lr.seconds, " s"));
    }
    if (lr.router_r2 && *lr.router_r2 < 0.1)
      warn(str("layer ", l, ": the fitted router explains little of the experts' output norms (R² ", *lr.router_r2,
               ")"));
    rep.per_layer.push_back(std::move(lr));
  }
  rep.files = w.finish();
  rep.bytes = w.bytes();
  const ParamCount pc = count_params(*tgt.family, tc);
  rep.params_total = pc.total;
  rep.params_active = pc.active;
  rep.seconds = since(t0);
  return rep;
}

}  // namespace moetool
