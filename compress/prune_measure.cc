// compress/prune_measure.cc — greedy expert elimination by measured layer-output error (see
// prune_measure.h).
#include "compress/prune_measure.h"

#include <algorithm>
#include <limits>

#include "core/error.h"
#include "engine/engine.h"
#include "engine/layer_sweep.h"
#include "engine/masked_experts.h"

namespace moetool {

namespace {

double squared_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t j = 0; j < a[i].size(); ++j) {
      const double d = static_cast<double>(a[i][j]) - b[i][j];
      s += d * d;
    }
  return s;
}

// Greedy elimination in MoE layer l of the sweep (its inputs kept): masks[l] ends with the dropped
// experts set; returns the layer's plan.
LayerPrunePlan eliminate(const std::shared_ptr<const WeightSource>& w, LayerSweep& sweep, int64_t l,
                         std::vector<std::vector<bool>>& masks, const PruneRequest& req, int64_t max_tokens) {
  const int64_t E = w->config().moe->num_experts, G = std::max<int64_t>(req.n_group, 1), per = req.keep / G;
  LayerPrunePlan p;
  p.layer = l;
  p.score.assign(static_cast<size_t>(E), 0.0);
  p.protect.assign(static_cast<size_t>(E), false);
  for (const auto& id : req.protect)
    if (id.layer == l) p.protect[static_cast<size_t>(id.expert)] = true;
  masks[static_cast<size_t>(l)].assign(static_cast<size_t>(E), false);
  const auto full = sweep.rerun(l, sweep.engine(), nullptr, max_tokens);
  std::vector<int64_t> in_group(static_cast<size_t>(G), E / G);
  for (int64_t kept = E; kept > req.keep; --kept) {
    int64_t best = -1;
    double best_err = std::numeric_limits<double>::infinity();
    for (int64_t e = 0; e < E; ++e) {
      if (masks[static_cast<size_t>(l)][static_cast<size_t>(e)] || p.protect[static_cast<size_t>(e)] ||
          in_group[static_cast<size_t>(e / (E / G))] <= per)
        continue;
      auto m = masks;
      m[static_cast<size_t>(l)][static_cast<size_t>(e)] = true;
      const Engine eng(std::make_shared<MaskedExperts>(w, std::move(m)), /*keep_layers=*/false);
      const double err = squared_diff(sweep.rerun(l, eng, nullptr, max_tokens), full);
      p.score[static_cast<size_t>(e)] = err;
      if (err < best_err) best = e, best_err = err;
    }
    if (best < 0) fail("prune: layer ", l, ": the protected experts leave nothing to remove (keep ", req.keep, ")");
    masks[static_cast<size_t>(l)][static_cast<size_t>(best)] = true;
    --in_group[static_cast<size_t>(best / (E / G))];
  }
  for (int64_t e = 0; e < E; ++e)
    if (!masks[static_cast<size_t>(l)][static_cast<size_t>(e)]) p.keep.push_back(e);
  for (int64_t e = 0; e < E; ++e)  // a protected expert is never measured: it ranks first
    if (p.protect[static_cast<size_t>(e)]) p.score[static_cast<size_t>(e)] = std::numeric_limits<double>::infinity();
  return p;
}

}  // namespace

std::vector<LayerPrunePlan> plan_by_reconstruction(std::shared_ptr<const WeightSource> w,
                                                   const std::vector<std::vector<int32_t>>& chunks,
                                                   const PruneRequest& req, const ReconstructOptions& o) {
  const ModelConfig& c = w->config();
  const Engine base(w, /*keep_layers=*/false);
  LayerSweep sweep(base, chunks);
  std::vector<std::vector<bool>> masks(static_cast<size_t>(c.num_layers));
  std::vector<LayerPrunePlan> plans;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe_layer(l)) {
      sweep.run(l, nullptr);
      continue;
    }
    sweep.run(l, nullptr, SweepStreams::Keep);
    plans.push_back(eliminate(w, sweep, l, masks, req, o.max_tokens));
    const Engine pruned(std::make_shared<MaskedExperts>(w, masks), /*keep_layers=*/false);
    sweep.rerun_advance(l, pruned);
    if (o.progress) {
      std::string kept;
      for (int64_t e : plans.back().keep) kept += str(kept.empty() ? "" : " ", e);
      o.progress(str("[", l + 1, "/", c.num_layers, "] layer ", l, ": kept ", kept));
    }
  }
  return plans;
}

}  // namespace moetool
