// compress/gptq_internal.cc — the damped inverse-Hessian factor and the lazy batch update shared by
// GPTQ's integer and ggml block forms (see gptq_internal.h).
#include "compress/gptq_internal.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <Eigen/Dense>

#include "core/error.h"
#include "formats/ggml_levels.h"

extern "C" {
// LAPACK (OpenBLAS), column-major: Cholesky factorization and triangular inverse. The trailing
// arguments are the hidden Fortran lengths of the character arguments.
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info,
             size_t uplo_len, size_t diag_len);
}

namespace moetool::gptq_detail {
namespace {

// The upper Cholesky factor U of A⁻¹ (A⁻¹ = UᵀU) without forming A⁻¹: with J the reversal
// permutation, factor JAJ = LLᵀ; then A = RRᵀ with R = JLJ upper triangular, so A⁻¹ = R⁻ᵀR⁻¹ and
// U = R⁻¹ = J L⁻¹ J. M[n, n] (symmetric, row-major) is overwritten by U (strict lower triangle 0).
// False when A is not numerically positive definite. n³/3 flops; small matrices with plain loops
// (single-threaded: OpenBLAS's threads cost more than they save there and spin against OpenMP's),
// large ones with LAPACK dpotrf + dtrtri.
bool upper_cholesky_of_inverse(std::vector<double>& M, int n) {
  const auto at = [n](int64_t a, int64_t b) { return static_cast<size_t>(a * n + b); };
  // JAJ (rows and columns reversed) is the whole row-major array reversed; then L, then L⁻¹ in place.
  std::reverse(M.begin(), M.end());
  if (n <= 512) {
    // Cholesky, lower triangle, row by row: L[i, j] = (M[i, j] − L[i, :j]·L[j, :j]) / L[j, j].
    for (int64_t i = 0; i < n; ++i) {
      double* Li = M.data() + at(i, 0);
      for (int64_t j = 0; j <= i; ++j) {
        const double* Lj = M.data() + at(j, 0);
        double s = Li[j];
        for (int64_t k = 0; k < j; ++k) s -= Li[k] * Lj[k];
        if (j < i) {
          Li[j] = s / Lj[j];
        } else {
          if (!(s > 0) || !std::isfinite(s)) return false;
          Li[i] = std::sqrt(s);
        }
      }
    }
    // L⁻¹ in place, row by row: X[i, :i] = −(Σ_{k<i} L[i, k] X[k, :]) / L[i, i], X[i, i] = 1 / L[i, i].
    std::vector<double> row(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      std::fill(row.begin(), row.begin() + i, 0.0);
      for (int64_t k = 0; k < i; ++k) {
        const double l = M[at(i, k)];
        const double* Xk = M.data() + at(k, 0);
        for (int64_t j = 0; j <= k; ++j) row[j] -= l * Xk[j];
      }
      const double d = M[at(i, i)];
      for (int64_t j = 0; j < i; ++j) M[at(i, j)] = row[j] / d;
      M[at(i, i)] = 1.0 / d;
    }
  } else {
    // Row-major lower = column-major upper: dpotrf('U') gives JAJ = LLᵀ, dtrtri('U') gives L⁻¹.
    int info = 0;
    dpotrf_("U", &n, M.data(), &n, &info, 1);
    if (info != 0) return false;
    dtrtri_("U", "N", &n, M.data(), &n, &info, 1, 1);
    if (info != 0) return false;
  }
  // U = J L⁻¹ J: reversed again; L⁻¹'s lower triangle becomes the upper one.
  std::reverse(M.begin(), M.end());
  for (int64_t a = 0; a < n; ++a) std::fill(M.begin() + at(a, 0), M.begin() + at(a, a), 0.0);
  return true;
}

}  // namespace

Factor factor_hessian(const double* H, int64_t n, const std::vector<double>& diag, const std::vector<int64_t>& perm,
                      double damp, std::string_view what) {
  const std::string pre = what.empty() ? std::string() : str(what, ": ");
  const double mean_diag = std::accumulate(diag.begin(), diag.end(), 0.0) / static_cast<double>(n);
  std::vector<double> A(static_cast<size_t>(n * n));  // [n, n]
  Factor F;
  F.damp = damp;
  for (int attempt = 0;; ++attempt) {
    F.lambda = F.damp * mean_diag;
    // Serial on purpose: an OpenMP region right before the multi-threaded LAPACK calls makes the
    // two thread pools spin against each other; the O(n²) copy is nothing next to the O(n³) work.
    for (int64_t a = 0; a < n; ++a) {
      const double* Hrow = H + perm[a] * n;
      double* Arow = A.data() + a * n;
      for (int64_t b = 0; b < n; ++b) Arow[b] = Hrow[perm[b]];
      Arow[a] = diag[perm[a]] + F.lambda;
    }
    if (upper_cholesky_of_inverse(A, static_cast<int>(n))) break;
    if (attempt == 4)
      fail(pre, "GPTQ: the Hessian is not positive definite even with damping ", F.damp, " × mean(diag H)");
    F.damp = F.damp > 0 ? F.damp * 10 : 1e-4;
  }
  F.U.assign(A.begin(), A.end());
  F.Ud.resize(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) F.Ud[k] = A[static_cast<size_t>(k * n + k)];
  return F;
}

void batch_update(float* W, int64_t n, int64_t r0, int64_t m, int64_t i1, int64_t i2, const float* Err,
                  const float* U, bool small) {
  if (i2 >= n) return;
  const int64_t B = i2 - i1;
  if (small) {
    for (int64_t rl = 0; rl < m; ++rl) {
      float* w = W + (r0 + rl) * n;
      for (int64_t b = 0; b < B; ++b) {
        const float e = Err[rl * B + b];
        const float* u = U + (i1 + b) * n;
        for (int64_t j = i2; j < n; ++j) w[j] -= e * u[j];
      }
    }
    return;
  }
  using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Stride = Eigen::OuterStride<>;
  Eigen::Map<MatF, 0, Stride> Wr(W + r0 * n + i2, m, n - i2, Stride(n));
  const Eigen::Map<const MatF> E(Err, m, B);
  const Eigen::Map<const MatF, 0, Stride> Ub(U + i1 * n + i2, B, n - i2, Stride(n));
  Wr.noalias() -= E * Ub;
}

int64_t dead_columns(const float* W, int64_t rows, const double* H, int64_t n, std::vector<double>& diag,
                     std::vector<char>& dead, std::vector<float>& Wd, std::string_view what) {
  diag.assign(static_cast<size_t>(n), 0.0);
  dead.assign(static_cast<size_t>(n), 0);
  int64_t ndead = 0;
  for (int64_t j = 0; j < n; ++j) {
    diag[j] = H[j * n + j];
    if (diag[j] < 0) fail(what.empty() ? "" : str(what, ": "), "Hessian diagonal [", j, "] is negative (", diag[j], ")");
    if (diag[j] == 0) dead[j] = 1, diag[j] = 1, ++ndead;
  }
  Wd.assign(W, W + rows * n);
  if (ndead)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j)
        if (dead[j]) Wd[static_cast<size_t>(r * n + j)] = 0.0f;
  return ndead;
}

