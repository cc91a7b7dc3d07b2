// compress/prune.cc — the prune job (see prune.h).
#include "compress/prune.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <sstream>

#include "compress/expert_rewrite.h"
#include "compress/prune_measure.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/calibrate_job.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/model.h"

namespace moetool::prune {

namespace {

// K from --keep / --keep-fraction, checked against the model.
int64_t resolve_keep(const Options& o, const MoeConfig& mc) {
  const int64_t E = mc.num_experts;
  if (o.keep > 0 && o.keep_fraction > 0) fail("prune: give one of --keep K and --keep-fraction F, not both");
  if (o.keep <= 0 && o.keep_fraction <= 0) {
    if (o.slim > 0) return E;  // --slim alone: every expert kept, each narrowed
    fail("prune: give --keep K or --keep-fraction F (experts kept per layer)");
  }
  if (o.keep_fraction > 0 && !(o.keep_fraction < 1)) fail("prune: --keep-fraction ", o.keep_fraction, " must be in (0, 1)");
  const int64_t K = o.keep > 0 ? o.keep : static_cast<int64_t>(std::llround(o.keep_fraction * static_cast<double>(E)));
  if (K >= E && !(K == E && o.slim > 0)) fail("prune: --keep ", K, " leaves all ", E, " experts of each layer: nothing to prune (expected fewer than ", E, ")");
  if (K < mc.top_k) fail("prune: --keep ", K, " is below the ", mc.top_k, " experts each token uses (top-k)");
  return K;
}

// The calibration chunks of every --calib-text file, one file after another.
std::vector<std::vector<int32_t>> calib_chunks(const Options& o, const Model& m) {
  return calibration_chunks(*load_tokenizer(o.model), m.config().max_position_embeddings, o.calib_texts, o.ctx,
                            o.chunks);
}

// Statistics from --calib-stats (checked against the model) or a calibration run over the chunks.
CalibrationStats get_stats(const Options& o, const std::shared_ptr<const WeightSource>& weights,
                           const std::vector<std::vector<int32_t>>& chunks) {
  if (!o.calib_stats.empty()) {
    CalibrationStats st = CalibrationStats::load(o.calib_stats);
    check_stats_model(st, *weights, o.calib_stats);
    return st;
  }
  Engine eng(weights, /*keep_layers=*/false, o.device);
  CalibrationOptions co;
  co.router = true;
  co.second_moments = o.slim > 0;
  co.progress = o.progress;
  return calibrate(eng, chunks, co);
}

// Kept neurons of every kept expert (--slim): the top `width` by ‖a_j‖₂ · Σ_i |W_down[i, j]|.
std::vector<std::vector<int64_t>> slim_neurons(const Model& m, const CalibrationStats& st, int64_t l,
                                               const std::vector<int64_t>& keep, int64_t width,
                                               std::vector<std::string>& warnings) {
  std::vector<std::vector<int64_t>> out;
  const LayerCalibration& lc = st.layers.at(static_cast<size_t>(l));
  for (int64_t e : keep) {
    const std::vector<float> Wd = m.weight(Role::ExpertDown, l, e).to_f32();  // [H, I]
    const int64_t I = m.config().moe->expert_intermediate, H = static_cast<int64_t>(Wd.size()) / I;
    auto it = lc.inputs.find(LinearKey{Role::ExpertDown, l, e});
    const bool have = it != lc.inputs.end() && it->second.count > 0 &&
                      static_cast<int64_t>(it->second.sum_sq.size()) == I;
    if (!have)
      warnings.push_back(str("layer ", l, " expert ", e, ": no calibration token reached it; its neurons are ranked by ",
                             "weight magnitude alone"));
    std::vector<double> score(static_cast<size_t>(I), 0.0);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < I; ++j) score[static_cast<size_t>(j)] += std::fabs(Wd[static_cast<size_t>(h * I + j)]);
    if (have)
      for (int64_t j = 0; j < I; ++j) score[static_cast<size_t>(j)] *= std::sqrt(it->second.sum_sq[static_cast<size_t>(j)]);
    std::vector<int64_t> ids(static_cast<size_t>(I));
    std::iota(ids.begin(), ids.end(), 0);
    std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return score[a] > score[b]; });
    ids.resize(static_cast<size_t>(width));
    std::sort(ids.begin(), ids.end());
    out.push_back(std::move(ids));
  }
  return out;
}

