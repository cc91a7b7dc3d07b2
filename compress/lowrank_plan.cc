// compress/lowrank_plan.cc — rank grids and the knapsack over them (see lowrank_plan.h).
#include "compress/lowrank_plan.h"

#include <algorithm>
#include <cmath>

#include "compress/mckp.h"
#include "core/error.h"

namespace moetool::svd {

int64_t break_even_rank(int64_t rows, int64_t cols) {
  return std::max<int64_t>(1, rows * cols / (rows + cols));
}

std::vector<int64_t> rank_grid(int64_t top, int64_t steps, int64_t multiple) {
  std::vector<int64_t> out;
  if (multiple > 1 && top < multiple) return {top};
  for (int64_t k = 1; k <= steps; ++k) {
    const double x = static_cast<double>(k * top) / static_cast<double>(steps);
    int64_t r = std::max<int64_t>(1, static_cast<int64_t>(std::llround(x)));
    if (multiple > 1)
      r = std::min(std::max(multiple, static_cast<int64_t>(std::llround(x / static_cast<double>(multiple))) * multiple),
                   top / multiple * multiple);
    if (out.empty() || r > out.back()) out.push_back(r);
  }
  return out;
}

RankPlan allocate_ranks(const std::vector<RankTarget>& targets, double budget) {
  MckpProblem p;
  p.budget = budget;
  double smallest = 0;
  for (const auto& t : targets) {
    if (t.ranks.empty() || t.ranks.size() != t.params.size() || t.ranks.size() != t.cost.size())
      fail("svd: target ", t.name, " has ", t.ranks.size(), " ranks, ", t.params.size(), " sizes and ", t.cost.size(),
           " costs (expected the same number, at least one)");
    MckpGroup g;
    g.name = t.name;
    for (size_t i = 0; i < t.ranks.size(); ++i) g.choices.push_back({t.params[i], t.cost[i]});
    smallest += *std::min_element(t.params.begin(), t.params.end());
    p.groups.push_back(std::move(g));
  }
  if (smallest > budget)
    fail("svd: the budget of ", static_cast<int64_t>(budget), " parameters is below the ", static_cast<int64_t>(smallest),
         " that the smallest rank of every target needs (raise --ratio)");
  const MckpSolution s = solve_mckp(p);
  if (!s.feasible) fail("svd: no rank choice fits the budget of ", static_cast<int64_t>(budget), " parameters");
  RankPlan plan;
  for (size_t i = 0; i < targets.size(); ++i) plan.rank.push_back(targets[i].ranks[s.choice[i]]);
  plan.params = s.size;
  plan.cost = s.cost;
  plan.solver = s.solver;
  return plan;
}

}  // namespace moetool::svd
