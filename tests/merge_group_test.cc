// tests/merge_group_test.cc — grouping experts for merge (compress/merge_group.h): planted clusters are
// recovered by both groupings, leaders are the most frequent members, K = E gives singletons, ties are
// deterministic, and bad sizes are one-line errors.
#include <gtest/gtest.h>

#include <algorithm>

#include "compress/merge_group.h"
#include "core/error.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

// Rows of X[E, D]: expert e is its cluster's centre (cluster = e % 3) plus small seeded noise.
std::vector<float> planted(int64_t E, int64_t D, uint64_t seed) {
  const auto centres = testing::random_normal(static_cast<size_t>(3 * D), seed);
  const auto noise = testing::random_normal(static_cast<size_t>(E * D), seed + 1);
  std::vector<float> X(static_cast<size_t>(E * D));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t d = 0; d < D; ++d)
      X[static_cast<size_t>(e * D + d)] = centres[static_cast<size_t>((e % 3) * D + d)] + 0.1f * noise[static_cast<size_t>(e * D + d)];
  return X;
}

std::vector<std::vector<int64_t>> members(const std::vector<MergeGroup>& g) {
  std::vector<std::vector<int64_t>> m;
  for (const auto& x : g) m.push_back(x.members);
  std::sort(m.begin(), m.end());
  return m;
}

TEST(MergeGroup, CosineSimilarity) {
  const float X[] = {1, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0};  // 4 rows of 3
  const auto s = row_cosine_similarity(X, 4, 3);
  EXPECT_DOUBLE_EQ(s[0 * 4 + 1], 1.0);
  EXPECT_DOUBLE_EQ(s[0 * 4 + 2], 0.0);
  EXPECT_DOUBLE_EQ(s[1 * 4 + 1], 1.0);
  EXPECT_DOUBLE_EQ(s[3 * 4 + 3], 0.0) << "a zero row is similar to nothing";
  EXPECT_EQ(s[1 * 4 + 2], s[2 * 4 + 1]);
}

TEST(MergeGroup, PlantedClustersAreRecovered) {
  const int64_t E = 9, D = 40;
  const auto X = planted(E, D, 3);
  const auto sim = row_cosine_similarity(X.data(), E, D);
  // Frequencies: one expert of each cluster is clearly the most used (0, 4, 8 → clusters 0, 1, 2).
  std::vector<double> freq(E, 1.0);
  freq[0] = 10, freq[4] = 9, freq[8] = 8;
  const std::vector<std::vector<int64_t>> want = {{0, 3, 6}, {1, 4, 7}, {2, 5, 8}};
  for (const auto& g : {group_dominant(freq, sim, 3), group_hierarchical(freq, sim, 3)}) {
    EXPECT_EQ(members(g), want);
    ASSERT_EQ(g.size(), 3u);
    EXPECT_EQ(g[0].leader, 0);  // output order: ascending leader
    EXPECT_EQ(g[1].leader, 4);
    EXPECT_EQ(g[2].leader, 8);
  }
  // Dominant grouping takes the K most frequent as leaders even when they share a cluster.
  freq = std::vector<double>(E, 1.0);
  freq[0] = 10, freq[3] = 9, freq[1] = 8;
  const auto d = group_dominant(freq, sim, 3);
  EXPECT_EQ(d[0].leader, 0);
  EXPECT_EQ(d[1].leader, 1);
  EXPECT_EQ(d[2].leader, 3);
  auto has = [](const MergeGroup& g, int64_t e) { return std::count(g.members.begin(), g.members.end(), e) == 1; };
  EXPECT_TRUE(has(d[1], 4) && has(d[1], 7)) << "cluster 1 joins its own leader";
  EXPECT_TRUE(has(d[0], 6) || has(d[2], 6)) << "cluster 0's last expert joins one of its cluster's two leaders";
  EXPECT_EQ(d[1].members.size() + d[0].members.size() + d[2].members.size(), static_cast<size_t>(E));
}

TEST(MergeGroup, SingletonsTiesAndBadInput) {
  const int64_t E = 5;
  const std::vector<double> sim(E * E, 0.5), freq(E, 1.0);  // all tied
  for (const auto& g : {group_dominant(freq, sim, E), group_hierarchical(freq, sim, E)}) {
    ASSERT_EQ(g.size(), static_cast<size_t>(E));
    for (int64_t e = 0; e < E; ++e) EXPECT_EQ(g[static_cast<size_t>(e)].members, (std::vector<int64_t>{e}));
  }
  // All tied: the lower ids lead and the first pair joins first — the same answer every time.
  EXPECT_EQ(group_dominant(freq, sim, 2)[0].leader, 0);
  EXPECT_EQ(group_dominant(freq, sim, 2)[1].leader, 1);
  EXPECT_EQ(members(group_hierarchical(freq, sim, 4)), (std::vector<std::vector<int64_t>>{{0, 1}, {2}, {3}, {4}}));
  EXPECT_THROW(group_dominant(freq, sim, 0), Error);
  EXPECT_THROW(group_hierarchical(freq, sim, E + 1), Error);
  EXPECT_THROW(group_dominant(freq, std::vector<double>(E * E - 1), 2), Error);
}

}  // namespace
}  // namespace moetool
