// tests/mckp_test.cc — the exact multiple-choice knapsack (compress/mckp.h): GLPK's optimum against
// exhaustive enumeration on hundreds of seeded random instances (ties, dominated choices, budgets
// from infeasible to loose, "bits ≥ size-weighted average" rows), feasibility re-checked by the
// test's own arithmetic, a large instance bracketed by the LP-relaxation bound and a greedy
// solution, infeasible problems, invalid inputs, silence and thread safety.
#include "compress/mckp.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"

namespace moetool {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A bit-allocation-shaped instance: group g has params[g] weights and choice c stores them at
// bits[g][c] bits per weight (size = params · bits).
struct Instance {
  MckpProblem p;
  std::vector<double> params;
  std::vector<std::vector<double>> bits;
};

// The test's own feasibility check (not mckp_violation): Σ size ≤ budget and every row within its
// bounds, both up to 1e-9 of the larger of the bound and Σ|terms| (plus a little for summation order).
bool feasible_here(const MckpProblem& p, const std::vector<size_t>& choice, std::string* why = nullptr) {
  if (choice.size() != p.groups.size()) {
    if (why) *why = "wrong length";
    return false;
  }
  double size = 0;
  for (size_t g = 0; g < choice.size(); ++g) {
    if (choice[g] >= p.groups[g].choices.size()) {
      if (why) *why = "index out of range";
      return false;
    }
    size += p.groups[g].choices[choice[g]].size;
  }
  const double tol = 2e-9;
  if (size > p.budget + tol * std::max(std::fabs(p.budget), size)) {
    if (why) *why = str("size ", size, " > budget ", p.budget);
    return false;
  }
  for (const auto& L : p.constraints) {
    long double act = 0, mass = 0;
    for (const auto& [g, c, a] : L.terms)
      if (choice[g] == c) act += a, mass += std::fabs(a);
    if (L.lower > -kInf && act < L.lower - tol * std::max<long double>(std::fabs(L.lower), mass)) {
      if (why) *why = str(L.name, ": ", static_cast<double>(act), " < ", L.lower);
      return false;
    }
    if (L.upper < kInf && act > L.upper + tol * std::max<long double>(std::fabs(L.upper), mass)) {
      if (why) *why = str(L.name, ": ", static_cast<double>(act), " > ", L.upper);
      return false;
    }
  }
  return true;
}

double cost_here(const MckpProblem& p, const std::vector<size_t>& choice) {
  double c = 0;
  for (size_t g = 0; g < choice.size(); ++g) c += p.groups[g].choices[choice[g]].cost;
  return c;
}

// "group i's bits ≥ the size-weighted average bits of the groups in R":
// Σ_c b_ic x_ic − Σ_r∈R Σ_c (n_r / N_R) b_rc x_rc ≥ 0.
MckpLinear at_least_average(const Instance& in, size_t i, const std::vector<size_t>& R) {
  MckpLinear L;
  L.name = str("group ", i, " >= avg");
  L.lower = 0;
  double NR = 0;
  for (size_t r : R) NR += in.params[r];
  for (size_t c = 0; c < in.bits[i].size(); ++c) L.terms.emplace_back(i, c, in.bits[i][c]);
  for (size_t r : R)
    for (size_t c = 0; c < in.bits[r].size(); ++c) L.terms.emplace_back(r, c, -(in.params[r] / NR) * in.bits[r][c]);
  return L;
}

Instance random_instance(uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto real = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  static const double kBits[] = {2, 3, 4, 4.5, 5, 6, 8};
  Instance in;
  const int G = uni(2, 8);
  const bool integer_costs = uni(0, 3) == 0;  // many exact ties in cost
  const bool same_params = uni(0, 3) == 0;    // many exact ties in size
  for (int g = 0; g < G; ++g) {
    MckpGroup grp;
    grp.name = str("u", g);
    const double n = same_params ? 256 : 64 * uni(1, 16);
    in.params.push_back(n);
    const double scale = real(0.1, 10);
    std::vector<double> b;
    const int C = uni(2, 5);
    for (int c = 0; c < C; ++c) {
      const double bits = kBits[uni(0, 6)];  // repeats allowed: equal sizes within a group
      double cost;
      if (integer_costs) cost = uni(0, 4);
      else if (uni(0, 4) == 0) cost = scale * real(0, 0.5);  // often dominated by a smaller choice
      else cost = scale * std::exp2(-bits) * real(0.7, 1.3);
      grp.choices.push_back({n * bits, cost});
      b.push_back(bits);
    }
    in.bits.push_back(b);
    in.p.groups.push_back(grp);
  }
  double smin = 0, smax = 0;
  for (const auto& g : in.p.groups) {
    double lo = kInf, hi = 0;
    for (const auto& c : g.choices) lo = std::min(lo, c.size), hi = std::max(hi, c.size);
    smin += lo;
    smax += hi;
  }
  const int mode = uni(0, 9);
  if (mode == 0) {
    // Exactly the size of a random combination.
    in.p.budget = 0;
    for (const auto& g : in.p.groups) in.p.budget += g.choices[uni(0, static_cast<int>(g.choices.size()) - 1)].size;
  } else {
    static const double kT[] = {-0.2, -0.01, 0, 0.1, 0.25, 0.4, 0.55, 0.7, 0.85, 1.0, 1.3};
    in.p.budget = smin + kT[uni(0, 10)] * (smax - smin);
  }
  const int nrows = uni(0, 2);
  for (int k = 0; k < nrows; ++k) {
    if (uni(0, 4) == 0) {
      // At most one group at its last choice (an upper-bounded row with unit coefficients).
      MckpLinear L;
      L.name = "at most one last";
      L.upper = 1;
      for (int g = 0; g < G; ++g) L.terms.emplace_back(g, in.p.groups[g].choices.size() - 1, 1.0);
      in.p.constraints.push_back(L);
      continue;
    }
    const size_t i = uni(0, G - 1);
    std::vector<size_t> R;
    for (int r = 0; r < G; ++r)
      if (static_cast<size_t>(r) != i && uni(0, 1)) R.push_back(r);
    if (R.empty()) R.push_back((i + 1) % G);
    in.p.constraints.push_back(at_least_average(in, i, R));
  }
  return in;
}

TEST(Mckp, RandomInstancesMatchBruteForce) {
  int feasible = 0, infeasible = 0, with_rows = 0, rows_bind = 0, budget_binds = 0, auto_glpk = 0;
  double glpk_s = 0, dp_s = 0, brute_s = 0;
  for (uint64_t seed = 1; seed <= 800; ++seed) {
    const Instance in = random_instance(seed);
    const MckpProblem& p = in.p;
    SCOPED_TRACE(str("seed ", seed, ": ", p.groups.size(), " groups, ", p.constraints.size(), " rows, budget ",
                     p.budget));
    const MckpSolution bf = solve_mckp_brute_force(p);
    brute_s += bf.seconds;
    std::vector<MckpMethod> methods = {MckpMethod::Auto, MckpMethod::Glpk};
    if (p.constraints.empty()) methods.push_back(MckpMethod::Dp);
    for (MckpMethod m : methods) {
      const MckpSolution s = solve_mckp(p, m);
      SCOPED_TRACE(s.solver);
      if (m == MckpMethod::Glpk) {
        glpk_s += s.seconds;
        EXPECT_NE(s.solver.find("glpk"), std::string::npos);
      } else {
        dp_s += s.seconds;
      }
      if (m == MckpMethod::Dp) EXPECT_NE(s.solver.find("dp"), std::string::npos);
      if (m == MckpMethod::Auto && s.solver.find("glpk") != std::string::npos) ++auto_glpk;
      ASSERT_EQ(s.feasible, bf.feasible);
      if (!bf.feasible) continue;
      std::string why;
      ASSERT_TRUE(feasible_here(p, s.choice, &why)) << why;
      EXPECT_NEAR(s.cost, bf.cost, 1e-9 * std::max(1.0, std::fabs(bf.cost)));
      EXPECT_NEAR(s.cost, cost_here(p, s.choice), 1e-12 * std::max(1.0, std::fabs(s.cost)));
      double size = 0;
      for (size_t g = 0; g < s.choice.size(); ++g) size += p.groups[g].choices[s.choice[g]].size;
      EXPECT_DOUBLE_EQ(s.size, size);
    }
    if (!bf.feasible) {
      ++infeasible;
      continue;
    }
    ++feasible;
    std::string why;
    ASSERT_TRUE(feasible_here(p, bf.choice, &why)) << why;
    // The rows and the budget must matter in a good share of instances, or this test proves little.
    MckpProblem loose = p;
    loose.constraints.clear();
    if (!p.constraints.empty()) {
      ++with_rows;
      if (solve_mckp_brute_force(loose).cost < bf.cost - 1e-9 * std::max(1.0, std::fabs(bf.cost))) ++rows_bind;
    }
    loose.budget = kInf;
    if (solve_mckp_brute_force(loose).cost < bf.cost - 1e-9 * std::max(1.0, std::fabs(bf.cost))) ++budget_binds;
  }
  std::printf("mckp random: %d feasible, %d infeasible, %d with rows (%d binding), budget binding in %d, auto chose "
              "glpk %d times; glpk %.3f s, auto+dp %.3f s, brute force %.3f s in all\n",
              feasible, infeasible, with_rows, rows_bind, budget_binds, auto_glpk, glpk_s, dp_s, brute_s);
  EXPECT_GE(auto_glpk, 40);  // the rows-binding path of Auto is exercised
  EXPECT_GE(infeasible, 60);
  EXPECT_GE(feasible, 400);
  EXPECT_GE(rows_bind, 40);
  EXPECT_GE(budget_binds, 150);
}

// Larger exact instances: 12 groups × 3 choices (531441 combinations) with two rows.
TEST(Mckp, MediumInstancesMatchBruteForce) {
  for (uint64_t seed = 1; seed <= 6; ++seed) {
    std::mt19937_64 rng(1000 + seed);
    std::uniform_real_distribution<double> u(0.7, 1.3);
    Instance in;
    const double kB[] = {3, 4, 6};
    for (int g = 0; g < 12; ++g) {
      MckpGroup grp;
      in.params.push_back(64.0 * (1 + rng() % 8));
      for (double b : kB) grp.choices.push_back({in.params.back() * b, std::exp2(-b) * u(rng) * (1 + rng() % 5)});
      in.bits.push_back({kB[0], kB[1], kB[2]});
      in.p.groups.push_back(grp);
    }
    double smin = 0, smax = 0;
    for (double n : in.params) smin += 3 * n, smax += 6 * n;
    in.p.budget = smin + (0.2 + 0.1 * seed) * (smax - smin);
    in.p.constraints.push_back(at_least_average(in, 0, {3, 4, 5, 6, 7}));
    in.p.constraints.push_back(at_least_average(in, 1, {8, 9, 10, 11}));
    SCOPED_TRACE(str("seed ", seed));
    const MckpSolution bf = solve_mckp_brute_force(in.p);
    ASSERT_TRUE(bf.feasible);
    for (MckpMethod m : {MckpMethod::Auto, MckpMethod::Glpk}) {
      const MckpSolution s = solve_mckp(in.p, m);
      ASSERT_TRUE(s.feasible) << s.solver;
      EXPECT_TRUE(feasible_here(in.p, s.choice)) << s.solver;
      EXPECT_NEAR(s.cost, bf.cost, 1e-9 * bf.cost) << s.solver;
    }
  }
}

TEST(Mckp, HandWorkedExample) {
  // Two groups; budget 10. Feasible pairs (size, cost): (0,0) 2+3=5 c=9; (0,1) 2+6=8 c=6; (1,0) 5+3=8 c=6.5;
  // (1,1) 5+6=11 over budget. Optimum (0,1) with cost 6, size 8.
  MckpProblem p;
  p.groups = {{"a", {{2, 5}, {5, 2.5}}}, {"b", {{3, 4}, {6, 1}}}};
  p.budget = 10;
  for (const MckpSolution& s : {solve_mckp(p), solve_mckp_brute_force(p)}) {
    ASSERT_TRUE(s.feasible) << s.solver;
    EXPECT_EQ(s.choice, (std::vector<size_t>{0, 1})) << s.solver;
    EXPECT_DOUBLE_EQ(s.cost, 6);
    EXPECT_DOUBLE_EQ(s.size, 8);
  }
  // "b's choice index ≤ a's" (x_b1 − x_a1 ≤ 0) leaves (0,0) and (1,0): (1,0) with cost 6.5.
  p.constraints.push_back({{{1, 1, 1.0}, {0, 1, -1.0}}, -kInf, 0, "b <= a"});
  const MckpSolution s = solve_mckp(p);
  ASSERT_TRUE(s.feasible);
  EXPECT_EQ(s.choice, (std::vector<size_t>{1, 0}));
  EXPECT_DOUBLE_EQ(s.cost, 6.5);
  EXPECT_EQ(mckp_violation(p, {1, 0}), "");
  EXPECT_NE(mckp_violation(p, {0, 1}).find("b <= a"), std::string::npos);
  EXPECT_NE(mckp_violation(p, {1, 1}).find("budget"), std::string::npos);
}

TEST(Mckp, EdgeCases) {
  // No groups: feasible iff the budget and the (empty) rows allow zero.
  MckpProblem none;
  EXPECT_TRUE(solve_mckp(none).feasible);
  none.budget = -1;
  EXPECT_FALSE(solve_mckp(none).feasible);
  EXPECT_FALSE(solve_mckp_brute_force(none).feasible);

  // Equal sizes in every group (the budget row vanishes), budget +inf, single-choice groups.
  MckpProblem p;
  p.groups = {{"x", {{4, 3}, {4, 1}, {4, 2}}}, {"y", {{7, 0.5}}}, {"z", {{1, 2}, {1, 2}}}};
  p.budget = 12;
  MckpSolution s = solve_mckp(p);
  ASSERT_TRUE(s.feasible);
  EXPECT_EQ(s.choice[0], 1u);
  EXPECT_DOUBLE_EQ(s.cost, 3.5);
  p.budget = 11.9;
  EXPECT_FALSE(solve_mckp(p).feasible);
  p.budget = kInf;
  EXPECT_TRUE(solve_mckp(p).feasible);

  // Duplicate terms add up; an equality row; a row whose activity no choice changes.
  p.budget = kInf;
  p.constraints = {{{{0, 0, 0.5}, {0, 0, 0.5}, {0, 2, 1.0}}, 1, 1, "x picks 0 or 2"}};
  s = solve_mckp(p);
  ASSERT_TRUE(s.feasible);
  EXPECT_EQ(s.choice[0], 2u);
  EXPECT_DOUBLE_EQ(s.cost, solve_mckp_brute_force(p).cost);
  p.constraints.push_back({{{1, 0, 3.0}}, 2, 4, "constant 3 in [2,4]"});
  EXPECT_TRUE(solve_mckp(p).feasible);
  p.constraints.push_back({{{1, 0, 3.0}}, 3.5, kInf, "constant 3 >= 3.5"});
  EXPECT_FALSE(solve_mckp(p).feasible);
  EXPECT_FALSE(solve_mckp_brute_force(p).feasible);

  // Budget exactly at the smallest total, and a rounding below it: feasible (tolerance 1e-9).
  MckpProblem q;
  q.groups = {{"a", {{0.1, 1}, {0.7, 0}}}, {"b", {{0.2, 1}, {0.9, 0}}}, {"c", {{0.3, 1}, {0.4, 0.5}}}};
  q.budget = 0.1 + 0.2 + 0.3;
  EXPECT_TRUE(solve_mckp(q).feasible);
  q.budget = std::nextafter(q.budget, 0.0);
  EXPECT_TRUE(solve_mckp(q).feasible);
  q.budget *= 1 - 1e-7;
  EXPECT_FALSE(solve_mckp(q).feasible);
  EXPECT_FALSE(solve_mckp_brute_force(q).feasible);
}

TEST(Mckp, InfeasibleDetected) {
  MckpProblem p;
  p.groups = {{"a", {{4, 1}, {8, 0}}}, {"b", {{2, 1}, {3, 0}}}};
  p.budget = 5.5;  // the smallest total is 6
  EXPECT_FALSE(solve_mckp(p).feasible);
  p.budget = 100;
  // Exactly one choice per group: picking both choices of a is impossible.
  p.constraints = {{{{0, 0, 1.0}, {0, 1, 1.0}}, 2, kInf, "both"}};
  EXPECT_FALSE(solve_mckp(p).feasible);
  EXPECT_FALSE(solve_mckp_brute_force(p).feasible);
  // Contradicting rows.
  p.constraints = {{{{0, 1, 1.0}}, 1, kInf, "a big"}, {{{0, 1, 1.0}, {1, 0, 1.0}}, -kInf, 0, "a small"}};
  EXPECT_FALSE(solve_mckp(p).feasible);
  // lower > upper.
  p.constraints = {{{{1, 1, 1.0}}, 1, 0.5, "empty range"}};
  const MckpSolution s = solve_mckp(p);
  EXPECT_FALSE(s.feasible);
  EXPECT_TRUE(s.choice.empty());
  // A row infeasible only in combination with the budget: b's bits ≥ a's bits with budget for (4, 3) only.
  Instance in;
  in.params = {1, 1};
  in.bits = {{4, 8}, {2, 3}};
  in.p.groups = p.groups;
  in.p.budget = 7;
  in.p.constraints = {at_least_average(in, 1, {0})};
  EXPECT_FALSE(solve_mckp(in.p).feasible);
  EXPECT_FALSE(solve_mckp_brute_force(in.p).feasible);
}

// Lower convex hull of a group's (size, cost) points, for the LP-relaxation bound.
std::vector<MckpChoice> hull(std::vector<MckpChoice> ch) {
  std::sort(ch.begin(), ch.end(), [](auto& a, auto& b) { return a.size != b.size ? a.size < b.size : a.cost < b.cost; });
  std::vector<MckpChoice> h;
  for (const auto& c : ch) {
    if (!h.empty() && c.cost >= h.back().cost) continue;  // not cheaper than a smaller choice
    while (h.size() >= 2) {
      const auto& a = h[h.size() - 2];
      const auto& b = h.back();
      if ((b.cost - a.cost) * (c.size - a.size) >= (c.cost - a.cost) * (b.size - a.size)) h.pop_back();
      else break;
    }
    h.push_back(c);
  }
  return h;
}

// 2000 groups × 4 choices (2/3/4/6 bits), params per group drawn from 16 sizes (or all equal),
// at 3.5 bits per weight on average.
MckpProblem large_instance(int groups, int shapes, uint64_t seed, std::vector<double>* params = nullptr) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  MckpProblem p;
  const double kB[] = {2, 3, 4, 6};
  double params_total = 0;
  for (int g = 0; g < groups; ++g) {
    MckpGroup grp;
    grp.name = str("expert ", g);
    const double n = 4096.0 * (1 + rng() % shapes), w = u(rng) * u(rng);
    params_total += n;
    if (params) params->push_back(n);
    for (double b : kB) grp.choices.push_back({n * b, w * std::exp2(-b) * u(rng)});
    p.groups.push_back(grp);
  }
  p.budget = 3.5 * params_total;
  return p;
}

