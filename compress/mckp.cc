// compress/mckp.cc — the multiple-choice knapsack solvers of mckp.h: the checks and the re-check in
// the caller's units, the Lagrangian Pareto DP of the budget-only problem, the method choice (GLPK in
// compress/mckp_glpk.cc where extra rows bind), and exhaustive enumeration.
#include "compress/mckp.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "compress/mckp_internal.h"
#include "core/error.h"

namespace moetool {

using namespace mckp_detail;

namespace mckp_detail {

std::string group_label(const MckpProblem& p, size_t g) {
  return p.groups[g].name.empty() ? str("group ", g) : str("group ", g, " (", p.groups[g].name, ")");
}

bool within(double act, double mass, double lo, double hi) {
  if (lo > -kInf && act < lo - kRelTol * std::max(std::fabs(lo), mass)) return false;
  if (hi < kInf && act > hi + kRelTol * std::max(std::fabs(hi), mass)) return false;
  return true;
}

void activity(const MckpLinear& L, const std::vector<size_t>& choice, double& act, double& mass) {
  act = 0;
  mass = 0;
  for (const auto& [g, c, a] : L.terms)
    if (choice[g] == c) {
      act += a;
      mass += std::fabs(a);
    }
}

long first_violation(const MckpProblem& p, const std::vector<size_t>& choice, double size, double* act_out) {
  if (!within(size, size, -kInf, p.budget)) {
    if (act_out) *act_out = size;
    return 0;
  }
  for (size_t k = 0; k < p.constraints.size(); ++k) {
    double act, mass;
    activity(p.constraints[k], choice, act, mass);
    if (!within(act, mass, p.constraints[k].lower, p.constraints[k].upper)) {
      if (act_out) *act_out = act;
      return static_cast<long>(k) + 1;
    }
  }
  return -1;
}

void totals(const MckpProblem& p, const std::vector<size_t>& choice, double& size, double& cost) {
  size = 0;
  cost = 0;
  for (size_t g = 0; g < p.groups.size(); ++g) {
    size += p.groups[g].choices[choice[g]].size;
    cost += p.groups[g].choices[choice[g]].cost;
  }
}

}  // namespace mckp_detail

namespace {

std::string constraint_label(const MckpProblem& p, size_t k) {
  return p.constraints[k].name.empty() ? str("constraint ", k)
                                       : str("constraint ", k, " (", p.constraints[k].name, ")");
}

}  // namespace

void validate_mckp(const MckpProblem& p) {
  check(!std::isnan(p.budget), "mckp: the budget is NaN");
  for (size_t g = 0; g < p.groups.size(); ++g) {
    const auto& ch = p.groups[g].choices;
    check(!ch.empty(), "mckp: ", group_label(p, g), " has no choices");
    for (size_t c = 0; c < ch.size(); ++c) {
      check(std::isfinite(ch[c].size) && ch[c].size >= 0, "mckp: ", group_label(p, g), " choice ", c,
            ": size must be finite and >= 0, got ", ch[c].size);
      check(std::isfinite(ch[c].cost), "mckp: ", group_label(p, g), " choice ", c, ": cost must be finite, got ",
            ch[c].cost);
    }
  }
  for (size_t k = 0; k < p.constraints.size(); ++k) {
    const MckpLinear& L = p.constraints[k];
    check(!std::isnan(L.lower) && !std::isnan(L.upper), "mckp: ", constraint_label(p, k), ": a bound is NaN");
    check(L.lower < kInf && L.upper > -kInf, "mckp: ", constraint_label(p, k), ": bounds [", L.lower, ", ",
          L.upper, "] are not a range");
    for (size_t i = 0; i < L.terms.size(); ++i) {
      const auto& [g, c, a] = L.terms[i];
      check(g < p.groups.size(), "mckp: ", constraint_label(p, k), " term ", i, ": group ", g, " out of range (",
            p.groups.size(), " groups)");
      check(c < p.groups[g].choices.size(), "mckp: ", constraint_label(p, k), " term ", i, ": choice ", c,
            " out of range (", group_label(p, g), " has ", p.groups[g].choices.size(), ")");
      check(std::isfinite(a), "mckp: ", constraint_label(p, k), " term ", i, ": coefficient must be finite, got ", a);
    }
  }
}

std::string mckp_violation(const MckpProblem& p, const std::vector<size_t>& choice) {
  check(choice.size() == p.groups.size(), "mckp: a choice per group expected (", p.groups.size(), "), got ",
        choice.size());
  for (size_t g = 0; g < choice.size(); ++g)
    check(choice[g] < p.groups[g].choices.size(), "mckp: ", group_label(p, g), ": choice ", choice[g],
          " out of range (", p.groups[g].choices.size(), " choices)");
  double size, cost, act = 0;
  totals(p, choice, size, cost);
  const long v = first_violation(p, choice, size, &act);
  if (v < 0) return "";
  if (v == 0) return str("budget: total size ", act, " > ", p.budget);
  const MckpLinear& L = p.constraints[v - 1];
  return str(constraint_label(p, v - 1), ": activity ", act, " not in [", L.lower, ", ", L.upper, "]");
}

namespace {

// The budget-only problem (p.constraints ignored), exactly: Lagrangian relaxation of the budget
// (multiplier λ ≥ 0 found by bisection; any λ ≥ 0 gives a valid bound), a greedy incumbent UB,
// reduced-cost fixing (a choice whose c + λs exceeds its group's minimum by more than UB − L(λ)
// cannot be in an optimal solution), then a Pareto dynamic programme over the remaining groups:
// states (size, cost) without dominated ones, pruned by cost + L(λ) of the groups still to come
// − λ·(budget left) > UB. Every comparison keeps a margin in favour of keeping a state, so rounding
// can only cost time. Returns 0 infeasible, 1 solved, 2 too many states (the caller uses GLPK).
int solve_budget_dp(const MckpProblem& p, std::vector<size_t>& choice, size_t max_states) {
  const size_t G = p.groups.size();
  const double B = p.budget;
  auto size_of = [&](size_t g, size_t c) { return p.groups[g].choices[c].size; };
  auto cost_of = [&](size_t g, size_t c) { return p.groups[g].choices[c].cost; };
  // argmin_c cost + λ·size, ties to the smaller size, then the lower index.
  auto argmin = [&](size_t g, double lam) {
    size_t best = 0;
    double bv = cost_of(g, 0) + lam * size_of(g, 0);
    for (size_t c = 1; c < p.groups[g].choices.size(); ++c) {
      const double v = cost_of(g, c) + lam * size_of(g, c);
      if (v < bv || (v == bv && size_of(g, c) < size_of(g, best))) bv = v, best = c;
    }
    return best;
  };
  auto total_size = [&](double lam) {
    double s = 0;
    for (size_t g = 0; g < G; ++g) s += size_of(g, argmin(g, lam));
    return s;
  };
  choice.assign(G, 0);
  double smin = 0;
  for (size_t g = 0; g < G; ++g) {
    size_t m = 0;
    for (size_t c = 1; c < p.groups[g].choices.size(); ++c)
      if (size_of(g, c) < size_of(g, m)) m = c;
    smin += size_of(g, m);
  }
  if (!within(smin, smin, -kInf, B)) return 0;
  double lam = 0;
  if (!within(total_size(0), total_size(0), -kInf, B)) {
    double lo = 0, hi = 1;
    for (int i = 0; i < 4000 && total_size(hi) > B; ++i) hi *= 2;
    if (total_size(hi) > B) return 2;
    for (int i = 0; i < 200; ++i) {
      const double mid = 0.5 * (lo + hi);
      if (mid <= lo || mid >= hi) break;
      (total_size(mid) > B ? lo : hi) = mid;
    }
    lam = hi;
  }
  // Incumbent: the argmin at λ (fits), then passes of the best single change that still fits.
  std::vector<double> h(G);
  double L = -lam * B, used = 0, ub = 0, mag = std::fabs(lam * B);
  for (size_t g = 0; g < G; ++g) {
    choice[g] = argmin(g, lam);
    h[g] = cost_of(g, choice[g]) + lam * size_of(g, choice[g]);
    L += h[g];
    used += size_of(g, choice[g]);
    ub += cost_of(g, choice[g]);
    double m = 0;
    for (size_t c = 0; c < p.groups[g].choices.size(); ++c)
      m = std::max(m, std::fabs(cost_of(g, c)) + lam * size_of(g, c));
    mag += m;
  }
  for (int pass = 0; pass < 3; ++pass) {
    bool changed = false;
    for (size_t g = 0; g < G; ++g) {
      size_t best = choice[g];
      for (size_t c = 0; c < p.groups[g].choices.size(); ++c) {
        const double s = used - size_of(g, choice[g]) + size_of(g, c);
        if (cost_of(g, c) < cost_of(g, best) && within(s, s, -kInf, B)) best = c;
      }
      if (best != choice[g]) {
        used += size_of(g, best) - size_of(g, choice[g]);
        ub += cost_of(g, best) - cost_of(g, choice[g]);
        choice[g] = best;
        changed = true;
      }
    }
    if (!changed) break;
  }
  const double margin = 1e-10 * mag + 1e-9 * std::fabs(ub);
  const double gap = ub - L + margin;
  // Reduced-cost fixing; groups left with one choice are constants.
  std::vector<std::vector<size_t>> keep(G);
  std::vector<size_t> core;
  double s0 = 0, c0 = 0, rest = 0;
  for (size_t g = 0; g < G; ++g) {
    for (size_t c = 0; c < p.groups[g].choices.size(); ++c)
      if (cost_of(g, c) + lam * size_of(g, c) - h[g] <= gap) keep[g].push_back(c);
    if (keep[g].size() == 1) {
      choice[g] = keep[g][0];
      s0 += size_of(g, choice[g]);
      c0 += cost_of(g, choice[g]);
    } else {
      core.push_back(g);
      rest += h[g];
    }
  }
  struct State { double size, cost; uint32_t parent, c; };
  std::vector<std::vector<State>> layers;  // layers[i]: the states after core group i
  std::vector<State> cur{{s0, c0, 0, 0}}, next;
  size_t total = 0;
  for (size_t g : core) {
    rest -= h[g];
    next.clear();
    for (size_t i = 0; i < cur.size(); ++i)
      for (size_t c : keep[g]) {
        const State s{cur[i].size + size_of(g, c), cur[i].cost + cost_of(g, c), static_cast<uint32_t>(i),
                      static_cast<uint32_t>(c)};
        if (!within(s.size, s.size, -kInf, B)) continue;
        if (s.cost + rest - lam * (B - s.size) > ub + margin) continue;
        next.push_back(s);
      }
    std::sort(next.begin(), next.end(),
              [](const State& a, const State& b) { return a.size != b.size ? a.size < b.size : a.cost < b.cost; });
    cur.clear();
    for (const State& s : next)
      if (cur.empty() || s.cost < cur.back().cost) cur.push_back(s);
    total += cur.size();
    if (cur.empty() || total > max_states || cur.size() > UINT32_MAX / 2) return 2;  // cannot happen / too big
    layers.push_back(cur);
  }
  size_t at = 0;
  for (size_t i = 1; i < cur.size(); ++i)
    if (cur[i].cost < cur[at].cost) at = i;
  for (size_t k = core.size(); k-- > 0;) {
    const State& s = layers[k][at];
    choice[core[k]] = s.c;
    at = s.parent;
  }
  return 1;
}

}  // namespace

MckpSolution solve_mckp(const MckpProblem& p, MckpMethod method) {
  const auto t0 = std::chrono::steady_clock::now();
  validate_mckp(p);
  check(method != MckpMethod::Dp || p.constraints.empty(),
        "mckp: the Pareto DP solves budget-only problems; this one has ", p.constraints.size(), " constraints");
  MckpSolution sol;
  auto finish = [&](bool feasible) {
    sol.feasible = feasible;
    if (feasible) totals(p, sol.choice, sol.size, sol.cost);
    else sol.choice.clear();
    sol.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return sol;
  };
  if (p.groups.empty()) {
    sol.solver = "trivial";
    return finish(mckp_violation(p, sol.choice).empty());
  }
  if (method != MckpMethod::Glpk) {
    // Budget-only problems, and problems whose budget-only optimum already satisfies every row
    // (then it is optimal for them too), are solved by the DP.
    const int r = solve_budget_dp(p, sol.choice, 50'000'000);
    if (r == 0) {
      sol.solver = "lagrangian pareto dp";
      return finish(false);  // infeasible without the rows, so with them
    }
    if (r == 1) {
      double size, cost;
      totals(p, sol.choice, size, cost);
      if (first_violation(p, sol.choice, size, nullptr) < 0) {
        sol.solver = p.constraints.empty() ? "lagrangian pareto dp" : "lagrangian pareto dp (rows not binding)";
        return finish(true);
      }
      check(!p.constraints.empty() || first_violation(p, sol.choice, size, nullptr) != 0,
            "mckp: internal error: the DP's choice exceeds the budget");
    }
    check(method != MckpMethod::Dp, "mckp: the Pareto DP exceeded its state limit");
  }
  sol.solver = glpk_solver_name();
  return finish(solve_glpk(p, sol.choice));
}

MckpSolution solve_mckp(const MckpProblem& p) { return solve_mckp(p, MckpMethod::Auto); }

MckpSolution solve_mckp_brute_force(const MckpProblem& p, uint64_t max_combos) {
  const auto t0 = std::chrono::steady_clock::now();
  validate_mckp(p);
  const size_t G = p.groups.size();
  uint64_t combos = 1;
  for (size_t g = 0; g < G; ++g) {
    const uint64_t n = p.groups[g].choices.size();
    check(combos <= max_combos / n, "mckp brute force: more than ", max_combos, " combinations (", G, " groups)");
    combos *= n;
  }
  MckpSolution best;
  best.solver = "brute force";
  std::vector<size_t> choice(G, 0);
  for (uint64_t it = 0; it < combos; ++it) {
    double size, cost;
    totals(p, choice, size, cost);
    if ((!best.feasible || cost < best.cost) && first_violation(p, choice, size, nullptr) < 0) {
      best.feasible = true;
      best.choice = choice;
      best.cost = cost;
      best.size = size;
    }
    for (size_t g = G; g-- > 0;) {  // next combination, the last group fastest
      if (++choice[g] < p.groups[g].choices.size()) break;
      choice[g] = 0;
    }
  }
  best.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return best;
}

}  // namespace moetool
