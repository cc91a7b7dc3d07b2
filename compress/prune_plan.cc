// compress/prune_plan.cc — expert scores, super experts and the kept set per layer (see prune_plan.h).
#include "compress/prune_plan.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "core/error.h"

namespace moetool {

PruneMethod parse_prune_method(const std::string& s) {
  if (s == "frequency") return PruneMethod::Frequency;
  if (s == "reap") return PruneMethod::Reap;
  if (s == "easy-ep") return PruneMethod::EasyEp;
  if (s == "random") return PruneMethod::Random;
  if (s == "reconstruct") return PruneMethod::Reconstruct;
  fail("prune: unknown --method '", s, "' (expected reap, easy-ep, frequency, reconstruct or random)");
}

const char* prune_method_name(PruneMethod m) {
  switch (m) {
    case PruneMethod::Frequency: return "frequency";
    case PruneMethod::Reap: return "reap";
    case PruneMethod::EasyEp: return "easy-ep";
    case PruneMethod::Random: return "random";
    case PruneMethod::Reconstruct: return "reconstruct";
  }
  return "?";
}

namespace {

// numpy.percentile's default (linear interpolation between closest ranks) of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const double pos = p / 100.0 * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

// The method's score of every expert of a layer.
std::vector<double> method_scores(const ExpertLayerScores& s, PruneMethod m, uint64_t seed) {
  const size_t E = s.tokens.size();
  std::vector<double> out(E, 0.0);
  switch (m) {
    case PruneMethod::Frequency:
      for (size_t e = 0; e < E; ++e) out[e] = static_cast<double>(s.tokens[e]);
      break;
    case PruneMethod::Reap: out = s.reap; break;
    case PruneMethod::EasyEp: out = s.easy_ep; break;
    case PruneMethod::Reconstruct:
      fail("prune: reconstruct scores are measured (plan_by_reconstruction), not computed from statistics");
    case PruneMethod::Random: {
      std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(s.layer) + 1);
      std::uniform_real_distribution<double> u(0.0, 1.0);
      for (auto& v : out) v = u(rng);
      break;
    }
  }
  check(out.size() == E, "prune: layer ", s.layer, " has ", out.size(), " ", prune_method_name(m),
        " scores for ", E, " experts (calibration statistics without them?)");
  return out;
}

// The `keep` best of experts [lo, hi) by score, protected ones first; ties go to the lower id.
void choose(const std::vector<double>& score, const std::vector<bool>& prot, int64_t lo, int64_t hi, int64_t keep,
            std::vector<int64_t>& out) {
  std::vector<int64_t> ids(static_cast<size_t>(hi - lo));
  std::iota(ids.begin(), ids.end(), lo);
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) {
    if (prot[static_cast<size_t>(a)] != prot[static_cast<size_t>(b)]) return static_cast<bool>(prot[static_cast<size_t>(a)]);
    return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
  });
  out.insert(out.end(), ids.begin(), ids.begin() + keep);
}

}  // namespace

std::vector<SuperExpert> detect_super_experts(const std::vector<ExpertLayerScores>& layers,
                                              const SuperExpertRule& rule) {
  std::vector<double> all;
  for (const auto& l : layers)
    for (double a : l.max_abs_out)
      if (a > 0) all.push_back(a);
  std::vector<SuperExpert> out;
  if (all.empty()) return out;
  std::sort(all.begin(), all.end());
  const double p = percentile(all, rule.percentile), med = percentile(all, 50.0), mx = all.back();
  for (const auto& l : layers)
    for (size_t e = 0; e < l.max_abs_out.size(); ++e) {
      const double a = l.max_abs_out[e];
      if (a > p && a >= rule.frac_of_max * mx && a >= rule.median_factor * med)
        out.push_back({{l.layer, static_cast<int64_t>(e)}, a, med > 0 ? a / med : 0.0});
    }
  return out;
}

