// kernels/cuda/linalg_cuda.cu — cuSOLVER/cuBLAS implementations behind kernels/linalg.h: Jacobi SVD
// (gesvdj, gesvdjBatched for ≤ 32×32), the randomized SVD's range finder (cuBLAS GEMMs, geqrf +
// orgqr), syevd and potrf. Host row-major [m, n] is device column-major [n, m] (Aᵀ) without a copy;
// each function notes how it maps the results back.
#include <algorithm>
#include <vector>

#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"
#include "kernels/linalg.h"

namespace moetool::linalg::detail {

namespace {

using cuda::Buffer;

// Reads the device info word; throws naming `what` when it is not 0.
int read_info(const Buffer<int>& info, size_t i = 0) {
  std::vector<int> h = info.to_host(i + 1);
  return h[i];
}

// Column-major [r, c] on the host → row-major [r, c].
std::vector<float> cm_to_rm(const std::vector<float>& cm, int64_t r, int64_t c) {
  std::vector<float> out(static_cast<size_t>(r * c));
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) out[static_cast<size_t>(i * c + j)] = cm[static_cast<size_t>(j * r + i)];
  return out;
}

struct GesvdjParams {
  gesvdjInfo_t p = nullptr;
  GesvdjParams() {
    MOETOOL_CUSOLVER_CHECK(cusolverDnCreateGesvdjInfo(&p));
    MOETOOL_CUSOLVER_CHECK(cusolverDnXgesvdjSetTolerance(p, 1e-7));
    MOETOOL_CUSOLVER_CHECK(cusolverDnXgesvdjSetMaxSweeps(p, 100));
  }
  ~GesvdjParams() { cusolverDnDestroyGesvdjInfo(p); }
};

// Thin Jacobi SVD of device column-major Aᵀ [n, m] (destroyed) into host row-major U, S, Vt.
Svd gesvdj_one(float* dA, int64_t m, int64_t n, Buffer<float>& work, Buffer<float>& dS, Buffer<float>& dU,
               Buffer<float>& dV, Buffer<int>& info, const GesvdjParams& gp) {
  cuda::Context& c = cuda::context();
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(std::min(m, n));
  dS.resize(static_cast<size_t>(K));
  dU.resize(static_cast<size_t>(M) * K);
  dV.resize(static_cast<size_t>(N) * K);
  int lwork = 0;
  MOETOOL_CUSOLVER_CHECK(cusolverDnSgesvdj_bufferSize(c.solver, CUSOLVER_EIG_MODE_VECTOR, 1, M, N, dA, M, dS.get(),
                                                      dU.get(), M, dV.get(), N, &lwork, gp.p));
  work.resize(static_cast<size_t>(lwork));
  MOETOOL_CUSOLVER_CHECK(cusolverDnSgesvdj(c.solver, CUSOLVER_EIG_MODE_VECTOR, 1, M, N, dA, M, dS.get(), dU.get(), M,
                                           dV.get(), N, work.get(), lwork, info.get(), gp.p));
  const int inf = read_info(info);
  check(inf >= 0, "linalg::svd (cuda): gesvdj argument error ", -inf);
  // inf > 0: not converged to tolerance within the sweeps; the result is still the best found.
  Svd r;
  r.m = m;
  r.n = n;
  r.k = K;
  r.S = dS.to_host(static_cast<size_t>(K));
  // Aᵀ = U' S V'ᵀ: our Vt (row-major [k, n]) is U' (column-major [n, k]); our U is V' transposed.
  r.Vt = dU.to_host(static_cast<size_t>(M) * K);
  r.U = cm_to_rm(dV.to_host(static_cast<size_t>(N) * K), m, K);
  return r;
}

// Orthonormalises the columns of device column-major Y [m, l] in place.
void orthonormalize(float* Y, int64_t m, int64_t l, Buffer<float>& tau, Buffer<float>& work, Buffer<int>& info) {
  cuda::Context& c = cuda::context();
  const int M = static_cast<int>(m), L = static_cast<int>(l);
  tau.resize(static_cast<size_t>(l));
  int lw1 = 0, lw2 = 0;
  MOETOOL_CUSOLVER_CHECK(cusolverDnSgeqrf_bufferSize(c.solver, M, L, Y, M, &lw1));
  MOETOOL_CUSOLVER_CHECK(cusolverDnSorgqr_bufferSize(c.solver, M, L, L, Y, M, tau.get(), &lw2));
  const int lw = std::max(lw1, lw2);
  work.resize(static_cast<size_t>(lw));
  MOETOOL_CUSOLVER_CHECK(cusolverDnSgeqrf(c.solver, M, L, Y, M, tau.get(), work.get(), lw, info.get()));
  MOETOOL_CUSOLVER_CHECK(cusolverDnSorgqr(c.solver, M, L, L, Y, M, tau.get(), work.get(), lw, info.get()));
}

}  // namespace

