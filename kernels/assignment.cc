// kernels/assignment.cc — exact linear assignment by shortest augmenting paths (see assignment.h).
// Rows are added one at a time; for each, a Dijkstra-like search over the columns on reduced costs
// C[i, j] − u[i] − v[j] ≥ 0 finds the cheapest augmenting path, and the potentials are updated so the
// reduced costs stay non-negative. Each row costs O(n²), the whole problem O(n³).
#include "kernels/assignment.h"

#include <cmath>
#include <limits>

#include "core/error.h"

namespace moetool {

std::vector<int64_t> solve_assignment(const double* cost, int64_t n) {
  if (n < 0) fail("assignment: negative size ", n);
  for (int64_t i = 0; i < n * n; ++i)
    if (!std::isfinite(cost[i])) fail("assignment: cost[", i / n, ", ", i % n, "] is not finite");
  const double inf = std::numeric_limits<double>::infinity();
  const auto N = static_cast<size_t>(n);
  // 1-based: column 0 is the virtual start; match[j] is the row (1-based) holding column j (0: none).
  std::vector<double> u(N + 1, 0.0), v(N + 1, 0.0), minv(N + 1);
  std::vector<int64_t> match(N + 1, 0), way(N + 1, 0);
  std::vector<char> used(N + 1);
  for (int64_t i = 1; i <= n; ++i) {
    match[0] = i;
    int64_t j0 = 0;
    std::fill(minv.begin(), minv.end(), inf);
    std::fill(used.begin(), used.end(), 0);
    do {
      used[static_cast<size_t>(j0)] = 1;
      const int64_t i0 = match[static_cast<size_t>(j0)];
      const double* row = cost + (i0 - 1) * n;
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= n; ++j) {
        const auto J = static_cast<size_t>(j);
        if (used[J]) continue;
        const double cur = row[j - 1] - u[static_cast<size_t>(i0)] - v[J];
        if (cur < minv[J]) minv[J] = cur, way[J] = j0;
        if (minv[J] < delta) delta = minv[J], j1 = j;
      }
      for (int64_t j = 0; j <= n; ++j) {
        const auto J = static_cast<size_t>(j);
        if (used[J]) {
          u[static_cast<size_t>(match[J])] += delta;
          v[J] -= delta;
        } else {
          minv[J] -= delta;
        }
      }
      j0 = j1;
    } while (match[static_cast<size_t>(j0)] != 0);
    do {  // augment along the path back to the start
      const int64_t j1 = way[static_cast<size_t>(j0)];
      match[static_cast<size_t>(j0)] = match[static_cast<size_t>(j1)];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int64_t> p(N, -1);
  for (int64_t j = 1; j <= n; ++j) p[static_cast<size_t>(match[static_cast<size_t>(j)] - 1)] = j - 1;
  return p;
}

double assignment_cost(const double* cost, int64_t n, const std::vector<int64_t>& p) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += cost[i * n + p[static_cast<size_t>(i)]];
  return s;
}

}  // namespace moetool