// Dyer/Zemel greedy on the groups' convex hulls: its fractional end is the LP-relaxation optimum
// (a lower bound on the integer optimum); dropping the fractional step gives a feasible integer
// solution (an upper bound).
void lp_bound_and_greedy(const MckpProblem& p, double& lp, double& greedy) {
  struct Step { double ds, dc; };
  std::vector<Step> steps;
  double size = 0, cost = 0;
  for (const auto& g : p.groups) {
    const auto h = hull(g.choices);
    size += h[0].size;
    cost += h[0].cost;
    for (size_t i = 1; i < h.size(); ++i) steps.push_back({h[i].size - h[i - 1].size, h[i].cost - h[i - 1].cost});
  }
  std::sort(steps.begin(), steps.end(), [](auto& a, auto& b) { return a.dc / a.ds < b.dc / b.ds; });
  lp = greedy = cost;
  for (const auto& st : steps) {
    if (size + st.ds <= p.budget) {
      size += st.ds;
      cost += st.dc;
      lp = greedy = cost;
    } else {
      lp = cost + st.dc * (p.budget - size) / st.ds;
      break;
    }
  }
}

TEST(Mckp, LargeInstanceSolvesFastWithinLpBound) {
  for (int shapes : {16, 1}) {
    const MckpProblem p = large_instance(2000, shapes, 7);
    const MckpSolution s = solve_mckp(p);
    ASSERT_TRUE(s.feasible);
    EXPECT_TRUE(feasible_here(p, s.choice));
    double lp, greedy;
    lp_bound_and_greedy(p, lp, greedy);
    std::printf("mckp 2000x4 (%d shapes): %s %.3f s, cost %.10g (LP bound %.10g, greedy %.10g), budget used %.6f\n",
                shapes, s.solver.c_str(), s.seconds, s.cost, lp, greedy, s.size / p.budget);
    EXPECT_GE(s.cost, lp - 1e-9 * lp);
    EXPECT_LE(s.cost, greedy + 1e-9 * greedy);
    EXPECT_LT(s.seconds, 30.0);  // generous: only catches a blow-up, not a slowdown
  }
  // 20000 groups.
  const MckpProblem big = large_instance(20000, 16, 8);
  const MckpSolution sb = solve_mckp(big);
  ASSERT_TRUE(sb.feasible);
  EXPECT_TRUE(feasible_here(big, sb.choice));
  std::printf("mckp 20000x4: %s %.3f s\n", sb.solver.c_str(), sb.seconds);
}

