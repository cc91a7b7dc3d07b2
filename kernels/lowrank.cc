// kernels/lowrank.cc — kernels/lowrank.h: the whitening (LAPACK dpotrf / dsyevd in double through
// OpenBLAS, row-major wrappers as in kernels/linalg.cc), W·S and Vrᵀ·S⁻¹ in row blocks in double
// (BLAS dtrmm / dtrsm, dgemm on the eigen path), and the float32 SVD of W·S via kernels/linalg.h.
#include "kernels/lowrank.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "core/error.h"
#include "kernels/linalg.h"

extern "C" {
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t uplo_len);
void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
             const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len, size_t uplo_len);
}

namespace moetool::lowrank {

namespace {

constexpr int64_t kBlockRows = 256;  // rows of W (or of Vrᵀ) converted to double at a time

int to_int(int64_t v, const char* what) {
  check(v >= 0 && v <= INT32_MAX, "lowrank: ", what, " = ", v, " is out of BLAS's int range");
  return static_cast<int>(v);
}

// Index of the first non-finite element of x [count], or -1.
template <class T>
int64_t first_non_finite(const T* x, int64_t count) {
  int64_t bad = count;
#pragma omp parallel for reduction(min : bad)
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i]) && i < bad) bad = i;
  return bad == count ? -1 : bad;
}

void check_matrix(const char* fn, const float* W, int64_t rows, int64_t cols, int64_t max_rank) {
  check(W != nullptr && rows > 0 && cols > 0, "lowrank::", fn, ": W must be a non-empty matrix, found [", rows, ", ",
        cols, "]");
  const int64_t k = std::min(rows, cols);
  check(max_rank >= 1 && max_rank <= k, "lowrank::", fn, ": max_rank ", max_rank, " is out of range 1..", k,
        " (min of rows ", rows, ", cols ", cols, ")");
  const int64_t bad = first_non_finite(W, rows * cols);
  check(bad < 0, "lowrank::", fn, ": W [", rows, ", ", cols, "] has a non-finite value (", bad < 0 ? 0.0f : W[bad],
        ") at row ", bad / cols, ", col ", bad % cols);
}

// out [m, n] (float) = in [m, n] · S (or · S⁻¹), in row blocks in double; returns the squared
// Frobenius norm of the result, accumulated in double before the float rounding.
double transform_rows(const float* in, int64_t m, const Whitening& wh, bool inverse, float* out) {
  const int64_t n = wh.n;
  std::vector<double> blk(static_cast<size_t>(std::min(m, kBlockRows) * n));
  double energy = 0;
  for (int64_t r0 = 0; r0 < m; r0 += kBlockRows) {
    const int64_t b = std::min(kBlockRows, m - r0), count = b * n;
    const float* src = in + r0 * n;
#pragma omp parallel for
    for (int64_t i = 0; i < count; ++i) blk[static_cast<size_t>(i)] = src[i];
    if (inverse)
      wh.apply_inverse(blk.data(), b);
    else
      wh.apply(blk.data(), b);
    float* dst = out + r0 * n;
    double e = 0;
#pragma omp parallel for reduction(+ : e)
    for (int64_t i = 0; i < count; ++i) {
      const double v = blk[static_cast<size_t>(i)];
      e += v * v;
      dst[i] = static_cast<float>(v);
    }
    energy += e;
  }
  return energy;
}

