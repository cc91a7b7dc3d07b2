// tests/prune_plan_test.cc — the kept-expert plan: scores per method, protection, group-limited
// routing, super-expert detection and the one-line errors, on seeded random statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "compress/prune_plan.h"
#include "core/error.h"

namespace moetool {
namespace {

std::vector<ExpertLayerScores> random_scores(int64_t layers, int64_t E, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(1.0, 2.0);
  std::vector<ExpertLayerScores> out;
  for (int64_t l = 0; l < layers; ++l) {
    ExpertLayerScores s;
    s.layer = l;
    for (int64_t e = 0; e < E; ++e) {
      s.tokens.push_back(static_cast<int64_t>(100 * u(rng)));
      s.reap.push_back(u(rng));
      s.easy_ep.push_back(u(rng));
      s.max_abs_out.push_back(u(rng));
    }
    out.push_back(s);
  }
  return out;
}

// The K ids with the largest values (ties: lower id), ascending.
std::vector<int64_t> top_ids(const std::vector<double>& v, int64_t K) {
  std::vector<int64_t> ids(v.size());
  for (size_t i = 0; i < v.size(); ++i) ids[i] = static_cast<int64_t>(i);
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  ids.resize(static_cast<size_t>(K));
  std::sort(ids.begin(), ids.end());
  return ids;
}

TEST(PrunePlan, KeepsTheBestByEachMethodsScore) {
  const auto layers = random_scores(3, 8, 1);
  for (PruneMethod m : {PruneMethod::Frequency, PruneMethod::Reap, PruneMethod::EasyEp}) {
    PruneRequest r;
    r.method = m;
    r.keep = 3;
    r.top_k = 2;
    const auto plans = plan_prune(layers, r);
    ASSERT_EQ(plans.size(), 3u);
    for (size_t l = 0; l < 3; ++l) {
      std::vector<double> want;
      if (m == PruneMethod::Frequency)
        for (auto t : layers[l].tokens) want.push_back(static_cast<double>(t));
      else
        want = m == PruneMethod::Reap ? layers[l].reap : layers[l].easy_ep;
      EXPECT_EQ(plans[l].keep, top_ids(want, 3)) << prune_method_name(m) << " layer " << l;
    }
  }
}

TEST(PrunePlan, RandomIsSeededAndDiffersBetweenSeedsAndLayers) {
  const auto layers = random_scores(4, 16, 2);
  PruneRequest r;
  r.method = PruneMethod::Random;
  r.keep = 4;
  r.seed = 7;
  const auto a = plan_prune(layers, r), b = plan_prune(layers, r);
  r.seed = 8;
  const auto c = plan_prune(layers, r);
  bool seeds_differ = false, layers_differ = false;
  for (size_t l = 0; l < a.size(); ++l) {
    EXPECT_EQ(a[l].keep, b[l].keep);
    seeds_differ |= a[l].keep != c[l].keep;
    layers_differ |= l > 0 && a[l].keep != a[0].keep;
  }
  EXPECT_TRUE(seeds_differ);
  EXPECT_TRUE(layers_differ);
}

TEST(PrunePlan, ProtectedExpertsAreKeptEvenWithTheLowestScore) {
  auto layers = random_scores(2, 8, 3);
  layers[1].reap[6] = 0.0;  // the worst by far
  PruneRequest r;
  r.keep = 2;
  r.top_k = 2;
  r.protect = {{1, 6}};
  const auto plans = plan_prune(layers, r);
  EXPECT_TRUE(std::count(plans[1].keep.begin(), plans[1].keep.end(), 6));
  EXPECT_EQ(plans[0].keep, top_ids(layers[0].reap, 2));
  r.protect = {{1, 6}, {1, 0}, {1, 1}};
  try {
    plan_prune(layers, r);
    FAIL() << "three protected experts in a layer that keeps two";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1 has 3 protected experts but keeps only 2"), std::string::npos)
        << e.what();
  }
}

TEST(PrunePlan, GroupLimitedRoutingKeepsTheSameCountPerGroup) {
  const auto layers = random_scores(1, 16, 4);
  PruneRequest r;
  r.keep = 8;
  r.top_k = 2;
  r.n_group = 4;
  const auto p = plan_prune(layers, r)[0];
  for (int64_t g = 0; g < 4; ++g) {
    std::vector<double> grp(layers[0].reap.begin() + g * 4, layers[0].reap.begin() + g * 4 + 4);
    std::vector<int64_t> want = top_ids(grp, 2);
    for (auto& x : want) x += g * 4;
    EXPECT_EQ(std::vector<int64_t>(p.keep.begin() + g * 2, p.keep.begin() + g * 2 + 2), want) << "group " << g;
  }
  r.keep = 6;  // 6 over 4 groups
  EXPECT_THROW(plan_prune(layers, r), Error);
  r.keep = 4;  // one per group: the group score needs two
  EXPECT_THROW(plan_prune(layers, r), Error);
}

TEST(PrunePlan, KeepOutOfRangeIsOneLine) {
  const auto layers = random_scores(1, 8, 5);
  PruneRequest r;
  r.top_k = 2;
  for (int64_t k : {1, 9}) {
    r.keep = k;
    try {
      plan_prune(layers, r);
      FAIL() << "keep " << k;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(str("cannot keep ", k, " experts per layer")), std::string::npos);
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

TEST(SuperExperts, AMassiveOutlierIsFoundAndOrdinaryExpertsAreNot) {
  auto layers = random_scores(2, 8, 6);
  EXPECT_TRUE(detect_super_experts(layers).empty()) << "no outlier: the largest of similar values is not super";
  layers[1].max_abs_out[3] = 400.0;
  const auto s = detect_super_experts(layers);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].id, (ExpertId{1, 3}));
  EXPECT_GT(s[0].ratio, 100.0);
  layers[0].max_abs_out[5] = 0.0;  // an unreached expert does not count in the distribution
  EXPECT_EQ(detect_super_experts(layers).size(), 1u);
}

TEST(PrunePlan, ExpertListsAreChecked) {
  const std::vector<int64_t> moe = {1, 2};
  EXPECT_EQ(parse_expert_list("1:5,2:0", moe, 8, "x"), (std::vector<ExpertId>{{1, 5}, {2, 0}}));
  for (const char* bad : {"0:1", "1:8", "1-2", "1:", ""}) EXPECT_THROW(parse_expert_list(bad, moe, 8, "x"), Error) << bad;
}

TEST(PrunePlan, PerLayerBudgetFollowsScoreShares) {
  std::vector<LayerPrunePlan> p(2);
  p[0].score = {10, 10, 10, 10};  // flat: every expert matters
  p[1].score = {37, 1, 1, 1};     // one dominant expert
  const auto b = per_layer_budget(p, 4, 1);
  EXPECT_EQ(b, (std::vector<int64_t>{3, 1}));
}

}  // namespace
}  // namespace moetool
