// convert/split.cc — neuron partitions for factorization (see split.h).
#include "convert/split.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "convert/common.h"
#include "convert/rng.h"
#include "core/error.h"

namespace moetool {

const Choice<SplitMethod> kSplitMethods[] = {
    {SplitMethod::Random, "random"}, {SplitMethod::KMeans, "kmeans"}, {SplitMethod::Coactivation, "coactivation"}};

SplitMethod parse_split_method(const std::string& s) {
  return parse_choice(kSplitMethods, s, "--split: unknown method");
}
const char* split_method_name(SplitMethod m) { return choice_name(kSplitMethods, m); }

namespace {

using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

NeuronGroups groups_from_labels(const std::vector<int32_t>& lab, const std::vector<int64_t>& neurons, int64_t K) {
  NeuronGroups g(static_cast<size_t>(K));
  for (size_t i = 0; i < lab.size(); ++i) g[static_cast<size_t>(lab[i])].push_back(neurons[i]);
  for (auto& x : g) std::sort(x.begin(), x.end());
  return g;
}

void check_sizes(int64_t n, int64_t K, const char* what) {
  check(K >= 1, what, ": the number of groups must be positive");
  check(n % K == 0 && n >= K, what, ": ", n, " neurons cannot be split into ", K, " equal groups");
}

// Balanced spherical k-means on the rows of X [n, d] (already L2-normalised), K clusters.
std::vector<int32_t> balanced_kmeans(const MatF& X, int64_t K, uint64_t key, int max_iters) {
  const int64_t n = X.rows(), d = X.cols();
  // k-means++ seeding on cosine distance 1 − x·c.
  MatF C(K, d);
  std::vector<double> best(static_cast<size_t>(n), 2.0);
  int64_t first = static_cast<int64_t>(rng::uniform(key, 0) * static_cast<double>(n));
  C.row(0) = X.row(std::min(first, n - 1));
  for (int64_t k = 1; k < K; ++k) {
    const Eigen::VectorXf sim = X * C.row(k - 1).transpose();
    double tot = 0;
    for (int64_t i = 0; i < n; ++i) {
      best[static_cast<size_t>(i)] = std::min(best[static_cast<size_t>(i)], std::max(0.0, 1.0 - sim(i)));
      tot += best[static_cast<size_t>(i)] * best[static_cast<size_t>(i)];
    }
    double r = rng::uniform(key, static_cast<uint64_t>(k)) * tot;
    int64_t pick = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      r -= best[static_cast<size_t>(i)] * best[static_cast<size_t>(i)];
      if (r < 0) {
        pick = i;
        break;
      }
    }
    C.row(k) = X.row(pick);
  }
  std::vector<int32_t> lab;
  for (int it = 0; it < max_iters; ++it) {
    const MatF S = X * C.transpose();  // [n, K]
    std::vector<float> sc(S.data(), S.data() + n * K);
    std::vector<int32_t> nl = balanced_assign(sc, n, K);
    if (nl == lab) break;
    lab = std::move(nl);
    C.setZero();
    for (int64_t i = 0; i < n; ++i) C.row(lab[static_cast<size_t>(i)]) += X.row(i);
    for (int64_t k = 0; k < K; ++k) {
      const float nr = C.row(k).norm();
      if (nr > 0) C.row(k) /= nr;
    }
  }
  return lab;
}

}  // namespace

std::vector<int32_t> balanced_assign(const std::vector<float>& score, int64_t n, int64_t K) {
  check(n % K == 0, "balanced_assign: ", n, " points do not split into ", K, " equal clusters");
  const int64_t cap = n / K;
  std::vector<int64_t> order(static_cast<size_t>(n * K));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    const float x = score[static_cast<size_t>(a)], y = score[static_cast<size_t>(b)];
    return x != y ? x > y : a < b;
  });
  std::vector<int32_t> lab(static_cast<size_t>(n), -1);
  std::vector<int64_t> fill(static_cast<size_t>(K), 0);
  int64_t left = n;
  for (int64_t p : order) {
    const int64_t i = p / K, k = p % K;
    if (lab[static_cast<size_t>(i)] >= 0 || fill[static_cast<size_t>(k)] >= cap) continue;
    lab[static_cast<size_t>(i)] = static_cast<int32_t>(k);
    ++fill[static_cast<size_t>(k)];
    if (--left == 0) break;
  }
  return lab;
}