// The top max_rank triplets of A [rows, cols]: exact LAPACK/cuSOLVER SVD truncated, or randomized.
linalg::Svd truncated_svd(const float* A, int64_t rows, int64_t cols, int64_t max_rank, const SvdOptions& opt) {
  const int64_t k = std::min(rows, cols);
  if (static_cast<double>(max_rank) <= opt.exact_above * static_cast<double>(k))
    return linalg::svd_randomized(A, rows, cols, max_rank, opt.oversample, opt.power_iters, opt.seed, opt.device);
  linalg::Svd s = linalg::svd(A, rows, cols, opt.device);
  if (s.k > max_rank) {
    // U [rows, k] → [rows, max_rank]; Vt [k, cols] → its first max_rank rows.
    std::vector<float> U(static_cast<size_t>(rows * max_rank));
    for (int64_t i = 0; i < rows; ++i)
      std::copy_n(s.U.begin() + i * s.k, max_rank, U.begin() + i * max_rank);
    s.U = std::move(U);
    s.S.resize(static_cast<size_t>(max_rank));
    s.Vt.resize(static_cast<size_t>(max_rank * cols));
    s.k = max_rank;
  }
  return s;
}

// Checked inputs; wh null: plain.
Decomposition decompose_checked(const float* W, int64_t rows, int64_t cols, const Whitening* wh, int64_t max_rank,
                                const SvdOptions& opt) {
  double total = 0;
  std::vector<float> whitened;  // W·S [rows, cols]
  const float* A = W;
  if (wh) {
    whitened.resize(static_cast<size_t>(rows * cols));
    total = transform_rows(W, rows, *wh, false, whitened.data());
    check(std::isfinite(total) && first_non_finite(whitened.data(), rows * cols) < 0, "lowrank::decompose: W·S [",
          rows, ", ", cols, "] overflows float32 (the gram's scale is too large)");
    A = whitened.data();
  } else {
    const int64_t count = rows * cols;
#pragma omp parallel for reduction(+ : total)
    for (int64_t i = 0; i < count; ++i) total += static_cast<double>(W[i]) * W[i];
  }
  linalg::Svd s = truncated_svd(A, rows, cols, max_rank, opt);
  whitened = {};
  check(s.k == max_rank && first_non_finite(s.S.data(), s.k) < 0, "lowrank::decompose: the SVD of a [", rows, ", ",
        cols, "] matrix returned ", s.k, " finite singular values, expected ", max_rank);
  std::vector<float> V = std::move(s.Vt);  // [k, cols]
  if (wh) transform_rows(V.data(), s.k, *wh, true, V.data());
  return Decomposition(rows, cols, wh != nullptr, total, std::vector<double>(s.S.begin(), s.S.end()), std::move(s.U),
                       std::move(V));
}

}  // namespace

void Whitening::apply(double* M, int64_t m) const {
  if (m == 0) return;
  const int N = to_int(n, "n"), Mr = to_int(m, "rows");
  if (cholesky) {
    cblas_dtrmm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, Mr, N, 1.0, S.data(), N, M, N);
    return;
  }
  std::vector<double> t(static_cast<size_t>(m * n));  // M · S, S = Q·diag(√Λ) dense
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Mr, N, N, 1.0, M, N, S.data(), N, 0.0, t.data(), N);
  std::copy(t.begin(), t.end(), M);
}

void Whitening::apply_inverse(double* M, int64_t m) const {
  if (m == 0) return;
  const int N = to_int(n, "n"), Mr = to_int(m, "rows");
  if (cholesky) {
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans, CblasNonUnit, Mr, N, 1.0, S.data(), N, M, N);
    return;
  }
  // S⁻¹ = diag(1/√Λ)·Qᵀ = diag(1/Λ)·Sᵀ, so M·S⁻¹ = (M·diag(1/Λ))·Sᵀ.
  std::vector<double> t(static_cast<size_t>(m * n));
#pragma omp parallel for
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) M[i * n + j] /= eig[static_cast<size_t>(j)];
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Mr, N, N, 1.0, M, N, S.data(), N, 0.0, t.data(), N);
  std::copy(t.begin(), t.end(), M);
}

