// compress/merge.cc — the merge job (see merge.h).
#include "compress/merge.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <sstream>

#include <Eigen/Dense>

#include "compress/expert_rewrite.h"
#include "compress/merge_align.h"
#include "compress/merge_svd.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/calibrate.h"
#include "engine/calibrate_job.h"
#include "engine/engine.h"
#include "engine/layer_sweep.h"
#include "engine/text.h"
#include "formats/model.h"
#include "kernels/ops.h"
#include "kernels/ridge.h"

namespace moetool::merge {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// One MoE layer's calibration figures: routing frequencies over every token, and the router logits
// and MoE inputs of the first `max_tokens` tokens (the similarity sample).
class Collector final : public SweepObserver {
 public:
  Collector(int64_t E, int64_t H, int64_t max_tokens) : E_(E), H_(H), max_(max_tokens) { freq.assign(static_cast<size_t>(E), 0.0); }
  void on_router(int64_t, const float* logits, const int32_t* sel, const float*, int64_t n, int64_t E,
                 int64_t k) override {
    for (int64_t i = 0; i < n * k; ++i) freq[static_cast<size_t>(sel[i])] += 1;
    const int64_t take = std::min(n, max_ - logits_rows_);
    logits_.insert(logits_.end(), logits, logits + take * E);
    logits_rows_ += take;
  }
  void on_linear_input(int64_t, Role role, int64_t, const float* X, int64_t n, int64_t cols) override {
    if (role != Role::Router) return;
    const int64_t take = std::min(n, max_ - x_rows_);
    x.insert(x.end(), X, X + take * cols);
    x_rows_ += take;
  }
  // Router logits as [E, T] rows (one per expert) for the cosine of logit columns.
  std::vector<float> logit_columns() const {
    std::vector<float> out(static_cast<size_t>(E_ * logits_rows_));
    for (int64_t t = 0; t < logits_rows_; ++t)
      for (int64_t e = 0; e < E_; ++e) out[static_cast<size_t>(e * logits_rows_ + t)] = logits_[static_cast<size_t>(t * E_ + e)];
    return out;
  }
  // The same figures from saved statistics (`moetool calibrate`): frequencies from the selection
  // counts, the first max_tokens router-logit rows, and the MoE inputs re-formed from the residual
  // stream kept by `calibrate --hidden` with the block's own RMSNorm (as Engine::run_layer forms them).
  void from_stats(const LayerCalibration& lc, int64_t num_tokens, const std::vector<float>& ffn_norm, float eps) {
    for (int64_t e = 0; e < E_; ++e) freq[static_cast<size_t>(e)] = static_cast<double>(lc.tokens_per_expert.at(static_cast<size_t>(e)));
    const int64_t take = std::min(num_tokens, max_);
    if (!lc.router_logits.empty()) {
      logits_.assign(lc.router_logits.begin(), lc.router_logits.begin() + take * E_);
      logits_rows_ = take;
    }
    if (!lc.hidden_before.empty() && !ffn_norm.empty()) {  // an empty norm: inputs not needed
      x.assign(static_cast<size_t>(take * H_), 0.0f);
      ops::rmsnorm(lc.hidden_before.data(), ffn_norm.data(), x.data(), take, H_, eps);
      x_rows_ = take;
    }
  }
  int64_t sample_rows() const { return x_rows_; }
  int64_t logit_rows() const { return logits_rows_; }
  const std::vector<float>& logits() const { return logits_; }  // [sample_rows, E]
  int64_t H() const { return H_; }
  std::vector<double> freq;
  std::vector<float> x;  // [sample_rows, H] MoE inputs (normed)