// The two exact methods agree beyond brute force's reach: GLPK where its branch-and-cut is quick
// (300 groups of 16 shapes; 2000 groups of one shape).
TEST(Mckp, GlpkAndDpAgreeOnLargerInstances) {
  for (auto [groups, shapes] : {std::pair{300, 16}, std::pair{2000, 1}}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      const MckpProblem p = large_instance(groups, shapes, seed);
      const MckpSolution a = solve_mckp(p, MckpMethod::Dp);
      const MckpSolution b = solve_mckp(p, MckpMethod::Glpk);
      ASSERT_TRUE(a.feasible && b.feasible);
      EXPECT_TRUE(feasible_here(p, a.choice));
      EXPECT_TRUE(feasible_here(p, b.choice));
      EXPECT_NEAR(a.cost, b.cost, 1e-9 * b.cost) << groups << " groups, seed " << seed;
      if (seed == 1)
        std::printf("mckp %dx4 (%d shapes): dp %.4f s, glpk %.3f s\n", groups, shapes, a.seconds, b.seconds);
    }
  }
}

// Rows: 4 "attention" groups (other shapes, 5 choices) that must each get at least the 60 routed
// experts' size-weighted average bits, with a budget tight enough for the rows to bind. Binding rows
// go to GLPK, whose branch-and-cut grows fast with size here (measured: 158 groups + 8 rows 91 s,
// 520 groups + 20 rows 176 s), so this instance stays small.
TEST(Mckp, LargeInstanceWithAverageRows) {
  Instance in;
  in.p = large_instance(60, 1, 11, &in.params);
  for (size_t g = 0; g < in.params.size(); ++g) in.bits.push_back({2, 3, 4, 6});
  std::mt19937_64 rng(12);
  std::uniform_real_distribution<double> u(0.5, 1.5);
  const double kA[] = {2, 3, 4, 5, 6};
  for (int a = 0; a < 4; ++a) {
    const double n = 4096.0 * (4 + rng() % 8);
    MckpGroup grp;
    grp.name = str("attention ", a);
    for (double b : kA) grp.choices.push_back({n * b, 0.02 * std::exp2(-b) * u(rng)});  // cheap to squeeze
    in.p.groups.push_back(grp);
    in.params.push_back(n);
    in.bits.push_back({2, 3, 4, 5, 6});
    in.p.budget += 3.5 * n;
  }
  std::vector<size_t> R;
  for (size_t r = 0; r < 60; ++r) R.push_back(r);
  MckpProblem free_rows = in.p;
  for (size_t i = 60; i < 64; ++i) in.p.constraints.push_back(at_least_average(in, i, R));
  const MckpSolution s0 = solve_mckp(free_rows);
  const MckpSolution s = solve_mckp(in.p);
  ASSERT_TRUE(s0.feasible && s.feasible);
  std::string why;
  EXPECT_TRUE(feasible_here(in.p, s.choice, &why)) << why;
  EXPECT_FALSE(feasible_here(in.p, s0.choice));  // the rows bind
  EXPECT_GT(s.cost, s0.cost);
  std::printf("mckp 64 groups + 4 average rows: %s %.3f s, cost %.10g (%.10g without rows)\n", s.solver.c_str(),
              s.seconds, s.cost, s0.cost);
}

