// kernels/linalg.cc — the CPU side of kernels/linalg.h (LAPACK through OpenBLAS, row-major wrappers
// over column-major routines) and the device dispatch. A row-major [m, n] matrix is the
// column-major [n, m] matrix Aᵀ, which is how each wrapper below avoids copies where it can.
#include "kernels/linalg.h"

#include <cblas.h>

#include <algorithm>
#include <random>

#include "core/error.h"

extern "C" {
void sgesdd_(const char* jobz, const int* m, const int* n, float* a, const int* lda, float* s, float* u,
             const int* ldu, float* vt, const int* ldvt, float* work, const int* lwork, int* iwork, int* info,
             size_t jobz_len);
void ssyevd_(const char* jobz, const char* uplo, const int* n, float* a, const int* lda, float* w, float* work,
             const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len, size_t uplo_len);
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info, size_t uplo_len);
void sgeqrf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work, const int* lwork,
             int* info);
void sorgqr_(const int* m, const int* n, const int* k, float* a, const int* lda, const float* tau, float* work,
             const int* lwork, int* info);
}

namespace moetool::linalg {

namespace {

int to_int(int64_t v, const char* what) {
  check(v >= 0 && v <= INT32_MAX, "linalg: ", what, " = ", v, " is out of LAPACK's int range");
  return static_cast<int>(v);
}

Svd cpu_svd(const float* A, int64_t m, int64_t n) {
  Svd r;
  r.m = m;
  r.n = n;
  r.k = std::min(m, n);
  if (r.k == 0) return r;
  // Column-major Aᵀ [n, m] = V S Uᵀ: LAPACK's U is our Vt (col-major [n, k] = row-major [k, n]) and
  // its VT our U (col-major [k, m] = row-major [m, k]).
  std::vector<float> a(A, A + m * n);
  r.S.resize(static_cast<size_t>(r.k));
  r.U.resize(static_cast<size_t>(m * r.k));
  r.Vt.resize(static_cast<size_t>(r.k * n));
  const int M = to_int(n, "cols"), N = to_int(m, "rows"), K = static_cast<int>(r.k), lwq = -1;
  int info = 0;
  float wq = 0;
  std::vector<int> iwork(static_cast<size_t>(8 * r.k));
  sgesdd_("S", &M, &N, a.data(), &M, r.S.data(), r.Vt.data(), &M, r.U.data(), &K, &wq, &lwq, iwork.data(), &info,
          1);
  const int lwork = static_cast<int>(wq) + 1;
  std::vector<float> work(static_cast<size_t>(lwork));
  sgesdd_("S", &M, &N, a.data(), &M, r.S.data(), r.Vt.data(), &M, r.U.data(), &K, work.data(), &lwork, iwork.data(),
          &info, 1);
  check(info == 0, "linalg::svd: LAPACK sgesdd failed (info ", info, ") on a ", m, "×", n, " matrix");
  return r;
}

// Orthonormalises the columns of Y [m, l] (row-major) in place (Householder QR, Q kept).
void cpu_orthonormalize(std::vector<float>& Y, int64_t m, int64_t l) {
  std::vector<float> cm(static_cast<size_t>(m * l));  // column-major [m, l]
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < l; ++j) cm[static_cast<size_t>(j * m + i)] = Y[static_cast<size_t>(i * l + j)];
  const int M = to_int(m, "rows"), L = to_int(l, "cols"), lwq = -1;
  std::vector<float> tau(static_cast<size_t>(l));
  float wq = 0, wq2 = 0;
  int info = 0;
  sgeqrf_(&M, &L, cm.data(), &M, tau.data(), &wq, &lwq, &info);
  sorgqr_(&M, &L, &L, cm.data(), &M, tau.data(), &wq2, &lwq, &info);
  const int lwork = static_cast<int>(std::max(wq, wq2)) + 1;
  std::vector<float> work(static_cast<size_t>(lwork));
  sgeqrf_(&M, &L, cm.data(), &M, tau.data(), work.data(), &lwork, &info);
  check(info == 0, "linalg: sgeqrf failed (info ", info, ")");
  sorgqr_(&M, &L, &L, cm.data(), &M, tau.data(), work.data(), &lwork, &info);
  check(info == 0, "linalg: sorgqr failed (info ", info, ")");
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < l; ++j) Y[static_cast<size_t>(i * l + j)] = cm[static_cast<size_t>(j * m + i)];
}

void cpu_range_finder(const float* A, int64_t m, int64_t n, const float* omega, int64_t l, int64_t power_iters,
                      std::vector<float>& Q, std::vector<float>& B) {
  const int M = to_int(m, "rows"), N = to_int(n, "cols"), L = to_int(l, "rank");
  Q.assign(static_cast<size_t>(m * l), 0.0f);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, N, 1.0f, A, N, omega, L, 0.0f, Q.data(), L);
  cpu_orthonormalize(Q, m, l);
  std::vector<float> Z(static_cast<size_t>(n * l));
  for (int64_t it = 0; it < power_iters; ++it) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, L, M, 1.0f, A, N, Q.data(), L, 0.0f, Z.data(), L);
    cpu_orthonormalize(Z, n, l);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, L, N, 1.0f, A, N, Z.data(), L, 0.0f, Q.data(), L);
    cpu_orthonormalize(Q, m, l);
  }
  B.assign(static_cast<size_t>(l * n), 0.0f);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, L, N, M, 1.0f, Q.data(), L, A, N, 0.0f, B.data(), N);
}