NeuronGroups split_random(const std::vector<int64_t>& neurons, int64_t groups, uint64_t key) {
  const int64_t n = static_cast<int64_t>(neurons.size());
  check_sizes(n, groups, "random split");
  std::vector<int64_t> p = neurons;
  for (int64_t i = n - 1; i > 0; --i) {  // Fisher–Yates with the counter-based stream
    const int64_t j = static_cast<int64_t>(rng::uniform(key, static_cast<uint64_t>(i)) * static_cast<double>(i + 1));
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(std::min(j, i))]);
  }
  const int64_t per = n / groups;
  NeuronGroups g(static_cast<size_t>(groups));
  for (int64_t k = 0; k < groups; ++k) {
    g[static_cast<size_t>(k)].assign(p.begin() + k * per, p.begin() + (k + 1) * per);
    std::sort(g[static_cast<size_t>(k)].begin(), g[static_cast<size_t>(k)].end());
  }
  return g;
}

NeuronGroups split_kmeans(const float* rows, int64_t dim, const std::vector<int64_t>& neurons, int64_t groups,
                          uint64_t key, int max_iters) {
  const int64_t n = static_cast<int64_t>(neurons.size());
  check_sizes(n, groups, "k-means split");
  MatF X(n, dim);
  for (int64_t i = 0; i < n; ++i) {
    const float* r = rows + neurons[static_cast<size_t>(i)] * dim;
    double s = 0;
    for (int64_t j = 0; j < dim; ++j) s += static_cast<double>(r[j]) * r[j];
    const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
    for (int64_t j = 0; j < dim; ++j) X(i, j) = r[j] * inv;
  }
  return groups_from_labels(balanced_kmeans(X, groups, key, max_iters), neurons, groups);
}

std::vector<double> coactivation_matrix(const float* A, int64_t T, int64_t I, const std::vector<int64_t>& neurons) {
  const int64_t n = static_cast<int64_t>(neurons.size());
  // a_i·a_j > 0 exactly when both have the same sign: C = PᵀP + NᵀN with P = max(a, 0), N = max(−a, 0).
  MatF P(T, n), Q(T, n);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < n; ++i) {
      const float a = A[t * I + neurons[static_cast<size_t>(i)]];
      P(t, i) = a > 0 ? a : 0.0f;
      Q(t, i) = a < 0 ? -a : 0.0f;
    }
  const MatF C = P.transpose() * P + Q.transpose() * Q;
  std::vector<double> out(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) out[static_cast<size_t>(i * n + j)] = C(i, j);
  return out;
}

double coactivation_within(const std::vector<double>& C, const std::vector<int64_t>& neurons,
                           const NeuronGroups& groups) {
  const int64_t n = static_cast<int64_t>(neurons.size());
  std::vector<int64_t> pos_of;  // neuron id -> position in `neurons`
  int64_t mx = 0;
  for (int64_t v : neurons) mx = std::max(mx, v);
  pos_of.assign(static_cast<size_t>(mx + 1), -1);
  for (int64_t i = 0; i < n; ++i) pos_of[static_cast<size_t>(neurons[static_cast<size_t>(i)])] = i;
  std::vector<int64_t> lab(static_cast<size_t>(n), -1);
  for (size_t g = 0; g < groups.size(); ++g)
    for (int64_t v : groups[g]) lab[static_cast<size_t>(pos_of[static_cast<size_t>(v)])] = static_cast<int64_t>(g);
  double in = 0, tot = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      if (i == j) continue;
      const double c = C[static_cast<size_t>(i * n + j)];
      tot += c;
      if (lab[static_cast<size_t>(i)] == lab[static_cast<size_t>(j)]) in += c;
    }
  return tot > 0 ? in / tot : 0.0;
}

