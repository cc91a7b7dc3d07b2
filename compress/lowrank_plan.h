// compress/lowrank_plan.h — the ranks of `moetool svd`: every target (one matrix, or a layer's
// projection whose experts share one basis) offers choices — a rank from a grid below the break-even
// rank, or "dense" (stored as is) — each with its stored parameter count and its measured truncation
// cost; the exact multiple-choice knapsack (compress/mckp.h) picks one choice per target so that the
// parameters fit the budget and the summed cost is minimal. Costs are relative squared errors
// weighted by how often the matrix is used (see compress/lowrank.h), so one budget spreads over
// matrices of different sizes and importance.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetool::svd {

constexpr int64_t kDense = -1;  // the choice "keep the matrix dense"

struct RankTarget {
  std::string name;            // module (or "layer 3 w1 (shared)")
  std::vector<int64_t> ranks;  // the choices: ranks ascending, kDense last
  std::vector<double> params;  // stored parameters of each choice
  std::vector<double> cost;    // its cost (0 for kDense)
};

struct RankPlan {
  std::vector<int64_t> rank;  // per target: the chosen rank or kDense
  double params = 0, cost = 0;
  std::string solver;
};

// Rank choices up to `top` (a matrix's break-even rank, beyond which U·V stores more than W):
// `steps` ranks spread evenly over 1 .. top, distinct and ascending; with multiple > 1 each is
// rounded to a multiple of it (at least `multiple`, at most the largest multiple ≤ top; just {top}
// when top < multiple).
std::vector<int64_t> rank_grid(int64_t top, int64_t steps = 32, int64_t multiple = 1);
// The break-even rank of a [rows, cols] matrix (≥ 1).
int64_t break_even_rank(int64_t rows, int64_t cols);

// The cheapest choice per target with Σ params ≤ budget. Throws (one line naming the budget and the
// smallest size reachable) when even the smallest choices do not fit.
RankPlan allocate_ranks(const std::vector<RankTarget>& targets, double budget);

}  // namespace moetool::svd