void check_finite(const float* W, int64_t rows, int64_t cols, const double* H, std::string_view what) {
  const std::string p = what.empty() ? std::string() : str(what, ": ");
  for (int64_t k = 0; k < rows * cols; ++k)
    if (!std::isfinite(W[k])) fail(p, "weight [", k / cols, ", ", k % cols, "] is ", W[k]);
  for (int64_t k = 0; k < cols * cols; ++k)
    if (!std::isfinite(H[k])) fail(p, "Hessian [", k / cols, ", ", k % cols, "] is ", H[k]);
}

void check_ggml_matrix(const float* W, int64_t rows, int64_t cols, const double* H, GGMLType t,
                       std::string_view method, std::string_view what) {
  const std::string p = what.empty() ? std::string() : str(what, ": ");
  if (!ggml_has_levels(t))
    fail(p, method, " cannot encode ggml type ", ggml_type_name(t),
         " (expected Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K)");
  if (rows < 0 || cols <= 0) fail(p, method, " needs a non-empty matrix, got [", rows, ", ", cols, "]");
  if (cols % ggml_block_size(t) != 0)
    fail(p, "input dimension ", cols, " is not a multiple of ", ggml_type_name(t), "'s block size ", ggml_block_size(t));
  if (cols > 1'000'000) fail(p, method, " input dimension ", cols, " is too large for a dense Hessian");
  check_finite(W, rows, cols, H, what);
}

}  // namespace moetool::gptq_detail
