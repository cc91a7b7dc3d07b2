// compress/mckp.cc — the multiple-choice knapsack solvers of mckp.h: GLPK branch-and-cut on the
// shifted and rescaled 0-1 program, re-checked in the caller's units, and exhaustive enumeration.
#include "compress/mckp.h"

#include <glpk.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csetjmp>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "core/error.h"

namespace moetool {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kRelTol = 1e-9;       // of the final re-check in the caller's units
constexpr double kGlpkTolObj = 1e-10;  // GLPK prunes a node whose bound is within this of the incumbent
constexpr int kMaxNoGoodRounds = 64;

std::string group_label(const MckpProblem& p, size_t g) {
  return p.groups[g].name.empty() ? str("group ", g) : str("group ", g, " (", p.groups[g].name, ")");
}
std::string constraint_label(const MckpProblem& p, size_t k) {
  return p.constraints[k].name.empty() ? str("constraint ", k)
                                       : str("constraint ", k, " (", p.constraints[k].name, ")");
}

// lo − tol ≤ act ≤ hi + tol with tol = kRelTol · max(|bound|, mass), mass = Σ|terms| at the choice.
bool within(double act, double mass, double lo, double hi) {
  if (lo > -kInf && act < lo - kRelTol * std::max(std::fabs(lo), mass)) return false;
  if (hi < kInf && act > hi + kRelTol * std::max(std::fabs(hi), mass)) return false;
  return true;
}

// Activity and Σ|terms| of constraint k at `choice`.
void activity(const MckpLinear& L, const std::vector<size_t>& choice, double& act, double& mass) {
  act = 0;
  mass = 0;
  for (const auto& [g, c, a] : L.terms)
    if (choice[g] == c) {
      act += a;
      mass += std::fabs(a);
    }
}

// −1: feasible; 0: the budget; k+1: constraint k.
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

// ---- GLPK ----------------------------------------------------------------------------------------

// One glp_intopt run on a prebuilt program (1-based GLPK arrays, index 0 unused). GLPK's abnormal
// termination (out of memory, internal assertion) is intercepted by an error hook that longjmps back
// into run_glpk; so the frame holding the setjmp and the GLPK frames it unwinds own no C++ objects.
struct GlpkJob {
  int rows = 0, cols = 0, nnz = 0;
  const int* row_type = nullptr;   // [rows + 1] GLP_FX/GLP_UP/GLP_LO/GLP_DB
  const double* row_lo = nullptr;  // [rows + 1]
  const double* row_hi = nullptr;  // [rows + 1]
  const double* obj = nullptr;     // [cols + 1]
  const int* ia = nullptr;         // [nnz + 1] row of each matrix element
  const int* ja = nullptr;         // [nnz + 1] column
  const double* ar = nullptr;      // [nnz + 1] value
  double* x = nullptr;             // [cols + 1] out: column values of the MIP solution
  int intopt_ret = 0;              // out: glp_intopt's return code
  int mip_status = 0;              // out: glp_mip_status (when intopt_ret == 0)
  std::jmp_buf jb;
};

void glpk_error_hook(void* info) { std::longjmp(static_cast<GlpkJob*>(info)->jb, 1); }

// 0: ran (see intopt_ret / mip_status); 1: GLPK failed abnormally (its environment was freed).
int run_glpk(GlpkJob* job) {
  // Creates this thread's GLPK environment only if it does not exist yet, and then frees it again
  // afterwards, so that no GLPK state is left behind (an environment someone else created is kept).
  const int init = glp_init_env();
  if (init != 0 && init != 1) return 2;
  const int fresh = init == 0;
  if (setjmp(job->jb)) {
    glp_free_env();  // required after abnormal termination; frees every GLPK object of this thread
    return 1;
  }
  glp_error_hook(glpk_error_hook, job);
  const int old_term = glp_term_out(GLP_OFF);
  glp_prob* lp = glp_create_prob();
  glp_set_obj_dir(lp, GLP_MIN);
  glp_add_rows(lp, job->rows);
  for (int i = 1; i <= job->rows; ++i) glp_set_row_bnds(lp, i, job->row_type[i], job->row_lo[i], job->row_hi[i]);
  glp_add_cols(lp, job->cols);
  for (int j = 1; j <= job->cols; ++j) {
    glp_set_col_kind(lp, j, GLP_BV);  // also sets the bounds [0, 1]
    glp_set_obj_coef(lp, j, job->obj[j]);
  }
  glp_load_matrix(lp, job->nnz, job->ia, job->ja, job->ar);
  glp_iocp parm;
  glp_init_iocp(&parm);
  parm.msg_lev = GLP_MSG_OFF;
  parm.presolve = GLP_ON;
  parm.mip_gap = 0.0;
  parm.tol_obj = kGlpkTolObj;
  job->intopt_ret = glp_intopt(lp, &parm);
  if (job->intopt_ret == 0) {
    job->mip_status = glp_mip_status(lp);
    for (int j = 1; j <= job->cols; ++j) job->x[j] = glp_mip_col_val(lp, j);
  }
  glp_delete_prob(lp);
  glp_term_out(old_term);
  glp_error_hook(nullptr, nullptr);
  if (fresh) glp_free_env();
  return 0;
}

std::mutex& glpk_mutex() {
  static std::mutex m;  // old GLPK builds keep one process-wide environment
  return m;
}

const char* glpk_ret_name(int r) {
  switch (r) {
    case GLP_EBOUND: return "invalid bounds";
    case GLP_EROOT: return "no optimal root LP basis";
    case GLP_ENODFS: return "LP relaxation unbounded";
    case GLP_EFAIL: return "solver failure";
    case GLP_EMIPGAP: return "gap tolerance reached";
    case GLP_ETMLIM: return "time limit";
    case GLP_ESTOP: return "stopped";
    default: return "unexpected return code";
  }
}

// The shifted, rescaled program (see mckp.h) as GLPK rows, without the no-good cuts.
struct Program {
  std::vector<int> col0;  // [G + 1] first column (1-based) of each group
  std::vector<int> row_type;
  std::vector<double> row_lo, row_hi, obj;
  std::vector<int> ia, ja;
  std::vector<double> ar;
  bool infeasible = false;  // a row no choice can change already fails
  int add_row(int type, double lo, double hi) {
    row_type.push_back(type);
    row_lo.push_back(lo);
    row_hi.push_back(hi);
    return static_cast<int>(row_type.size()) - 1;
  }
  void add(int row, int col, double v) {
    ia.push_back(row);
    ja.push_back(col);
    ar.push_back(v);
  }
};

// Row bounds [lo, hi] for an activity known to lie in [0, amax]: bounds that cannot bind are dropped.
// Returns false when the row never binds.
bool set_bounds(Program& P, int row, double lo, double hi, double amax) {
  const bool has_lo = lo > 0, has_hi = hi < amax;
  int type = GLP_FR;
  if (has_lo && has_hi) type = lo < hi ? GLP_DB : GLP_FX;
  else if (has_lo) type = GLP_LO;
  else if (has_hi) type = GLP_UP;
  if (type == GLP_FX) lo = hi = 0.5 * (lo + hi);
  P.row_type[row] = type;
  P.row_lo[row] = has_lo ? lo : 0;
  P.row_hi[row] = has_hi ? hi : 0;
  return type != GLP_FR;
}

Program build_program(const MckpProblem& p) {
  const size_t G = p.groups.size();
  Program P;
  P.col0.resize(G + 1);
  int ncols = 0;
  for (size_t g = 0; g < G; ++g) {
    P.col0[g] = ncols + 1;
    ncols += static_cast<int>(p.groups[g].choices.size());
  }
  P.col0[G] = ncols + 1;
  P.obj.assign(ncols + 1, 0.0);
  P.add_row(0, 0, 0);  // GLPK's unused row 0
  P.ia.push_back(0);
  P.ja.push_back(0);
  P.ar.push_back(0);

  // Objective: e_gc − min_c e_gc, over the largest such value.
  double cmax = 0;
  std::vector<double> cmin(G);
  for (size_t g = 0; g < G; ++g) {
    cmin[g] = kInf;
    for (const auto& ch : p.groups[g].choices) cmin[g] = std::min(cmin[g], ch.cost);
    for (const auto& ch : p.groups[g].choices) cmax = std::max(cmax, ch.cost - cmin[g]);
  }
  const double cscale = cmax > 0 ? 1.0 / cmax : 1.0;
  for (size_t g = 0; g < G; ++g)
    for (size_t c = 0; c < p.groups[g].choices.size(); ++c)
      P.obj[P.col0[g] + c] = (p.groups[g].choices[c].cost - cmin[g]) * cscale;

  // Σ_c x_gc = 1.
  for (size_t g = 0; g < G; ++g) {
    const int r = P.add_row(GLP_FX, 1, 1);
    for (int j = P.col0[g]; j < P.col0[g + 1]; ++j) P.add(r, j, 1.0);
  }

  // Budget: Σ (s_gc − min_c s_gc) x_gc ≤ B − Σ_g min_c s_gc, over the largest shifted size.
  {
    double smin_total = 0, smax_total = 0, span = 0;
    std::vector<double> smin(G);
    for (size_t g = 0; g < G; ++g) {
      smin[g] = kInf;
      double smax = 0;
      for (const auto& ch : p.groups[g].choices) smin[g] = std::min(smin[g], ch.size), smax = std::max(smax, ch.size);
      smin_total += smin[g];
      smax_total += smax;
      span = std::max(span, smax - smin[g]);
    }
    if (!within(smin_total, smin_total, -kInf, p.budget)) {
      P.infeasible = true;  // even the smallest choices exceed the budget
      return P;
    }
    if (span > 0 && !(smax_total <= p.budget)) {
      const double inv = 1.0 / span;
      double amax = 0;
      for (size_t g = 0; g < G; ++g) {
        double m = 0;
        for (const auto& ch : p.groups[g].choices) m = std::max(m, (ch.size - smin[g]) * inv);
        amax += m;
      }
      const int r = P.add_row(GLP_UP, 0, 0);
      // The smallest choices fit (within the tolerance), so a budget a rounding below them is 0.
      if (set_bounds(P, r, -kInf, std::max(0.0, (p.budget - smin_total) * inv), amax)) {
        for (size_t g = 0; g < G; ++g)
          for (size_t c = 0; c < p.groups[g].choices.size(); ++c) {
            const double v = (p.groups[g].choices[c].size - smin[g]) * inv;
            if (v != 0) P.add(r, P.col0[g] + static_cast<int>(c), v);
          }
      } else {
        P.row_type.pop_back(), P.row_lo.pop_back(), P.row_hi.pop_back();
      }
    }
  }

  // Extra rows: merged coefficients per (group, choice); each group's block is shifted by its
  // minimum (0 for choices the row does not list), then the row is divided by its largest coefficient.
  for (size_t k = 0; k < p.constraints.size(); ++k) {
    const MckpLinear& L = p.constraints[k];
    if (L.lower > L.upper) {
      if (!within(L.lower, 0, -kInf, L.upper)) {
        P.infeasible = true;
        return P;
      }
    }
    std::vector<std::tuple<size_t, size_t, double>> t = L.terms;
    std::sort(t.begin(), t.end(), [](const auto& a, const auto& b) {
      return std::get<0>(a) != std::get<0>(b) ? std::get<0>(a) < std::get<0>(b) : std::get<1>(a) < std::get<1>(b);
    });
    struct Block { size_t g; std::vector<double> a; };
    std::vector<Block> blocks;
    for (const auto& [g, c, a] : t) {
      if (blocks.empty() || blocks.back().g != g) blocks.push_back({g, std::vector<double>(p.groups[g].choices.size(), 0.0)});
      blocks.back().a[c] += a;
    }
    double shift = 0, amax_coef = 0;
    for (auto& b : blocks) {
      const double m = *std::min_element(b.a.begin(), b.a.end());
      shift += m;
      for (double& v : b.a) v -= m, amax_coef = std::max(amax_coef, std::fabs(v));
    }
    if (amax_coef == 0) {  // the activity is the same for every choice: decide it here
      double act, mass;
      activity(L, std::vector<size_t>(G, 0), act, mass);
      if (!within(act, mass, L.lower, L.upper)) {
        P.infeasible = true;
        return P;
      }
      continue;
    }
    const double inv = 1.0 / amax_coef;
    double amax = 0;
    for (auto& b : blocks) {
      double m = 0;
      for (double& v : b.a) v *= inv, m = std::max(m, v);
      amax += m;
    }
    const int r = P.add_row(GLP_FR, 0, 0);
    if (!set_bounds(P, r, (L.lower - shift) * inv, (L.upper - shift) * inv, amax)) {
      P.row_type.pop_back(), P.row_lo.pop_back(), P.row_hi.pop_back();
      continue;
    }
    for (const auto& b : blocks)
      for (size_t c = 0; c < b.a.size(); ++c)
        if (b.a[c] != 0) P.add(r, P.col0[b.g] + static_cast<int>(c), b.a[c]);
  }
  return P;
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

// GLPK on the whole program. Returns whether a feasible choice exists; `choice` gets the optimum.
bool solve_glpk(const MckpProblem& p, std::vector<size_t>& choice) {
  const size_t G = p.groups.size();
  Program P = build_program(p);
  if (P.infeasible) return false;
  const int ncols = P.col0[G] - 1;
  std::vector<double> x(ncols + 1);
  std::vector<std::vector<size_t>> cuts;  // no-good combinations (see mckp.h)
  for (int round = 0;; ++round) {
    check(round < kMaxNoGoodRounds, "mckp: GLPK kept returning combinations that violate the budget or a "
          "constraint beyond the relative tolerance ", kRelTol, " (", round, " rounds); rescale the problem");
    std::vector<int> row_type = P.row_type, ia = P.ia, ja = P.ja;
    std::vector<double> row_lo = P.row_lo, row_hi = P.row_hi, ar = P.ar;
    for (const auto& cut : cuts) {
      row_type.push_back(GLP_UP);
      row_lo.push_back(0);
      row_hi.push_back(static_cast<double>(G) - 1);
      for (size_t g = 0; g < G; ++g) {
        ia.push_back(static_cast<int>(row_type.size()) - 1);
        ja.push_back(P.col0[g] + static_cast<int>(cut[g]));
        ar.push_back(1.0);
      }
    }
    GlpkJob job;
    job.rows = static_cast<int>(row_type.size()) - 1;
    job.cols = ncols;
    job.nnz = static_cast<int>(ia.size()) - 1;
    job.row_type = row_type.data();
    job.row_lo = row_lo.data();
    job.row_hi = row_hi.data();
    job.obj = P.obj.data();
    job.ia = ia.data();
    job.ja = ja.data();
    job.ar = ar.data();
    job.x = x.data();
    int rc;
    {
      std::lock_guard<std::mutex> lock(glpk_mutex());
      rc = run_glpk(&job);
    }
    check(rc != 2, "mckp: GLPK could not initialise its environment");
    check(rc == 0, "mckp: GLPK terminated abnormally (", G, " groups, ", ncols, " choices)");
    if (job.intopt_ret == GLP_ENOPFS) return false;
    check(job.intopt_ret == 0, "mckp: glp_intopt failed: ", glpk_ret_name(job.intopt_ret), " (code ",
          job.intopt_ret, ")");
    if (job.mip_status == GLP_NOFEAS) return false;
    check(job.mip_status == GLP_OPT, "mckp: glp_intopt ended without an optimal solution (status ",
          job.mip_status, ")");
    choice.assign(G, 0);
    for (size_t g = 0; g < G; ++g) {
      int best = P.col0[g];
      for (int j = P.col0[g]; j < P.col0[g + 1]; ++j)
        if (x[j] > x[best]) best = j;
      check(x[best] > 0.5, "mckp: GLPK's solution picks no choice of ", group_label(p, g));
      choice[g] = static_cast<size_t>(best - P.col0[g]);
    }
    double size, cost;
    totals(p, choice, size, cost);
    if (first_violation(p, choice, size, nullptr) < 0) return true;
    cuts.push_back(choice);
  }
}

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
  sol.solver = str("glpk ", glp_version(), " branch-and-cut");
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