Svd cuda_svd(const float* A, int64_t m, int64_t n) {
  if (std::min(m, n) == 0) return Svd{m, n, 0, {}, {}, {}};
  Buffer<float> dA, work, dS, dU, dV;
  Buffer<int> info(1);
  dA.upload(A, static_cast<size_t>(m * n));
  GesvdjParams gp;
  return gesvdj_one(dA.get(), m, n, work, dS, dU, dV, info, gp);
}

std::vector<Svd> cuda_svd_batched(const float* A, int64_t batch, int64_t m, int64_t n) {
  std::vector<Svd> out(static_cast<size_t>(batch));
  if (batch == 0 || std::min(m, n) == 0) return out;
  GesvdjParams gp;
  Buffer<float> dA, work, dS, dU, dV;
  Buffer<int> info(static_cast<size_t>(batch));
  dA.upload(A, static_cast<size_t>(batch * m * n));
  if (m <= 32 && n <= 32) {
    // One batched Jacobi call: full (not thin) U' [n, n] and V' [m, m] per matrix.
    cuda::Context& c = cuda::context();
    const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(std::min(m, n)),
              B = static_cast<int>(batch);
    dS.resize(static_cast<size_t>(B) * K);
    dU.resize(static_cast<size_t>(B) * M * M);
    dV.resize(static_cast<size_t>(B) * N * N);
    int lwork = 0;
    MOETOOL_CUSOLVER_CHECK(cusolverDnSgesvdjBatched_bufferSize(c.solver, CUSOLVER_EIG_MODE_VECTOR, M, N, dA.get(), M,
                                                               dS.get(), dU.get(), M, dV.get(), N, &lwork, gp.p, B));
    work.resize(static_cast<size_t>(lwork));
    MOETOOL_CUSOLVER_CHECK(cusolverDnSgesvdjBatched(c.solver, CUSOLVER_EIG_MODE_VECTOR, M, N, dA.get(), M, dS.get(),
                                                    dU.get(), M, dV.get(), N, work.get(), lwork, info.get(), gp.p, B));
    const std::vector<float> S = dS.to_host(static_cast<size_t>(B) * K), U = dU.to_host(static_cast<size_t>(B) * M * M),
                             V = dV.to_host(static_cast<size_t>(B) * N * N);
    const std::vector<int> inf = info.to_host(static_cast<size_t>(B));
    for (int b = 0; b < B; ++b) {
      check(inf[static_cast<size_t>(b)] >= 0, "linalg::svd_batched (cuda): gesvdjBatched argument error");
      Svd& r = out[static_cast<size_t>(b)];
      r.m = m;
      r.n = n;
      r.k = K;
      r.S.assign(S.begin() + b * K, S.begin() + (b + 1) * K);
      // First K columns of U' (column-major [n, n]) = row-major Vt [K, n].
      r.Vt.assign(U.begin() + static_cast<int64_t>(b) * M * M, U.begin() + static_cast<int64_t>(b) * M * M + K * M);
      std::vector<float> vk(V.begin() + static_cast<int64_t>(b) * N * N, V.begin() + static_cast<int64_t>(b) * N * N + K * N);
      r.U = cm_to_rm(vk, m, K);
    }
    return out;
  }
  for (int64_t b = 0; b < batch; ++b)
    out[static_cast<size_t>(b)] = gesvdj_one(dA.get() + b * m * n, m, n, work, dS, dU, dV, info, gp);
  return out;
}

