// compress/gptq.cc — GPTQ with lazy batch updates, act-order and static groups (see gptq.h).
#include "compress/gptq.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "compress/gptq_internal.h"
#include "core/error.h"


namespace moetool {
namespace {

std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }

// The problem in processing order: W with dead columns zeroed, the column order, the upper
// Cholesky factor U of (H_perm + λI)⁻¹ and the group layout.
struct Plan {
  int64_t rows = 0, n = 0;         // W [rows, n]
  int64_t ngroups = 1, gs = 0;     // groups per row and their size (n when ungrouped)
  bool grouped = false, static_groups = false;
  int32_t maxq = 0;
  std::vector<float> Wd;           // [rows, n] W with dead columns zeroed (original column order)
  std::vector<int64_t> perm;       // [n] processing order: k-th processed column is perm[k]
  std::vector<float> U;            // [n, n] upper triangular, float32 for the updates
  std::vector<double> Ud;          // [n] diagonal of U in double
  double damp = 0, lambda = 0;     // the damping finally used: fraction and absolute λ
  int64_t ndead = 0;               // columns with H_jj = 0
};

void check_inputs(const float* W, int64_t rows, int64_t cols, const double* H, const GPTQOptions& o,
                  std::string_view what) {
  check_int_spec(o.spec, rows, cols, what);
  if (!(o.damp >= 0) || !std::isfinite(o.damp)) fail(prefix(what), "GPTQ damping must be ≥ 0, got ", o.damp);
  if (o.block_size < 1) fail(prefix(what), "GPTQ block size must be ≥ 1, got ", o.block_size);
  if (cols > 1'000'000) fail(prefix(what), "GPTQ input dimension ", cols, " is too large for a dense Hessian");
  gptq_detail::check_finite(W, rows, cols, H, what);
}

// Dead columns, processing order and U (raising λ ×10 while a factorization fails).
Plan make_plan(const float* W, int64_t rows, int64_t cols, const double* H, const GPTQOptions& o,
               std::string_view what) {
  Plan P;
  const int64_t n = cols;
  P.rows = rows, P.n = n;
  P.ngroups = int_quant_ngroups(o.spec, cols);
  P.grouped = P.ngroups > 1;
  P.gs = P.grouped ? o.spec.group_size : cols;
  P.static_groups = P.grouped && o.static_groups;
  P.maxq = (1 << o.spec.bits) - 1;

  // Dead columns: H_jj = 0 → H_jj = 1, W[:, j] = 0.
  std::vector<double> diag;
  std::vector<char> dead;
  P.ndead = gptq_detail::dead_columns(W, rows, H, n, diag, dead, P.Wd, what);

  // Processing order: decreasing diag(H) with act-order (stable, so ties keep column order).
  P.perm.resize(static_cast<size_t>(n));
  std::iota(P.perm.begin(), P.perm.end(), int64_t{0});
  if (o.act_order)
    std::stable_sort(P.perm.begin(), P.perm.end(), [&](int64_t a, int64_t b) { return diag[a] > diag[b]; });

  // U: upper Cholesky factor of (H_perm + λI)⁻¹, raising λ ×10 while a factorization fails.
  gptq_detail::Factor F = gptq_detail::factor_hessian(H, n, diag, P.perm, o.damp, what);
  P.U = std::move(F.U);
  P.Ud = std::move(F.Ud);
  P.damp = F.damp;
  P.lambda = F.lambda;
  return P;
}

// Group parameters known up front ([ngroups, rows]): one group per row (from W), or static groups
// (from the unpermuted groups of W). Empty otherwise.
std::vector<IntGroupParams> fixed_group_params(const Plan& P, const IntQuantSpec& spec, std::string_view what) {
  std::vector<IntGroupParams> fixed;
  if (P.grouped && !P.static_groups) return fixed;
  fixed.resize(static_cast<size_t>(P.ngroups * P.rows));
  std::string err;
#pragma omp parallel for schedule(static) if (P.rows * P.n >= 65536)
  for (int64_t r = 0; r < P.rows; ++r) {
    try {
      for (int64_t g = 0; g < P.ngroups; ++g)
        fixed[static_cast<size_t>(g * P.rows + r)] =
            int_minmax_params(P.Wd.data() + r * P.n + g * P.gs, P.gs, spec.bits, spec.sym, what);
    } catch (const std::exception& e) {
#pragma omp critical(moetool_gptq_err)
      if (err.empty()) err = e.what();
    }
  }
  if (!err.empty()) throw Error(err);
  return fixed;
}
// The blocked GPTQ sweep over the columns in processing order: Qp[rows, n] receives the levels in
// that order, e2[rows] Σ e² per row; dynamic groups' parameters go to out.scales / out.zeros.
// Rows are independent once U is known: each thread runs the whole blocked algorithm on chunks of
// rows, the lazy batch updates with Eigen's GEMM (single-threaded inside the parallel region), so
// no OpenMP region alternates with multi-threaded BLAS calls; small layers run serially with plain
// loops. Blocks hold whole groups.
void sweep_columns(const Plan& P, const GPTQOptions& o, const std::vector<IntGroupParams>& fixed, IntQuantized& out,
                   std::vector<uint8_t>& Qp, std::vector<double>& e2, std::string_view what) {
  const int64_t rows = P.rows, n = P.n, gs = P.gs;
  std::vector<float> Wp(static_cast<size_t>(rows * n));  // [rows, n] the working copy in processing order
#pragma omp parallel for schedule(static) if (rows * n >= 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < n; ++k) Wp[static_cast<size_t>(r * n + k)] = P.Wd[static_cast<size_t>(r * n + P.perm[k])];

  const int64_t bs = P.grouped ? (std::max<int64_t>(o.block_size, 1) + gs - 1) / gs * gs : o.block_size;
  const int64_t bmax = std::min(bs, n);
  const int nthreads = omp_get_max_threads();
  const bool small = rows * n * n < (int64_t{1} << 22);
  const bool par = !small && nthreads > 1;
  const int64_t chunk = par ? std::clamp<int64_t>((rows + nthreads - 1) / nthreads, 1, 256) : std::min<int64_t>(rows, 256);
  const int64_t nchunks = (rows + chunk - 1) / chunk;
  std::string err;
#pragma omp parallel if (par)
  {
    std::vector<float> Err(static_cast<size_t>(chunk * bmax));  // [m, B] scaled errors of a block
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      try {
        const int64_t r0 = c * chunk, m = std::min(chunk, rows - r0);
        for (int64_t i1 = 0; i1 < n; i1 += bs) {
          const int64_t i2 = std::min(i1 + bs, n), B = i2 - i1;
          for (int64_t rl = 0; rl < m; ++rl) {
            const int64_t r = r0 + rl;
            float* w = Wp.data() + r * n;
            IntGroupParams p;
            for (int64_t k = i1; k < i2; ++k) {
              if (!P.grouped) {
                p = fixed[static_cast<size_t>(r)];
              } else if (P.static_groups) {
                p = fixed[static_cast<size_t>(P.perm[k] / gs * rows + r)];
              } else if (k % gs == 0) {  // a new group, in processing order, from its updated weights
                p = int_minmax_params(w + k, gs, o.spec.bits, o.spec.sym, what);
                out.scales[static_cast<size_t>(k / gs * rows + r)] = p.scale;
                out.zeros[static_cast<size_t>(k / gs * rows + r)] = p.zero;
              }
              const float x = w[k];
              const int32_t q = int_quantize_value(x, p, P.maxq);
              Qp[static_cast<size_t>(r * n + k)] = static_cast<uint8_t>(q);
              const float e = static_cast<float>((x - p.scale * static_cast<float>(q - p.zero)) / P.Ud[k]);
              Err[static_cast<size_t>(rl * B + (k - i1))] = e;
              e2[static_cast<size_t>(r)] += static_cast<double>(e) * e;
              const float* u = P.U.data() + k * n;
              for (int64_t j = k + 1; j < i2; ++j) w[j] -= e * u[j];
            }
          }
          // Lazy batch update of the columns after the block: W[:, i2:] −= Err · U[i1:i2, i2:].
          gptq_detail::batch_update(Wp.data(), n, r0, m, i1, i2, Err.data(), P.U.data(), small);
        }
      } catch (const std::exception& e) {
#pragma omp critical(moetool_gptq_err)
        if (err.empty()) err = e.what();
      }
    }
  }
  if (!err.empty()) throw Error(err);
}