namespace {

// S ← the damped Gram (G + Gᵀ)/2 + delta·I, row-major [n, n].
void fill_damped(const double* gram, int64_t n, double delta, std::vector<double>& S) {
  S.resize(static_cast<size_t>(n * n));
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      S[static_cast<size_t>(i * n + j)] = 0.5 * (gram[i * n + j] + gram[j * n + i]) + (i == j ? delta : 0.0);
}

// Cholesky of the damped Gram in S (in place → lower triangular L, L·Lᵀ = G). False when LAPACK
// finds it not positive definite or a pivot L_ii² falls below floor (numerically singular).
bool try_cholesky(std::vector<double>& S, int64_t n, double floor) {
  // Column-major "U" factor of the symmetric matrix read row-major is L (kernels/linalg.cc).
  const int N = to_int(n, "n");
  int info = 0;
  dpotrf_("U", &N, S.data(), &N, &info, 1);
  check(info >= 0, "lowrank::whiten: LAPACK dpotrf argument error ", info);
  if (info > 0) return false;
  for (int64_t i = 0; i < n; ++i) {
    const double d = S[static_cast<size_t>(i * n + i)];
    if (!(d * d >= floor)) return false;
  }
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) S[static_cast<size_t>(i * n + j)] = 0.0;
  return true;
}

// Eigen path on the damped Gram in S: S ← Q·diag(√Λ) with Λ clamped; eig ← Λ.
void eigen_factor(std::vector<double>& S, int64_t n, std::vector<double>& eig) {
  const int N = to_int(n, "n"), query = -1;
  int info = 0, iwq = 0;
  double wq = 0;
  eig.assign(static_cast<size_t>(n), 0.0);
  dsyevd_("V", "U", &N, S.data(), &N, eig.data(), &wq, &query, &iwq, &query, &info, 1, 1);
  const int lwork = static_cast<int>(wq) + 1, liwork = iwq + 1;
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  dsyevd_("V", "U", &N, S.data(), &N, eig.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  check(info == 0, "lowrank::whiten: LAPACK dsyevd failed (info ", info, ") on the damped ", n, "×", n, " gram");
  const double top = eig.back();  // ascending
  check(std::isfinite(top) && top > 0, "lowrank::whiten: the damped ", n, "×", n,
        " gram cannot be factored: its largest eigenvalue is ", top, ", expected > 0");
  const double floor = std::max(top * Whitening::kEigenFloor, std::numeric_limits<double>::min());
  for (auto& l : eig) l = std::max(l, floor);
  // Column-major Q read row-major is Qᵀ: scale its row j by √λ_j (→ Sᵀ), then transpose in place.
#pragma omp parallel for
  for (int64_t j = 0; j < n; ++j) {
    const double s = std::sqrt(eig[static_cast<size_t>(j)]);
    for (int64_t i = 0; i < n; ++i) S[static_cast<size_t>(j * n + i)] *= s;
  }
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) std::swap(S[static_cast<size_t>(i * n + j)], S[static_cast<size_t>(j * n + i)]);
}

}  // namespace

Whitening whiten(const double* gram, int64_t n, double damp) {
  check(gram != nullptr && n > 0, "lowrank::whiten: the gram must be a non-empty square matrix, found n = ", n);
  check(std::isfinite(damp) && damp >= 0, "lowrank::whiten: damp ", damp, " must be finite and ≥ 0");
  const int64_t bad = first_non_finite(gram, n * n);
  check(bad < 0, "lowrank::whiten: gram [", n, ", ", n, "] has a non-finite value (", bad < 0 ? 0.0 : gram[bad],
        ") at (", bad / n, ", ", bad % n, ")");
  double sum = 0, top = 0, asym = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = gram[i * n + i];
    check(d >= 0, "lowrank::whiten: gram diagonal (", i, ", ", i, ") is ", d, ", expected ≥ 0 for XᵀX");
    sum += d;
    top = std::max(top, d);
  }