std::vector<ExpertId> parse_expert_list(const std::string& s, const std::vector<int64_t>& moe_layers,
                                        int64_t num_experts, const std::string& what) {
  std::vector<ExpertId> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto colon = item.find(':');
    int64_t l = -1, e = -1;
    try {
      if (colon == std::string::npos) throw std::invalid_argument(item);
      size_t p1 = 0, p2 = 0;
      l = std::stoll(item.substr(0, colon), &p1);
      e = std::stoll(item.substr(colon + 1), &p2);
      if (p1 != colon || p2 != item.size() - colon - 1) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      fail(what, ": '", item, "' is not LAYER:EXPERT (e.g. 1:5)");
    }
    if (std::find(moe_layers.begin(), moe_layers.end(), l) == moe_layers.end())
      fail(what, ": ", item, ": layer ", l, " is not an MoE layer of this model");
    if (e < 0 || e >= num_experts) fail(what, ": ", item, ": expert ", e, " out of range (the model has ", num_experts, ")");
    out.push_back({l, e});
  }
  if (out.empty()) fail(what, ": empty expert list");
  return out;
}

void check_prune_request(int64_t E, const PruneRequest& req) {
  if (req.keep < req.top_k || req.keep > E)
    fail("prune: cannot keep ", req.keep, " experts per layer: it must be at least the ", req.top_k,
         " experts each token uses (top-k) and at most the ", E, " the layer has");
  const int64_t G = std::max<int64_t>(req.n_group, 1);
  if (G > 1 && (E % G != 0 || req.keep % G != 0 || req.keep / G < 2))
    fail("prune: group-limited routing (n_group ", G, ", ", E / G, " experts per group) keeps the same number of ",
         "experts in every group, at least 2: --keep ", req.keep, " is not a multiple of ", G,
         " with at least 2 per group");
}

std::vector<LayerPrunePlan> plan_prune(const std::vector<ExpertLayerScores>& layers, const PruneRequest& req) {
  std::vector<LayerPrunePlan> plans;
  for (const auto& s : layers) {
    const int64_t E = static_cast<int64_t>(s.tokens.size());
    check_prune_request(E, req);
    const int64_t G = std::max<int64_t>(req.n_group, 1);
    LayerPrunePlan p;
    p.layer = s.layer;
    p.score = method_scores(s, req.method, req.seed);
    p.protect.assign(static_cast<size_t>(E), false);
    for (const auto& id : req.protect)
      if (id.layer == s.layer) p.protect[static_cast<size_t>(id.expert)] = true;
    const int64_t per = req.keep / G, size = E / G;
    for (int64_t g = 0; g < G; ++g) {
      const int64_t np = std::count(p.protect.begin() + g * size, p.protect.begin() + (g + 1) * size, true);
      if (np > per)
        fail("prune: layer ", s.layer, G > 1 ? str(" group ", g) : std::string(), " has ", np,
             " protected experts but keeps only ", per, " (use a larger --keep or --protect-super-experts off/LIST)");
      choose(p.score, p.protect, g * size, (g + 1) * size, per, p.keep);
    }
    std::sort(p.keep.begin(), p.keep.end());
    plans.push_back(std::move(p));
  }
  return plans;
}

std::vector<int64_t> per_layer_budget(const std::vector<LayerPrunePlan>& plans, int64_t total, int64_t min_keep) {
  struct Cand {
    double share;
    size_t layer;
  };
  std::vector<int64_t> count(plans.size(), 0);
  std::vector<Cand> rest;
  int64_t used = 0;
  for (size_t i = 0; i < plans.size(); ++i) {
    std::vector<double> s = plans[i].score;
    const double sum = std::accumulate(s.begin(), s.end(), 0.0);
    std::sort(s.begin(), s.end(), std::greater<double>());
    const int64_t first = std::min<int64_t>(min_keep, static_cast<int64_t>(s.size()));
    count[i] = first;
    used += first;
    for (size_t r = static_cast<size_t>(first); r < s.size(); ++r) rest.push_back({sum > 0 ? s[r] / sum : 0.0, i});
  }
  std::stable_sort(rest.begin(), rest.end(), [](const Cand& a, const Cand& b) { return a.share > b.share; });
  for (const auto& c : rest) {
    if (used >= total) break;
    ++count[c.layer];
    ++used;
  }
  return count;
}

}  // namespace moetool