 private:
  int64_t E_, H_, max_;
  std::vector<float> logits_;
  int64_t logits_rows_ = 0, x_rows_ = 0;
};

ExpertMatrices load_expert(const Model& m, int64_t l, int64_t e) {
  ExpertMatrices x;
  x.I = m.config().moe->expert_intermediate;
  x.H = m.config().hidden_size;
  x.gate = m.weight(Role::ExpertGate, l, e).to_f32();
  x.up = m.weight(Role::ExpertUp, l, e).to_f32();
  x.down = m.weight(Role::ExpertDown, l, e).to_f32();
  return x;
}

// Each expert's outputs on the sample tokens, flattened: rows of [E, T·H] (float32 GEMMs).
std::vector<float> output_features(const Model& m, int64_t l, const Collector& c) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t E = m.config().moe->num_experts, T = c.sample_rows(), H = c.H();
  std::vector<float> f(static_cast<size_t>(E * T * H));
  const Eigen::Map<const RowMat> X(c.x.data(), T, H);
  for (int64_t e = 0; e < E; ++e) {
    const ExpertMatrices w = load_expert(m, l, e);
    const Eigen::Map<const RowMat> G(w.gate.data(), w.I, H), U(w.up.data(), w.I, H), D(w.down.data(), H, w.I);
    RowMat g = X * G.transpose();
    const RowMat u = X * U.transpose();
    g = g.unaryExpr([](float v) { return v / (1.0f + std::exp(-v)); }).cwiseProduct(u);
    Eigen::Map<RowMat>(f.data() + e * T * H, T, H) = g * D.transpose();
  }
  return f;
}

std::vector<float> weight_features(const Model& m, int64_t l) {
  const int64_t E = m.config().moe->num_experts;
  std::vector<float> f;
  for (int64_t e = 0; e < E; ++e) {
    const ExpertMatrices w = load_expert(m, l, e);
    f.insert(f.end(), w.gate.begin(), w.gate.end());
    f.insert(f.end(), w.up.begin(), w.up.end());
    f.insert(f.end(), w.down.begin(), w.down.end());
  }
  return f;
}

std::vector<double> similarity(const Model& m, int64_t l, const Collector& c, const std::string& by) {
  const int64_t E = m.config().moe->num_experts;
  if (by == "router-logits") return row_cosine_similarity(c.logit_columns().data(), E, c.logit_rows());
  if (by == "outputs") {
    const auto f = output_features(m, l, c);
    return row_cosine_similarity(f.data(), E, c.sample_rows() * c.H());
  }
  const auto f = weight_features(m, l);
  return row_cosine_similarity(f.data(), E, static_cast<int64_t>(f.size()) / E);
}

// The merged weights of one layer's groups (members aligned to the leader, frequency-weighted);
// nullopt for a group of one (copied from its source).
std::vector<std::optional<ExpertMatrices>> merge_layer(const Model& m, const LayerMerge& lm, bool align,
                                                       double rank_fraction, Device dev, Result& r) {
  std::vector<std::optional<ExpertMatrices>> out;
  for (const MergeGroup& g : lm.groups) {
    if (g.members.size() == 1) {
      out.emplace_back(std::nullopt);
      continue;
    }
    const ExpertMatrices lead = load_expert(m, lm.layer, g.leader);
    std::vector<ExpertMatrices> ms;
    std::vector<double> w;
    for (int64_t e : g.members) {
      ExpertMatrices x = e == g.leader ? lead : load_expert(m, lm.layer, e);
      if (align && e != g.leader) {
        const auto t = Clock::now();
        const auto perm = align_neurons(lead, x);
        for (size_t i = 0; i < perm.size(); ++i) r.moved_neurons += perm[i] != static_cast<int64_t>(i) ? 1 : 0;
        ++r.aligned_members;
        x = permute_neurons(x, perm);
        r.align_seconds += since(t);
      }
      ms.push_back(std::move(x));
      w.push_back(lm.freq[static_cast<size_t>(e)]);
    }
    double total = 0;
    for (double v : w) total += v;
    if (!(total > 0)) {
      r.warnings.push_back(str("layer ", lm.layer, ": no calibration token reached the group led by expert ", g.leader,
                             "; its members are averaged with equal weights"));
      std::fill(w.begin(), w.end(), 1.0);
    }
    std::vector<const ExpertMatrices*> ptr;
    for (const auto& x : ms) ptr.push_back(&x);
    if (r.method == "sub-moe") {
      const auto t = Clock::now();
      out.emplace_back(subspace_merge(ptr, w, rank_fraction, dev));  // cuSOLVER with --device cuda
      r.svd_seconds += since(t);
    } else {
      out.emplace_back(weighted_average(ptr, w));
    }
  }
  return out;
}