NeuronGroups split_coactivation(const std::vector<double>& C, const std::vector<int64_t>& neurons, int64_t groups,
                                uint64_t key, double* within) {
  const int64_t n = static_cast<int64_t>(neurons.size()), K = groups;
  check_sizes(n, K, "co-activation split");
  check(static_cast<int64_t>(C.size()) == n * n, "co-activation split: affinity matrix has the wrong size");
  // Normalised affinity, self-affinity removed.
  MatF A(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const double d = std::sqrt(C[static_cast<size_t>(i * n + i)] * C[static_cast<size_t>(j * n + j)]);
      A(i, j) = (i == j || d <= 0) ? 0.0f : static_cast<float>(C[static_cast<size_t>(i * n + j)] / d);
    }
  // Seed: balanced k-means on the neurons' affinity profiles (rows of Â, L2-normalised).
  MatF X = A;
  for (int64_t i = 0; i < n; ++i) {
    const float nr = X.row(i).norm();
    if (nr > 0) X.row(i) /= nr;
  }
  std::vector<int32_t> lab = balanced_kmeans(X, K, key, 30);
  // Refinement by pairwise swaps between groups (Kernighan–Lin style), which keeps the groups equal:
  // S[i, g] = Σ_{j∈g} Â_ij; swapping i ∈ a with j ∈ b gains (S_ib − S_ia) + (S_ja − S_jb) − 2Â_ij.
  Eigen::MatrixXd S = Eigen::MatrixXd::Zero(n, K);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) S(i, lab[static_cast<size_t>(j)]) += A(i, j);
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(K));
  for (int pass = 0; pass < 100; ++pass) {
    bool improved = false;
    for (auto& m : members) m.clear();
    for (int64_t i = 0; i < n; ++i) members[static_cast<size_t>(lab[static_cast<size_t>(i)])].push_back(i);
    for (int64_t a = 0; a < K; ++a)
      for (int64_t b = a + 1; b < K; ++b) {
        auto cands = [&](int64_t from, int64_t to) {
          std::vector<std::pair<double, int64_t>> c;
          for (int64_t i : members[static_cast<size_t>(from)])
            if (lab[static_cast<size_t>(i)] == from) c.push_back({S(i, to) - S(i, from), i});
          std::sort(c.begin(), c.end(), [](const auto& x, const auto& y) { return x.first != y.first ? x.first > y.first : x.second < y.second; });
          return c;
        };
        const auto ca = cands(a, b), cb = cands(b, a);
        for (size_t p = 0; p < std::min(ca.size(), cb.size()); ++p) {
          if (ca[p].first + cb[p].first <= 0) break;
          const int64_t i = ca[p].second, j = cb[p].second;
          const double gain = (S(i, b) - S(i, a)) + (S(j, a) - S(j, b)) - 2.0 * A(i, j);
          if (gain <= 1e-9) continue;
          lab[static_cast<size_t>(i)] = static_cast<int32_t>(b);
          lab[static_cast<size_t>(j)] = static_cast<int32_t>(a);
          for (int64_t k = 0; k < n; ++k) {
            const double d = static_cast<double>(A(k, j)) - A(k, i);
            S(k, a) += d;
            S(k, b) -= d;
          }
          improved = true;
        }
      }
    if (!improved) break;
  }
  const std::vector<int32_t>& best_lab = lab;
  NeuronGroups g = groups_from_labels(best_lab, neurons, K);
  if (within) *within = coactivation_within(C, neurons, g);
  return g;
}

std::vector<int64_t> most_active_neurons(const float* A, int64_t T, int64_t I, int64_t count) {
  check(count >= 0 && count <= I, "shared neurons: cannot pick ", count, " of ", I, " neurons");
  std::vector<int64_t> freq(static_cast<size_t>(I), 0);
  std::vector<double> mass(static_cast<size_t>(I), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const float* a = A + t * I;
    double m = 0;
    for (int64_t i = 0; i < I; ++i) m += std::fabs(a[i]);
    m /= static_cast<double>(I);
    for (int64_t i = 0; i < I; ++i) {
      const double v = std::fabs(a[i]);
      mass[static_cast<size_t>(i)] += v;
      if (v > m) ++freq[static_cast<size_t>(i)];
    }
  }
  std::vector<int64_t> idx(static_cast<size_t>(I));
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    if (freq[static_cast<size_t>(a)] != freq[static_cast<size_t>(b)]) return freq[static_cast<size_t>(a)] > freq[static_cast<size_t>(b)];
    if (mass[static_cast<size_t>(a)] != mass[static_cast<size_t>(b)]) return mass[static_cast<size_t>(a)] > mass[static_cast<size_t>(b)];
    return a < b;
  });
  idx.resize(static_cast<size_t>(count));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace moetool