std::string kept_json(const std::vector<LayerPrunePlan>& plans) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& p : plans) j[std::to_string(p.layer)] = p.keep;
  return j.dump();
}

}  // namespace

std::vector<ExpertLayerScores> expert_scores(const CalibrationStats& st, const ModelConfig& c) {
  std::vector<ExpertLayerScores> out;
  for (int64_t l : c.moe_layer_ids()) {
    const LayerCalibration& lc = st.layers.at(static_cast<size_t>(l));
    ExpertLayerScores s;
    s.layer = l;
    s.tokens = lc.tokens_per_expert;
    const size_t E = s.tokens.size();
    s.reap.assign(E, 0.0);
    for (size_t e = 0; e < E; ++e)
      if (s.tokens[e] > 0) s.reap[e] = lc.weighted_output_norm[e] / static_cast<double>(s.tokens[e]);
    s.easy_ep = lc.easy_ep;
    s.max_abs_out = lc.max_abs_output;
    out.push_back(std::move(s));
  }
  return out;
}

Result run(const Options& o) {
  const auto t0 = std::chrono::steady_clock::now();
  const Model m = Model::open(o.model);
  const ModelConfig& c = m.config();
  const auto layers = c.moe_layer_ids();
  if (!c.moe || layers.empty())
    fail("prune: ", o.model, " is a dense ", c.family, " model (expected a Mixture-of-Experts model)");
  const MoeConfig& mc = *c.moe;
  if (!o.dry_run) {
    if (o.output.empty()) fail("prune: give an output directory (-o OUT)");
    check_output_free(o.output, o.overwrite);  // refuse before calibrating, not after
  }
  Result r;
  r.model = o.model;
  r.output = o.output;
  const PruneMethod req_method = parse_prune_method(o.method);
  r.method = prune_method_name(req_method);
  r.num_experts = mc.num_experts;
  r.top_k = mc.top_k;
  r.keep = resolve_keep(o, mc);
  r.expert_intermediate = r.slim_intermediate = mc.expert_intermediate;
  if (o.slim < 0 || o.slim >= 1) fail("prune: --slim ", o.slim, " must be in [0, 1)");
  if (o.slim > 0)
    r.slim_intermediate = std::max<int64_t>(1, std::llround((1.0 - o.slim) * static_cast<double>(mc.expert_intermediate)));
  const bool need_stats = r.method != "random" || o.protect == "auto" || o.slim > 0;
  const bool have_calib = !o.calib_stats.empty() || !o.calib_texts.empty();
  if (!o.calib_stats.empty() && !o.calib_texts.empty()) fail("prune: give --calib-text or --calib-stats, not both");
  if (need_stats && !have_calib) {
    if (r.method != "random" || o.slim > 0)
      fail("prune: ", o.slim > 0 ? "--slim" : str("--method ", r.method),
           " needs calibration: --calib-text FILE or --calib-stats FILE");
    r.warnings.push_back("no calibration: super experts cannot be detected, none is protected");
  }
  if (req_method == PruneMethod::Reconstruct && o.calib_texts.empty())
    fail("prune: --method reconstruct re-runs the layers on the calibration text: give --calib-text FILE");
  const auto weights = safetensors_weights(m);
  const auto chunks = o.calib_texts.empty() ? std::vector<std::vector<int32_t>>{} : calib_chunks(o, m);
  CalibrationStats st;
  std::vector<ExpertLayerScores> scores;
  if (have_calib) {
    st = get_stats(o, weights, chunks);
    r.calib_tokens = st.num_tokens;
    scores = expert_scores(st, c);
    r.super_experts = detect_super_experts(scores, o.super_rule);
  } else {
    for (int64_t l : layers) {
      ExpertLayerScores s;
      s.layer = l;
      s.tokens.assign(static_cast<size_t>(mc.num_experts), 0);
      scores.push_back(s);
    }
  }
  if (o.protect == "auto") {
    for (const auto& s : r.super_experts) r.protect.push_back(s.id);
  } else if (o.protect != "off") {
    r.protect = parse_expert_list(o.protect, layers, mc.num_experts, "--protect-super-experts");
  }
  PruneRequest req;
  req.method = req_method;
  req.keep = r.keep;
  req.top_k = mc.top_k;
  req.n_group = mc.routing == RoutingKind::SigmoidGroupLimited ? mc.n_group : 1;
  req.seed = o.seed;
  req.protect = r.protect;
  if (req_method == PruneMethod::Reconstruct) {
    check_prune_request(mc.num_experts, req);
    ReconstructOptions ro;
    ro.max_tokens = o.max_measure_tokens;
    ro.progress = o.progress;
    r.layers = plan_by_reconstruction(weights, chunks, req, ro);
  } else {
    r.layers = plan_prune(scores, req);
  }
  r.budget = per_layer_budget(r.layers, r.keep * static_cast<int64_t>(layers.size()), mc.top_k);
  if (o.dry_run) {
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }
  ExpertRewrite rw;
  rw.num_experts = r.keep;
  rw.expert_intermediate = r.slim_intermediate;
  for (const auto& p : r.layers) {
    ExpertLayerEdit e;
    e.layer = p.layer;
    e.keep = p.keep;
    if (o.slim > 0) e.neurons = slim_neurons(m, st, p.layer, p.keep, r.slim_intermediate, r.warnings);
    rw.layers.push_back(std::move(e));
  }
  rw.overwrite = o.overwrite;
  rw.max_shard_bytes = o.max_shard_bytes;
  rw.metadata = o.metadata;
  rw.metadata["moetool.prune.method"] = r.method;
  rw.metadata["moetool.prune.kept_experts"] = kept_json(r.layers);
  if (o.slim > 0) rw.metadata["moetool.prune.slim"] = str(o.slim);
  rw.progress = o.progress;
  const RewriteResult rr = rewrite_experts(m, rw, o.output);
  r.files = rr.files;
  r.bytes = rr.bytes;
  r.params = rr.params;
  r.source_params = rr.source_params;
  r.written = true;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

nlohmann::ordered_json Result::to_json() const {
  nlohmann::ordered_json j;
  j["model"] = model;
  if (written) j["output"] = output;
  j["method"] = method;
  j["experts"] = num_experts;
  j["keep"] = keep;
  j["top_k"] = top_k;
  j["expert_intermediate"] = expert_intermediate;
  if (slim_intermediate != expert_intermediate) j["slim_intermediate"] = slim_intermediate;
  j["calibration_tokens"] = calib_tokens;
  auto L = nlohmann::ordered_json::array();
  for (size_t i = 0; i < layers.size(); ++i) {
    nlohmann::ordered_json x;
    x["layer"] = layers[i].layer;
    x["kept"] = layers[i].keep;
    x["scores"] = layers[i].score;
    x["budget"] = budget.empty() ? keep : budget[i];
    L.push_back(x);
  }
  j["layers"] = L;
  auto S = nlohmann::ordered_json::array();
  for (const auto& s : super_experts)
    S.push_back({{"layer", s.id.layer}, {"expert", s.id.expert}, {"max_abs_output", s.max_abs}, {"ratio_to_median", s.ratio}});
  j["super_experts"] = S;
  auto P = nlohmann::ordered_json::array();
  for (const auto& p : protect) P.push_back({{"layer", p.layer}, {"expert", p.expert}});
  j["protected"] = P;
  j["warnings"] = warnings;
  if (written) {
    j["files"] = files;
    j["bytes"] = bytes;
    j["params"] = params;
    j["source_params"] = source_params;
  }
  j["seconds"] = seconds;
  return j;
}

std::string Result::table() const {
  std::ostringstream s;
  s << "prune " << model << ": " << method << ", keep " << keep << " of " << num_experts << " experts per layer (top-"
    << top_k << ")";
  if (slim_intermediate != expert_intermediate) s << ", experts slimmed " << expert_intermediate << " -> " << slim_intermediate;
  s << "\n";
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& p = layers[i];
    s << "  layer " << p.layer << ": kept";
    for (int64_t e : p.keep) s << " " << e << (p.protect[static_cast<size_t>(e)] ? "*" : "");
    s << "   (per-layer budget " << (budget.empty() ? keep : budget[i]) << ")\n";
    s << "    score:";
    for (size_t e = 0; e < p.score.size(); ++e) s << " " << e << "=" << std::round(p.score[e] * 1e4) / 1e4;
    s << "\n";
  }
  for (const auto& x : super_experts)
    s << "  super expert: layer " << x.id.layer << " expert " << x.id.expert << " (max |output| " << x.max_abs << ", "
      << std::round(x.ratio * 10) / 10 << "x the median)\n";
  if (!protect.empty()) s << "  * protected\n";
  return s.str();
}

}  // namespace moetool::prune