// The groups of one layer; with group-limited routing (n_group > 1) each routing group's experts merge
// among themselves into K/n_group, so every output expert stays in its routing group.
std::vector<MergeGroup> group_layer(const std::string& method, const std::vector<double>& freq,
                                    const std::vector<double>& sim, int64_t K, int64_t n_group) {
  auto one = [&](const std::vector<double>& f, const std::vector<double>& s, int64_t k) {
    return method == "msmoe" ? group_dominant(f, s, k) : group_hierarchical(f, s, k);
  };
  if (n_group <= 1) return one(freq, sim, K);
  const auto E = static_cast<int64_t>(freq.size());
  const int64_t per = E / n_group;
  std::vector<MergeGroup> out;
  for (int64_t g = 0; g < n_group; ++g) {
    std::vector<double> f(freq.begin() + g * per, freq.begin() + (g + 1) * per), s(static_cast<size_t>(per * per));
    for (int64_t i = 0; i < per; ++i)
      for (int64_t j = 0; j < per; ++j) s[static_cast<size_t>(i * per + j)] = sim[static_cast<size_t>((g * per + i) * E + g * per + j)];
    for (MergeGroup x : one(f, s, K / n_group)) {
      x.leader += g * per;
      for (int64_t& e : x.members) e += g * per;
      out.push_back(std::move(x));
    }
  }
  return out;
}

// --router fit: rows [K, H] fitted to each group's combined logit log Σ_{m ∈ group} exp(logit_m).
void fit_router(LayerMerge& lm, const Collector& c, int64_t E) {
  const int64_t T = c.sample_rows(), K = static_cast<int64_t>(lm.groups.size());
  std::vector<double> Y(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t g = 0; g < K; ++g) {
      const float* z = c.logits().data() + t * E;
      double mx = -INFINITY, sum = 0;
      for (int64_t m : lm.groups[static_cast<size_t>(g)].members) mx = std::max(mx, static_cast<double>(z[m]));
      for (int64_t m : lm.groups[static_cast<size_t>(g)].members) sum += std::exp(z[m] - mx);
      Y[static_cast<size_t>(t * K + g)] = mx + std::log(sum);
    }
  const RidgeRouter r = fit_ridge_router(c.x, T, c.H(), Y, K);
  lm.router = r.W;
  lm.router_r2 = r.r2;
}

std::string groups_json(const std::vector<LayerMerge>& layers) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& l : layers) {
    auto g = nlohmann::ordered_json::array();
    for (const auto& x : l.groups) g.push_back(x.members);
    j[std::to_string(l.layer)] = g;
  }
  return j.dump();
}

}  // namespace

