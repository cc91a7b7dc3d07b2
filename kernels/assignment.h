// kernels/assignment.h — the linear assignment problem, solved exactly: for an n×n cost matrix C,
// the permutation p minimising Σ_i C[i, p[i]]. Shortest augmenting paths with dual potentials (the
// Hungarian method in its O(n³) form: one Dijkstra-like pass over the columns per row). merge uses it
// to align one expert's intermediate neurons with another's (weight matching, as in MC-SMoE).
#pragma once

#include <cstdint>
#include <vector>

namespace moetool {

// cost: row-major [n, n], finite. Returns p (size n): row i is assigned column p[i]; p is a
// permutation. Ties are broken deterministically (lowest column index first). Throws on n < 0 or a
// non-finite cost.
std::vector<int64_t> solve_assignment(const double* cost, int64_t n);

// Σ_i cost[i, p[i]].
double assignment_cost(const double* cost, int64_t n, const std::vector<int64_t>& p);

}  // namespace moetool