void need_cuda(Device dev, const char* what) {
  if (dev == Device::Cuda && !(cuda_built() && cuda_device_count() > 0))
    fail("linalg::", what, " on cuda: no usable GPU: ", cuda_device_summary());
}

}  // namespace

Svd svd(const float* A, int64_t m, int64_t n, Device dev) {
  need_cuda(dev, "svd");
  return dev == Device::Cuda ? detail::cuda_svd(A, m, n) : cpu_svd(A, m, n);
}

std::vector<Svd> svd_batched(const float* A, int64_t batch, int64_t m, int64_t n, Device dev) {
  need_cuda(dev, "svd_batched");
  if (dev == Device::Cuda) return detail::cuda_svd_batched(A, batch, m, n);
  std::vector<Svd> out(static_cast<size_t>(batch));
  // LAPACK calls are independent; OpenBLAS threads inside each call are left to OpenBLAS.
  for (int64_t b = 0; b < batch; ++b) out[static_cast<size_t>(b)] = cpu_svd(A + b * m * n, m, n);
  return out;
}

Svd svd_randomized(const float* A, int64_t m, int64_t n, int64_t rank, int64_t oversample, int64_t power_iters,
                   uint64_t seed, Device dev) {
  need_cuda(dev, "svd_randomized");
  check(rank > 0 && oversample >= 0 && power_iters >= 0, "linalg::svd_randomized: rank ", rank, ", oversample ",
        oversample, ", power iterations ", power_iters);
  const int64_t kmax = std::min(m, n);
  rank = std::min(rank, kmax);
  const int64_t l = std::min(rank + oversample, kmax);
  std::vector<float> omega(static_cast<size_t>(n * l));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : omega) x = nd(rng);
  std::vector<float> Q, B;
  if (dev == Device::Cuda)
    detail::cuda_range_finder(A, m, n, omega.data(), l, power_iters, Q, B);
  else
    cpu_range_finder(A, m, n, omega.data(), l, power_iters, Q, B);
  // B [l, n] = Ub S Vt exactly; A ≈ Q B = (Q Ub) S Vt.
  Svd sb = cpu_svd(B.data(), l, n);
  Svd r;
  r.m = m;
  r.n = n;
  r.k = rank;
  r.S.assign(sb.S.begin(), sb.S.begin() + rank);
  r.Vt.assign(sb.Vt.begin(), sb.Vt.begin() + rank * n);
  r.U.assign(static_cast<size_t>(m * rank), 0.0f);
  // U [m, rank] = Q [m, l] · Ub[:, :rank] (Ub row-major [l, sb.k]).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, to_int(m, "rows"), to_int(rank, "rank"), to_int(l, "l"), 1.0f,
              Q.data(), static_cast<int>(l), sb.U.data(), static_cast<int>(sb.k), 0.0f, r.U.data(),
              static_cast<int>(rank));
  return r;
}

void eigh(const float* A, int64_t n, std::vector<float>& w, std::vector<float>& V, Device dev) {
  need_cuda(dev, "eigh");
  if (dev == Device::Cuda) return detail::cuda_eigh(A, n, w, V);
  // Row-major A read as column-major is Aᵀ; its lower triangle is our upper one, so ask for "U".
  std::vector<float> a(A, A + n * n);
  w.assign(static_cast<size_t>(n), 0.0f);
  if (n == 0) {
    V.clear();
    return;
  }
  const int N = to_int(n, "n"), lq = -1;
  int info = 0, iwq = 0;
  float wq = 0;
  ssyevd_("V", "U", &N, a.data(), &N, w.data(), &wq, &lq, &iwq, &lq, &info, 1, 1);
  const int lwork = static_cast<int>(wq) + 1, liwork = iwq + 1;
  std::vector<float> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  ssyevd_("V", "U", &N, a.data(), &N, w.data(), work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  check(info == 0, "linalg::eigh: LAPACK ssyevd failed (info ", info, ") on a ", n, "×", n, " matrix");
  // Column-major eigenvectors (column j = vector j) → row-major V with column j = vector j.
  V.assign(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) V[static_cast<size_t>(i * n + j)] = a[static_cast<size_t>(j * n + i)];
}

std::vector<float> cholesky(const float* A, int64_t n, Device dev) {
  need_cuda(dev, "cholesky");
  if (dev == Device::Cuda) return detail::cuda_cholesky(A, n);
  // Column-major "U" factor of Aᵀ (= A) read row-major is L.
  std::vector<float> a(A, A + n * n);
  if (n == 0) return a;
  const int N = to_int(n, "n");
  int info = 0;
  spotrf_("U", &N, a.data(), &N, &info, 1);
  check(info >= 0, "linalg::cholesky: LAPACK spotrf argument error ", info);
  check(info == 0, "linalg::cholesky: the matrix is not positive definite (leading minor ", info, " of ", n, ")");
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) a[static_cast<size_t>(i * n + j)] = 0.0f;
  return a;
}

}  // namespace moetool::linalg