// Back to the original column order: out.q, out.g_idx, and the up-front group parameters into
// out.scales / out.zeros. Returns ‖Wd − Ŵ‖².
double unpermute(const Plan& P, const std::vector<uint8_t>& Qp, const std::vector<IntGroupParams>& fixed,
                 IntQuantized& out) {
  const int64_t rows = P.rows, n = P.n;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t j = P.perm[k];
    out.g_idx[static_cast<size_t>(j)] = static_cast<int32_t>(!P.grouped ? 0 : P.static_groups ? j / P.gs : k / P.gs);
  }
  for (size_t k = 0; k < fixed.size(); ++k) out.scales[k] = fixed[k].scale, out.zeros[k] = fixed[k].zero;
  double dw2 = 0;
#pragma omp parallel for schedule(static) reduction(+ : dw2) if (rows * n >= 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < n; ++k) {
      const int64_t j = P.perm[k];
      const uint8_t q = Qp[static_cast<size_t>(r * n + k)];
      out.q[static_cast<size_t>(r * n + j)] = q;
      const size_t gi = static_cast<size_t>(out.g_idx[j] * rows + r);
      const double d = static_cast<double>(P.Wd[static_cast<size_t>(r * n + j)]) -
                       out.scales[gi] * static_cast<float>(static_cast<int32_t>(q) - out.zeros[gi]);
      dw2 += d * d;
    }
  return dw2;
}

}  // namespace

IntQuantized gptq_quantize(const float* W, int64_t rows, int64_t cols, const double* H, int64_t nsamples,
                           const GPTQOptions& o, GPTQStats* stats, std::string_view what) {
  check_inputs(W, rows, cols, H, o, what);
  const Plan P = make_plan(W, rows, cols, H, o, what);
  IntQuantized out;
  out.spec = o.spec;
  out.rows = rows, out.cols = cols, out.ngroups = P.ngroups;
  out.q.resize(static_cast<size_t>(rows * cols));
  out.scales.resize(static_cast<size_t>(P.ngroups * rows));
  out.zeros.resize(out.scales.size());
  out.g_idx.resize(static_cast<size_t>(cols));

  const std::vector<IntGroupParams> fixed = fixed_group_params(P, o.spec, what);  // [ngroups, rows] or empty
  std::vector<uint8_t> Qp(static_cast<size_t>(rows * cols));  // [rows, n] levels in processing order
  std::vector<double> e2(static_cast<size_t>(rows), 0.0);     // Σ e² per row
  sweep_columns(P, o, fixed, out, Qp, e2, what);
  const double dw2 = unpermute(P, Qp, fixed, out);  // ‖Wd − Ŵ‖²
  if (stats) {
    const double sum_e2 = std::accumulate(e2.begin(), e2.end(), 0.0);
    stats->loss = (sum_e2 - P.lambda * dw2) / static_cast<double>(std::max<int64_t>(nsamples, 1));
    stats->damp_used = P.damp;
    stats->lambda = P.lambda;
    stats->dead_columns = P.ndead;
  }
  return out;
}

}  // namespace moetool