Result run(const Options& o) {
  const auto t0 = Clock::now();
  const Model m = Model::open(o.model);
  const ModelConfig& c = m.config();
  if (!c.moe || c.moe_layer_ids().empty()) fail("merge: ", o.model, " is a dense ", c.family, " model (expected a Mixture-of-Experts model)");
  const MoeConfig& mc = *c.moe;
  Result r;
  r.model = o.model;
  r.output = o.output;
  r.num_experts = mc.num_experts;
  r.top_k = mc.top_k;
  r.experts = o.experts;
  if (o.method != "msmoe" && o.method != "hc" && o.method != "sub-moe")
    fail("merge: unknown --method '", o.method, "' (expected msmoe, hc or sub-moe)");
  r.method = o.method;
  r.group_by = o.group_by.empty() ? (o.method == "msmoe" ? "router-logits" : "outputs") : o.group_by;
  if (o.method == "sub-moe" && !(o.rank_fraction > 0 && o.rank_fraction <= 1))
    fail("merge: --rank-fraction ", o.rank_fraction, " must be in (0, 1]");
  if (r.group_by != "router-logits" && r.group_by != "outputs" && r.group_by != "weights")
    fail("merge: unknown --group-by '", r.group_by, "' (expected router-logits, outputs or weights)");
  if (o.align != "permutation" && o.align != "none") fail("merge: unknown --align '", o.align, "' (expected permutation or none)");
  r.align = o.align;
  if (o.router != "leader" && o.router != "fit") fail("merge: unknown --router '", o.router, "' (expected leader or fit)");
  r.router = o.router;
  if (o.experts < mc.top_k || o.experts > mc.num_experts)
    fail("merge: --experts ", o.experts, " is out of range for ", mc.num_experts, " experts with top-", mc.top_k,
         " routing (expected ", mc.top_k, "..", mc.num_experts, ")");
  const int64_t n_group = mc.routing == RoutingKind::SigmoidGroupLimited ? mc.n_group : 1;
  if (r.router == "fit" && mc.routing != RoutingKind::SoftmaxTopK)
    fail("merge: --router fit fits softmax router logits; ", o.model, " routes with sigmoid scores (use --router leader)");
  if (n_group > 1 && o.experts % n_group != 0)
    fail("merge: --experts ", o.experts, " does not divide into the ", n_group, " routing groups of ", o.model,
         " (group-limited routing: each group merges into K/n_group experts)");
  if (n_group > 1 && o.experts / n_group < 2)
    fail("merge: --experts ", o.experts, " leaves ", o.experts / n_group, " expert per routing group of ", o.model,
         " (expected at least 2 per group: the router scores a group by its top 2)");
  if (o.calib_texts.empty() == o.calib_stats.empty())
    fail("merge: give --calib-text FILE... or --calib-stats FILE (routing frequencies weight the merge), not ",
         o.calib_texts.empty() ? "neither" : "both");
  if (!o.dry_run) {
    if (o.output.empty()) fail("merge: give an output directory (-o OUT)");
    check_output_free(o.output, o.overwrite);
  }
  const auto weights = safetensors_weights(m);
  auto add_layer = [&](int64_t l, const Collector& col) {
    LayerMerge lm;
    lm.layer = l;
    lm.freq = col.freq;
    lm.similarity = similarity(m, l, col, r.group_by);
    lm.groups = group_layer(r.method, lm.freq, lm.similarity, o.experts, n_group);
    if (r.router == "fit") fit_router(lm, col, mc.num_experts);
    if (o.progress) o.progress(str("layer ", l, ": ", lm.groups.size(), " groups"));
    r.layers.push_back(std::move(lm));
  };
  if (!o.calib_stats.empty()) {
    const CalibrationStats st = CalibrationStats::load(o.calib_stats);
    check_stats_model(st, *weights, o.calib_stats);
    r.calib_tokens = st.num_tokens;
    const bool need_x = r.group_by == "outputs" || r.router == "fit";
    for (int64_t l : c.moe_layer_ids()) {
      const LayerCalibration& lc = st.layers.at(static_cast<size_t>(l));
      if (lc.tokens_per_expert.size() != static_cast<size_t>(mc.num_experts))
        fail("merge: ", o.calib_stats, " has no routing counts for layer ", l, " (expected ", mc.num_experts,
             " experts; recollect with `moetool calibrate` without --no-router)");
      if (r.group_by == "router-logits" && lc.router_logits.empty())
        fail("merge: --group-by router-logits needs router logits, which ", o.calib_stats,
             " does not hold (recollect without --no-router, or give --calib-text)");
      if (need_x && lc.hidden_before.empty())
        fail("merge: ", r.router == "fit" ? "--router fit" : "--group-by outputs",
             " needs the MoE blocks' inputs, which ", o.calib_stats,
             " does not hold (collect them with `moetool calibrate --hidden`, or give --calib-text)");
      Collector col(mc.num_experts, c.hidden_size, o.similarity_tokens);
      col.from_stats(lc, st.num_tokens, need_x ? weights->vector(Role::FfnNorm, l) : std::vector<float>{},
                     static_cast<float>(c.rms_norm_eps));
      add_layer(l, col);
    }
  } else {
    const auto chunks =
        calibration_chunks(*load_tokenizer(o.model), c.max_position_embeddings, o.calib_texts, o.ctx, o.chunks);
    Engine eng(weights, /*keep_layers=*/false, o.device);
    LayerSweep sweep(eng, chunks);
    r.calib_tokens = sweep.num_tokens();
    for (int64_t l = 0; l < c.num_layers; ++l) {
      if (!c.is_moe_layer(l)) {
        sweep.run(l, nullptr);
        continue;
      }
      Collector col(mc.num_experts, c.hidden_size, o.similarity_tokens);
      sweep.run(l, &col);
      add_layer(l, col);
    }
    sweep.release();
  }
  if (o.dry_run) {
    r.seconds = since(t0);
    return r;
  }
  ExpertRewrite rw;
  rw.num_experts = o.experts;
  for (const auto& lm : r.layers) {
    ExpertLayerEdit e;
    e.layer = lm.layer;
    for (const auto& g : lm.groups) e.keep.push_back(g.leader);
    rw.layers.push_back(std::move(e));
  }
  // Merged weights are computed when the writer reaches a layer, one layer held at a time.
  int64_t cached_layer = -1;
  std::vector<std::optional<ExpertMatrices>> cache;
  rw.replace_expert = [&](Role role, int64_t l, int64_t j) -> std::optional<std::vector<float>> {
    if (l != cached_layer) {
      const auto it = std::find_if(r.layers.begin(), r.layers.end(), [&](const LayerMerge& x) { return x.layer == l; });
      cache = merge_layer(m, *it, r.align == "permutation", o.rank_fraction, o.device.device, r);
      cached_layer = l;
    }
    const auto& x = cache.at(static_cast<size_t>(j));
    if (!x) return std::nullopt;
    if (role == Role::ExpertGate) return x->gate;
    if (role == Role::ExpertUp) return x->up;
    if (role == Role::ExpertDown) return x->down;
    return std::nullopt;
  };
  if (r.router == "fit")
    rw.replace_router = [&](int64_t l) -> std::optional<std::vector<float>> {
      for (const auto& x : r.layers)
        if (x.layer == l) return x.router;
      return std::nullopt;
    };
  rw.overwrite = o.overwrite;
  rw.max_shard_bytes = o.max_shard_bytes;
  rw.metadata = o.metadata;
  rw.metadata["moetool.merge.router"] = r.router;
  rw.metadata["moetool.merge.method"] = r.method;
  if (r.method == "sub-moe") rw.metadata["moetool.merge.rank_fraction"] = str(o.rank_fraction);
  rw.metadata["moetool.merge.group_by"] = r.group_by;
  rw.metadata["moetool.merge.align"] = r.align;
  rw.metadata["moetool.merge.groups"] = groups_json(r.layers);
  rw.progress = o.progress;
  const RewriteResult rr = rewrite_experts(m, rw, o.output);
  r.files = rr.files;
  r.bytes = rr.bytes;
  r.params = rr.params;
  r.source_params = rr.source_params;
  r.written = true;
  r.seconds = since(t0);
  return r;
}

