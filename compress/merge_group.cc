// compress/merge_group.cc — grouping experts for merging (see merge_group.h).
#include "compress/merge_group.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace moetool {

namespace {

int64_t check_inputs(const std::vector<double>& freq, const std::vector<double>& sim, int64_t K) {
  const auto E = static_cast<int64_t>(freq.size());
  if (static_cast<int64_t>(sim.size()) != E * E)
    fail("merge: a similarity matrix of ", sim.size(), " values for ", E, " experts (expected ", E * E, ")");
  if (K < 1 || K > E) fail("merge: --experts ", K, " is out of range for a layer of ", E, " experts (expected 1..", E, ")");
  return E;
}

// The most frequent member leads (ties: the lower id); groups sorted by leader.
std::vector<MergeGroup> finish(std::vector<std::vector<int64_t>> clusters, const std::vector<double>& freq) {
  std::vector<MergeGroup> out;
  for (auto& c : clusters) {
    std::sort(c.begin(), c.end());
    int64_t lead = c[0];
    for (int64_t e : c)
      if (freq[static_cast<size_t>(e)] > freq[static_cast<size_t>(lead)]) lead = e;
    out.push_back({lead, c});
  }
  std::sort(out.begin(), out.end(), [](const MergeGroup& a, const MergeGroup& b) { return a.leader < b.leader; });
  return out;
}

}  // namespace

std::vector<MergeGroup> group_dominant(const std::vector<double>& freq, const std::vector<double>& sim, int64_t K) {
  const int64_t E = check_inputs(freq, sim, K);
  std::vector<int64_t> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return freq[static_cast<size_t>(a)] > freq[static_cast<size_t>(b)]; });
  std::vector<int64_t> leaders(order.begin(), order.begin() + K);
  std::sort(leaders.begin(), leaders.end());
  std::vector<std::vector<int64_t>> clusters(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) clusters[static_cast<size_t>(k)].push_back(leaders[static_cast<size_t>(k)]);
  for (int64_t e = 0; e < E; ++e) {
    if (std::binary_search(leaders.begin(), leaders.end(), e)) continue;
    int64_t best = 0;
    for (int64_t k = 1; k < K; ++k)
      if (sim[static_cast<size_t>(e * E + leaders[static_cast<size_t>(k)])] >
          sim[static_cast<size_t>(e * E + leaders[static_cast<size_t>(best)])])
        best = k;
    clusters[static_cast<size_t>(best)].push_back(e);
  }
  // The leader is the most frequent member by construction (the K most frequent lead).
  return finish(std::move(clusters), freq);
}

std::vector<MergeGroup> group_hierarchical(const std::vector<double>& freq, const std::vector<double>& sim,
                                           int64_t K) {
  const int64_t E = check_inputs(freq, sim, K);
  std::vector<std::vector<int64_t>> clusters;
  for (int64_t e = 0; e < E; ++e) clusters.push_back({e});
  auto linkage = [&](const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
    double s = 0;
    for (int64_t i : a)
      for (int64_t j : b) s += sim[static_cast<size_t>(i * E + j)];
    return s / static_cast<double>(a.size() * b.size());
  };
  while (static_cast<int64_t>(clusters.size()) > K) {
    size_t bi = 0, bj = 1;
    double best = -INFINITY;
    for (size_t i = 0; i < clusters.size(); ++i)
      for (size_t j = i + 1; j < clusters.size(); ++j) {
        const double l = linkage(clusters[i], clusters[j]);
        if (l > best) best = l, bi = i, bj = j;  // strict: the first (lowest ids) pair wins ties
      }
    clusters[bi].insert(clusters[bi].end(), clusters[bj].begin(), clusters[bj].end());
    std::sort(clusters[bi].begin(), clusters[bi].end());
    clusters.erase(clusters.begin() + static_cast<std::ptrdiff_t>(bj));
  }
  return finish(std::move(clusters), freq);
}

std::vector<double> row_cosine_similarity(const float* X, int64_t E, int64_t D) {
  std::vector<double> norm(static_cast<size_t>(E), 0.0), s(static_cast<size_t>(E * E), 0.0);
  for (int64_t i = 0; i < E; ++i) {
    double n = 0;
    for (int64_t d = 0; d < D; ++d) n += static_cast<double>(X[i * D + d]) * X[i * D + d];
    norm[static_cast<size_t>(i)] = std::sqrt(n);
  }
  for (int64_t i = 0; i < E; ++i)
    for (int64_t j = i; j < E; ++j) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(X[i * D + d]) * X[j * D + d];
      const double den = norm[static_cast<size_t>(i)] * norm[static_cast<size_t>(j)];
      const double c = den > 0 ? dot / den : 0.0;
      s[static_cast<size_t>(i * E + j)] = s[static_cast<size_t>(j * E + i)] = (i == j && den > 0) ? 1.0 : c;
    }
  return s;
}

}  // namespace moetool