#pragma omp parallel for reduction(max : asym)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) asym = std::max(asym, std::fabs(gram[i * n + j] - gram[j * n + i]));
  check(asym <= 1e-6 * top, "lowrank::whiten: gram [", n, ", ", n, "] is not symmetric: max |G_ij − G_ji| = ", asym,
        ", expected ≤ 1e-6 · max diag ", top);
  check(top > 0, "lowrank::whiten: the ", n, "×", n, " gram cannot be factored: its diagonal is all zero (no inputs?)");
  Whitening w;
  w.n = n;
  w.delta = damp * sum / static_cast<double>(n);
  fill_damped(gram, n, w.delta, w.S);
  w.cholesky = try_cholesky(w.S, n, Whitening::kPivotFloor * (top + w.delta));
  if (!w.cholesky) {
    fill_damped(gram, n, w.delta, w.S);
    eigen_factor(w.S, n, w.eig);
  }
  return w;
}

Decomposition::Decomposition(int64_t rows, int64_t cols, bool whitened, double total, std::vector<double> sigma,
                             std::vector<float> Ur, std::vector<float> V)
    : rows_(rows), cols_(cols), whitened_(whitened), total_(total), sigma_(std::move(sigma)), Ur_(std::move(Ur)),
      V_(std::move(V)) {
  const int64_t k = max_rank();
  check(rows > 0 && cols > 0 && k <= std::min(rows, cols) && Ur_.size() == static_cast<size_t>(rows * k) &&
            V_.size() == static_cast<size_t>(k * cols),
        "lowrank::Decomposition: sizes disagree: [", rows, ", ", cols, "] rank ", k, " with U of ", Ur_.size(),
        " and V of ", V_.size(), " values");
  tail_.resize(static_cast<size_t>(k + 1));
  double kept = 0;
  for (int64_t r = 0; r <= k; ++r) {
    tail_[static_cast<size_t>(r)] = std::max(0.0, total_ - kept);
    if (r < k) kept += sigma_[static_cast<size_t>(r)] * sigma_[static_cast<size_t>(r)];
  }
}

double Decomposition::error2(int64_t r) const {
  check(r >= 0 && r <= max_rank(), "lowrank::Decomposition::error2: rank ", r, " is out of range 0..", max_rank());
  return tail_[static_cast<size_t>(r)];
}

void Decomposition::factors(int64_t r, std::vector<float>& U, std::vector<float>& V) const {
  const int64_t k = max_rank();
  check(r >= 0 && r <= k, "lowrank::Decomposition::factors: rank ", r, " is out of range 0..", k);
  U.resize(static_cast<size_t>(rows_ * r));
#pragma omp parallel for
  for (int64_t i = 0; i < rows_; ++i)
    for (int64_t j = 0; j < r; ++j)
      U[static_cast<size_t>(i * r + j)] =
          static_cast<float>(Ur_[static_cast<size_t>(i * k + j)] * sigma_[static_cast<size_t>(j)]);
  V.assign(V_.begin(), V_.begin() + r * cols_);
}

Decomposition decompose(const float* W, int64_t rows, int64_t cols, const double* gram, int64_t max_rank,
                        const SvdOptions& opt) {
  check_matrix("decompose", W, rows, cols, max_rank);
  if (!gram) return decompose_checked(W, rows, cols, nullptr, max_rank, opt);
  const Whitening wh = whiten(gram, cols, opt.damp);
  return decompose_checked(W, rows, cols, &wh, max_rank, opt);
}

Decomposition decompose_whitened(const float* W, int64_t rows, int64_t cols, const Whitening& wh, int64_t max_rank,
                                 const SvdOptions& opt) {
  check_matrix("decompose_whitened", W, rows, cols, max_rank);
  check(wh.n == cols && wh.S.size() == static_cast<size_t>(cols * cols) &&
            (wh.cholesky || wh.eig.size() == static_cast<size_t>(cols)),
        "lowrank::decompose_whitened: the whitening is for ", wh.n, " inputs, expected cols = ", cols);
  return decompose_checked(W, rows, cols, &wh, max_rank, opt);
}

}  // namespace moetool::lowrank