void expect_throws_naming(const MckpProblem& p, const std::string& name) {
  for (int which = 0; which < 2; ++which) {
    try {
      if (which == 0) solve_mckp(p);
      else solve_mckp_brute_force(p);
      ADD_FAILURE() << "no throw, expected an error naming " << name;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
}

TEST(Mckp, InvalidInputThrows) {
  MckpProblem base;
  base.groups = {{"alpha", {{1, 1}, {2, 0}}}, {"beta", {{1, 1}, {3, 0}}}};
  base.budget = 4;
  base.constraints = {{{{0, 1, 1.0}}, 0, 1, "row0"}};
  ASSERT_NO_THROW(solve_mckp(base));

  MckpProblem p = base;
  p.groups[1].choices.clear();
  expect_throws_naming(p, "beta");
  p = base;
  p.groups[0].choices[1].size = std::nan("");
  expect_throws_naming(p, "alpha");
  p = base;
  p.groups[1].choices[0].size = -1;
  expect_throws_naming(p, "beta");
  p = base;
  p.groups[1].choices[0].size = kInf;
  expect_throws_naming(p, "beta");
  p = base;
  p.groups[0].choices[0].cost = std::nan("");
  expect_throws_naming(p, "alpha");
  p = base;
  p.budget = std::nan("");
  expect_throws_naming(p, "budget");
  p = base;
  p.constraints[0].terms.emplace_back(2, 0, 1.0);
  expect_throws_naming(p, "row0");
  p = base;
  p.constraints[0].terms.emplace_back(1, 2, 1.0);
  expect_throws_naming(p, "row0");
  p = base;
  p.constraints[0].terms.emplace_back(1, 0, std::nan(""));
  expect_throws_naming(p, "row0");
  p = base;
  p.constraints[0].upper = std::nan("");
  expect_throws_naming(p, "row0");
  p = base;
  p.constraints[0].lower = kInf;
  expect_throws_naming(p, "row0");

  // Too many combinations for the brute force.
  MckpProblem big;
  for (int g = 0; g < 40; ++g) big.groups.push_back({"g", {{1, 1}, {2, 0}}});
  big.budget = 60;
  EXPECT_THROW(solve_mckp_brute_force(big), Error);
  EXPECT_TRUE(solve_mckp(big).feasible);
  EXPECT_THROW(mckp_violation(base, {0}), Error);
  EXPECT_THROW(mckp_violation(base, {0, 2}), Error);
}

TEST(Mckp, SilentAndThreadSafe) {
  const Instance in = random_instance(42);
  const MckpSolution ref = solve_mckp_brute_force(in.p);
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const MckpSolution s = solve_mckp(in.p);
  MckpProblem bad = in.p;
  bad.budget = -1;
  const MckpSolution s_bad = solve_mckp(bad);
  const std::string out = ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "");
  EXPECT_EQ(err, "");
  EXPECT_EQ(s.feasible, ref.feasible);
  EXPECT_FALSE(s_bad.feasible);

  // Concurrent solves of different instances agree with their brute force.
  std::vector<double> costs(64, -1), want(64, -2);
  std::vector<int> feas(64), want_feas(64);
#pragma omp parallel for num_threads(4) schedule(dynamic)
  for (int i = 0; i < 64; ++i) {
    const Instance x = random_instance(5000 + i);
    const MckpSolution a = solve_mckp(x.p);
    const MckpSolution b = solve_mckp_brute_force(x.p);
    feas[i] = a.feasible;
    want_feas[i] = b.feasible;
    costs[i] = a.feasible ? a.cost : 0;
    want[i] = b.feasible ? b.cost : 0;
  }
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(feas[i], want_feas[i]) << i;
    EXPECT_NEAR(costs[i], want[i], 1e-9 * std::max(1.0, std::fabs(want[i]))) << i;
  }
}

}  // namespace
}  // namespace moetool
