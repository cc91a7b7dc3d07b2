// compress/mckp_glpk.cc — the GLPK method of the multiple-choice knapsack solver (mckp.h): the 0-1
// program after the exact shift and rescaling, glp_intopt under a mutex with GLPK's abnormal exits
// caught, and no-good cuts for optima that fail the re-check in the caller's units.
#include <glpk.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "compress/mckp_internal.h"
#include "core/error.h"

namespace moetool::mckp_detail {
namespace {

constexpr double kGlpkTolObj = 1e-10;  // GLPK prunes a node whose bound is within this of the incumbent
constexpr int kMaxNoGoodRounds = 64;

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

std::string glpk_solver_name() { return str("glpk ", glp_version(), " branch-and-cut"); }

}  // namespace moetool::mckp_detail
