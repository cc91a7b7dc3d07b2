// compress/mckp.h — an exact multiple-choice knapsack solver for mixed-precision bit allocation
// (a Lagrangian Pareto DP, and GLPK branch-and-cut where extra rows bind), and a brute-force reference.
//
// Formulation: groups g = 1..G each hold choices c with a size s_gc (e.g. bits) and a cost e_gc (e.g.
// a measured error); binaries x_gc ∈ {0,1} pick exactly one choice per group (Σ_c x_gc = 1) so that
// the total size fits the budget (Σ_gc s_gc x_gc ≤ B), every extra linear row holds
// (L_k ≤ Σ_(g,c)∈terms_k a_kgc x_gc ≤ U_k — e.g. "group i's bits ≥ the size-weighted average bits of
// the groups in R": Σ_c b_c x_ic − Σ_r∈R Σ_c (n_r/N_R) b_c x_rc ≥ 0), and Σ_gc e_gc x_gc is minimal.
// Two exact methods. (1) The budget-only problem: Lagrangian relaxation of the budget (λ ≥ 0 by
// bisection; L(λ) = Σ_g min_c (e_gc + λ s_gc) − λB is a lower bound), a greedy incumbent, reduced-cost
// fixing (a choice whose e + λs exceeds its group's minimum by more than incumbent − L(λ) is in no
// optimal solution), then a Pareto DP over the groups left: non-dominated (size, cost) states, pruned
// by the same bound; milliseconds for thousands of groups. If its optimum satisfies every extra row it
// is optimal for the full problem. (2) Otherwise GLPK's glp_intopt (MIP presolve on, relative gap 0,
// objective tolerance 1e-10, terminal output off) on the 0-1 program after an exact rewrite for
// numerical stability: subtracting a per-group constant (the group's minimum) from its sizes, costs or
// row coefficients only moves the budget, bounds or objective by a known constant, since each group
// picks exactly one choice; sizes and the budget are then divided by the largest remaining size, costs
// by the largest remaining cost, each extra row by its largest coefficient. GLPK's branch-and-cut is
// exact but exponential on hard instances (measured: 700 groups of random sizes without rows ≈ 5 s,
// 800 over a minute; binding average rows over 158 equal-sized groups 91 s). Every returned solution
// is re-checked in double, in the caller's units, against the budget and every row with a relative
// tolerance of 1e-9 (of the larger of |bound| and Σ|terms|); GLPK's own feasibility tolerance is
// looser (≈1e-7), so a combination that passes GLPK but fails the check is excluded by a no-good cut
// (Σ_g x_g,c_g ≤ G − 1) and the problem re-solved. The brute force enumerates every combination with
// the same check. Library code: nothing is printed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

namespace moetool {

struct MckpChoice { double size = 0; double cost = 0; };        // e.g. size in bits, cost = measured error
struct MckpGroup { std::string name; std::vector<MckpChoice> choices; };   // choose exactly one
// Σ coef · x[group][choice] ∈ [lower, upper] over the listed terms (x binary). A (group, choice) listed
// twice adds its coefficients.
struct MckpLinear { std::vector<std::tuple<size_t, size_t, double>> terms;
                    double lower = -std::numeric_limits<double>::infinity();
                    double upper = std::numeric_limits<double>::infinity(); std::string name; };
struct MckpProblem { std::vector<MckpGroup> groups; double budget = 0;   // Σ size of the chosen ≤ budget
                     std::vector<MckpLinear> constraints; };
struct MckpSolution { bool feasible = false; std::vector<size_t> choice; double cost = 0, size = 0;
                      std::string solver; double seconds = 0; };

// Exact minimum-cost choice (MckpMethod::Auto, see the top comment; GLPK branch-and-cut with mip gap 0, presolve on; terminal output silenced —
// glp_term_out(GLP_OFF)). Sizes and costs are rescaled internally for numerical stability; the returned solution
// is re-checked in double against the budget and every constraint (relative tolerance 1e-9); infeasible problems
// return feasible=false (never throw for infeasibility); invalid input (a group without choices, NaN, negative size,
// term index out of range) throws moetool::Error naming the group/constraint.
// A budget of +inf means no budget. GLPK calls are serialised by a mutex; an internal GLPK error (out of
// memory) is turned into moetool::Error (and resets GLPK's environment of the calling thread).
MckpSolution solve_mckp(const MckpProblem& p);

// Which exact method solve_mckp uses. Auto: the Lagrangian Pareto DP (see the top comment) when the
// problem has no extra rows or when the DP's budget-only optimum satisfies them all (it is then
// optimal), otherwise GLPK; Glpk: always GLPK; Dp: the DP only (throws for problems with rows).
enum class MckpMethod { Auto, Glpk, Dp };
MckpSolution solve_mckp(const MckpProblem& p, MckpMethod method);

// Exhaustive enumeration, for tests and tiny problems (throws if the product of choice counts exceeds max_combos).
// Ties in cost keep the first combination in lexicographic order of choice indices.
MckpSolution solve_mckp_brute_force(const MckpProblem& p, uint64_t max_combos = 5'000'000);

// Validates p as solve_mckp does (throws moetool::Error naming the group or constraint).
void validate_mckp(const MckpProblem& p);

// Empty when `choice` (one index per group) satisfies the budget and every constraint within the relative
// tolerance 1e-9 (of the larger of |bound| and Σ|terms|); otherwise names the first violated one with its
// activity and bound. Throws if `choice` has the wrong length or an index out of range.
std::string mckp_violation(const MckpProblem& p, const std::vector<size_t>& choice);

}  // namespace moetool