void cuda_range_finder(const float* A, int64_t m, int64_t n, const float* omega, int64_t l, int64_t power_iters,
                       std::vector<float>& Q, std::vector<float>& B) {
  // Device: At = column-major Aᵀ [n, m] (the host row-major A), Om = column-major Ωᵀ [l, n].
  Buffer<float> At, Om, Y(static_cast<size_t>(m * l)), Z(static_cast<size_t>(n * l)), dB(static_cast<size_t>(l * n)),
      tau, work;
  Buffer<int> info(1);
  At.upload(A, static_cast<size_t>(m * n));
  Om.upload(omega, static_cast<size_t>(n * l));
  // Y [m, l] = A Ω = Atᵀ · Omᵀ.
  cuda::gemm_cm_f32(true, true, m, l, n, At.get(), n, Om.get(), l, Y.get(), m);
  orthonormalize(Y.get(), m, l, tau, work, info);
  for (int64_t it = 0; it < power_iters; ++it) {
    cuda::gemm_cm_f32(false, false, n, l, m, At.get(), n, Y.get(), m, Z.get(), n);  // Z = Aᵀ Q
    orthonormalize(Z.get(), n, l, tau, work, info);
    cuda::gemm_cm_f32(true, false, m, l, n, At.get(), n, Z.get(), n, Y.get(), m);  // Y = A Z
    orthonormalize(Y.get(), m, l, tau, work, info);
  }
  check(read_info(info) == 0, "linalg::svd_randomized (cuda): QR failed");
  cuda::gemm_cm_f32(true, true, l, n, m, Y.get(), m, At.get(), n, dB.get(), l);  // B = Qᵀ A [l, n]
  Q = cm_to_rm(Y.to_host(static_cast<size_t>(m * l)), m, l);
  B = cm_to_rm(dB.to_host(static_cast<size_t>(l * n)), l, n);
}

void cuda_eigh(const float* A, int64_t n, std::vector<float>& w, std::vector<float>& V) {
  w.assign(static_cast<size_t>(n), 0.0f);
  V.clear();
  if (n == 0) return;
  cuda::Context& c = cuda::context();
  Buffer<float> dA, dW(static_cast<size_t>(n)), work;
  Buffer<int> info(1);
  dA.upload(A, static_cast<size_t>(n * n));
  const int N = static_cast<int>(n);
  int lwork = 0;
  // Column-major view is Aᵀ: its upper triangle is our lower one.
  MOETOOL_CUSOLVER_CHECK(cusolverDnSsyevd_bufferSize(c.solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, N,
                                                     dA.get(), N, dW.get(), &lwork));
  work.resize(static_cast<size_t>(lwork));
  MOETOOL_CUSOLVER_CHECK(cusolverDnSsyevd(c.solver, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_UPPER, N, dA.get(), N,
                                          dW.get(), work.get(), lwork, info.get()));
  const int inf = read_info(info);
  check(inf == 0, "linalg::eigh (cuda): syevd failed (info ", inf, ") on a ", n, "×", n, " matrix");
  w = dW.to_host(static_cast<size_t>(n));
  V = cm_to_rm(dA.to_host(static_cast<size_t>(n * n)), n, n);
}

std::vector<float> cuda_cholesky(const float* A, int64_t n) {
  if (n == 0) return {};
  cuda::Context& c = cuda::context();
  Buffer<float> dA, work;
  Buffer<int> info(1);
  dA.upload(A, static_cast<size_t>(n * n));
  const int N = static_cast<int>(n);
  int lwork = 0;
  MOETOOL_CUSOLVER_CHECK(cusolverDnSpotrf_bufferSize(c.solver, CUBLAS_FILL_MODE_UPPER, N, dA.get(), N, &lwork));
  work.resize(static_cast<size_t>(lwork));
  MOETOOL_CUSOLVER_CHECK(cusolverDnSpotrf(c.solver, CUBLAS_FILL_MODE_UPPER, N, dA.get(), N, work.get(), lwork,
                                          info.get()));
  const int inf = read_info(info);
  check(inf >= 0, "linalg::cholesky (cuda): potrf argument error ", -inf);
  check(inf == 0, "linalg::cholesky: the matrix is not positive definite (leading minor ", inf, " of ", n, ")");
  std::vector<float> a = dA.to_host(static_cast<size_t>(n * n));
  // Column-major upper factor U of Aᵀ = A, read row-major, is L; clear the untouched part.
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) a[static_cast<size_t>(i * n + j)] = 0.0f;
  return a;
}

}  // namespace moetool::linalg::detail