nlohmann::ordered_json Result::to_json() const {
  nlohmann::ordered_json j;
  j["model"] = model;
  if (written) j["output"] = output;
  j["method"] = method;
  j["group_by"] = group_by;
  j["align"] = align;
  j["router"] = router;
  j["experts_before"] = num_experts;
  j["experts"] = experts;
  j["top_k"] = top_k;
  j["calibration_tokens"] = calib_tokens;
  auto L = nlohmann::ordered_json::array();
  for (const auto& l : layers) {
    auto G = nlohmann::ordered_json::array();
    for (const auto& g : l.groups) G.push_back({{"leader", g.leader}, {"members", g.members}});
    nlohmann::ordered_json x = {{"layer", l.layer}, {"frequency", l.freq}, {"groups", G}, {"similarity", l.similarity}};
    if (router == "fit") x["router_r2"] = l.router_r2;
    L.push_back(x);
  }
  j["layers"] = L;
  j["warnings"] = warnings;
  if (written) {
    j["files"] = files;
    j["bytes"] = bytes;
    j["params"] = params;
    j["source_params"] = source_params;
  }
  j["aligned_members"] = aligned_members;
  j["moved_neurons"] = moved_neurons;
  j["align_seconds"] = align_seconds;
  if (method == "sub-moe") j["svd_seconds"] = svd_seconds;
  j["seconds"] = seconds;
  return j;
}

std::string Result::table() const {
  std::ostringstream s;
  s << "merge " << model << ": " << method << " (group by " << group_by << ", align " << align << ", router " << router
    << "), " << num_experts
    << " -> " << experts << " experts per layer (top-" << top_k << ")\n";
  for (const auto& l : layers) {
    double total = 0;
    for (double f : l.freq) total += f;
    const auto E = static_cast<int64_t>(l.freq.size());
    s << "  layer " << l.layer << ":";
    if (router == "fit") s << " fitted router R² " << std::round(1000 * l.router_r2) / 1000;
    s << "\n";
    for (const auto& g : l.groups) {
      s << "    [" << g.leader << "]";
      for (int64_t e : g.members) {
        s << " " << e << " (" << std::round(1000 * l.freq[static_cast<size_t>(e)] / std::max(total, 1.0)) / 10 << "%";
        if (e != g.leader)
          s << ", sim " << std::round(1000 * l.similarity[static_cast<size_t>(e * E + g.leader)]) / 1000;
        s << ")";
      }
      s << "\n";
    }
  }
  return s.str();
}

}  // namespace moetool::merge
