// compress/mckp_internal.h — what the multiple-choice knapsack files share (not a public API): the
// re-check of a choice in the caller's units (tolerance, activities, totals, labels) and the GLPK
// method (compress/mckp_glpk.cc) that compress/mckp.cc falls back to.
#pragma once

#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "compress/mckp.h"

namespace moetool::mckp_detail {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kRelTol = 1e-9;  // of the final re-check in the caller's units

std::string group_label(const MckpProblem& p, size_t g);
// lo − tol ≤ act ≤ hi + tol with tol = kRelTol · max(|bound|, mass), mass = Σ|terms| at the choice.
bool within(double act, double mass, double lo, double hi);
// Activity and Σ|terms| of constraint L at `choice`.
void activity(const MckpLinear& L, const std::vector<size_t>& choice, double& act, double& mass);
// −1: feasible; 0: the budget; k+1: constraint k. *act_out (may be null) gets the violated activity.
long first_violation(const MckpProblem& p, const std::vector<size_t>& choice, double size, double* act_out);
// Total size and cost of `choice`.
void totals(const MckpProblem& p, const std::vector<size_t>& choice, double& size, double& cost);

// GLPK on the whole program (see mckp.h). Returns whether a feasible choice exists; `choice` gets
// the optimum.
bool solve_glpk(const MckpProblem& p, std::vector<size_t>& choice);
// "glpk <version> branch-and-cut".
std::string glpk_solver_name();

}  // namespace moetool::mckp_detail
