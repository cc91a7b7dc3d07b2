// tests/merge_align_test.cc — the arithmetic under `merge` (compress/merge_align.h, kernels/assignment.h):
// the assignment solver is optimal (against brute force over every permutation) and returns a
// permutation; a permuted copy of an expert aligns back to the original exactly; permuting neurons
// leaves the expert's function unchanged; averaging identical experts gives the expert back, and a
// group of one is copied bit for bit; bad shapes and weights are one-line errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "compress/merge_align.h"
#include "core/error.h"
#include "kernels/assignment.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::random_normal;

ExpertMatrices random_expert(int64_t I, int64_t H, uint64_t seed) {
  ExpertMatrices e{I, H, random_normal(static_cast<size_t>(I * H), seed),
                   random_normal(static_cast<size_t>(I * H), seed + 1),
                   random_normal(static_cast<size_t>(I * H), seed + 2)};
  return e;
}

std::vector<int64_t> random_perm(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  std::iota(p.begin(), p.end(), 0);
  std::mt19937_64 g(seed);
  std::shuffle(p.begin(), p.end(), g);
  return p;
}

TEST(Assignment, OptimalAgainstBruteForceOnSeededMatrices) {
  for (int64_t n = 1; n <= 7; ++n) {
    for (uint64_t seed = 1; seed <= 6; ++seed) {
      std::vector<double> c(static_cast<size_t>(n * n));
      const auto r = random_normal(c.size(), 100 * n + seed);
      for (size_t i = 0; i < c.size(); ++i) c[i] = seed % 3 == 0 ? std::round(r[i] * 2) : r[i];  // ties too
      const auto p = solve_assignment(c.data(), n);
      std::vector<int64_t> sorted = p;
      std::sort(sorted.begin(), sorted.end());
      std::vector<int64_t> id(static_cast<size_t>(n));
      std::iota(id.begin(), id.end(), 0);
      ASSERT_EQ(sorted, id) << "not a permutation (n " << n << ")";
      double best = INFINITY;
      std::vector<int64_t> q = id;
      do best = std::min(best, assignment_cost(c.data(), n, q));
      while (std::next_permutation(q.begin(), q.end()));
      EXPECT_NEAR(assignment_cost(c.data(), n, p), best, 1e-9) << "n " << n << " seed " << seed;
    }
  }
}

TEST(Assignment, RecoversAPlantedPermutationAtScale) {
  // Cost −1 on a planted permutation, noise in [0, 0.5) elsewhere: the planted one is the unique optimum.
  const int64_t n = 300;
  const auto plant = random_perm(n, 5);
  const auto r = random_normal(static_cast<size_t>(n * n), 6);
  std::vector<double> c(static_cast<size_t>(n * n));
  for (size_t i = 0; i < c.size(); ++i) c[i] = 0.25 * (1 + std::tanh(r[i]));
  for (int64_t i = 0; i < n; ++i) c[static_cast<size_t>(i * n + plant[static_cast<size_t>(i)])] = -1;
  EXPECT_EQ(solve_assignment(c.data(), n), plant);
  EXPECT_TRUE(solve_assignment(nullptr, 0).empty());
  c[7] = NAN;
  EXPECT_THROW(solve_assignment(c.data(), n), Error);
}

TEST(MergeAlign, PermutedCopyAlignsBackExactly) {
  const ExpertMatrices e = random_expert(96, 32, 11);
  const auto perm = random_perm(e.I, 12);
  const ExpertMatrices shuffled = permute_neurons(e, perm);
  ASSERT_NE(shuffled.gate, e.gate) << "the permutation must move something";
  const auto back = align_neurons(e, shuffled);
  const ExpertMatrices aligned = permute_neurons(shuffled, back);
  EXPECT_EQ(aligned.gate, e.gate);  // bit for bit: alignment only moves values
  EXPECT_EQ(aligned.up, e.up);
  EXPECT_EQ(aligned.down, e.down);
  // With noise on the copy (a fine-tuned sibling), the alignment still finds every neuron.
  ExpertMatrices noisy = shuffled;
  const auto z = random_normal(noisy.gate.size() * 3, 13);
  for (size_t i = 0; i < noisy.gate.size(); ++i) {
    noisy.gate[i] += 0.1f * z[i];
    noisy.up[i] += 0.1f * z[noisy.gate.size() + i];
    noisy.down[i] += 0.1f * z[2 * noisy.gate.size() + i];
  }
  const auto p2 = align_neurons(e, noisy);
  for (int64_t i = 0; i < e.I; ++i) EXPECT_EQ(perm[static_cast<size_t>(p2[static_cast<size_t>(i)])], i);
}

TEST(MergeAlign, PermutationKeepsTheExpertsFunction) {
  const ExpertMatrices e = random_expert(64, 24, 21);
  const ExpertMatrices p = permute_neurons(e, random_perm(e.I, 22));
  const auto x = random_normal(static_cast<size_t>(10 * e.H), 23);
  const auto a = expert_forward(e, x.data(), 10), b = expert_forward(p, x.data(), 10);
  float scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::fabs(a[i])), diff = std::max(diff, std::fabs(a[i] - b[i]));
  ASSERT_GT(scale, 1.0f);
  // Computed in double, rounded to float once: only the summation order over neurons differs.
  EXPECT_LE(diff, 2 * 6e-8f * scale);
}

TEST(MergeAlign, WeightedAverage) {
  const ExpertMatrices e = random_expert(16, 8, 31);
  // A group of one: copied bit for bit whatever its weight.
  const ExpertMatrices one = weighted_average({&e}, {0.37});
  EXPECT_EQ(one.gate, e.gate);
  EXPECT_EQ(one.up, e.up);
  EXPECT_EQ(one.down, e.down);
  // Identical experts: the same expert (double accumulation of c·v with Σc = 1, rounded once).
  const ExpertMatrices same = weighted_average({&e, &e, &e}, {3, 1, 6});
  for (size_t i = 0; i < e.gate.size(); ++i) {
    EXPECT_NEAR(same.gate[i], e.gate[i], 1.2e-7f * std::fabs(e.gate[i]));
    EXPECT_NEAR(same.down[i], e.down[i], 1.2e-7f * std::fabs(e.down[i]));
  }
  // Two different experts: the frequency-weighted mean, element by element.
  const ExpertMatrices f = random_expert(16, 8, 41);
  const ExpertMatrices m = weighted_average({&e, &f}, {1, 3});
  for (size_t i = 0; i < e.up.size(); ++i) EXPECT_NEAR(m.up[i], 0.25 * e.up[i] + 0.75 * f.up[i], 1e-6);
  // Bad input: one line each.
  EXPECT_THROW(weighted_average({&e, &f}, {0, 0}), Error);
  EXPECT_THROW(weighted_average({&e, &f}, {1, -1}), Error);
  EXPECT_THROW(weighted_average({&e}, {1, 2}), Error);
  const ExpertMatrices g = random_expert(8, 8, 51);
  EXPECT_THROW(weighted_average({&e, &g}, {1, 1}), Error);
  EXPECT_THROW(align_neurons(e, g), Error);
  EXPECT_THROW(permute_neurons(e, std::vector<int64_t>(16, 0)), Error);
}

}  // namespace
}  // namespace moetool
