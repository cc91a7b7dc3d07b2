// kernels/linalg.h — dense linear algebra for the compress passes and GPTQ, one interface on two
// devices: LAPACK (OpenBLAS) on the CPU, cuSOLVER/cuBLAS on CUDA (kernels/cuda/linalg_cuda.cu).
// Matrices are float32 row-major on the host; the CUDA path uploads, solves and downloads. The CPU
// results define what is correct; singular vectors are unique only up to sign (and rotation
// within repeated singular values), so callers and tests compare subspaces or reconstructions.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/device.h"

namespace moetool::linalg {

// A ≈ U · diag(S) · Vt with U [m, k], S [k] descending, Vt [k, n].
struct Svd {
  int64_t m = 0, n = 0, k = 0;
  std::vector<float> U, S, Vt;
};

// Thin SVD of A [m, n] (k = min(m, n)). CPU: LAPACK sgesdd. CUDA: cuSOLVER gesvdj (Jacobi).
Svd svd(const float* A, int64_t m, int64_t n, Device dev = Device::Cpu);
// Thin SVDs of `batch` matrices A [batch, m, n] (contiguous). CUDA: Jacobi, one gesvdjBatched call
// when m, n ≤ 32, else gesvdj per matrix on one stream; CPU: sgesdd per matrix in parallel.
std::vector<Svd> svd_batched(const float* A, int64_t batch, int64_t m, int64_t n, Device dev = Device::Cpu);
// Randomized truncated SVD (Halko, Martinsson & Tropp): rank + oversample Gaussian probes (seeded,
// the same on both devices), `power_iters` subspace iterations with re-orthonormalisation, then an
// exact SVD of the small projected matrix. Returns the top `rank` triplets.
Svd svd_randomized(const float* A, int64_t m, int64_t n, int64_t rank, int64_t oversample = 10,
                   int64_t power_iters = 2, uint64_t seed = 0, Device dev = Device::Cpu);

// Symmetric eigendecomposition of A [n, n] (only the lower triangle is read): w [n] ascending and
// V [n, n] with column j the eigenvector of w[j] (A = V·diag(w)·Vᵀ). CPU: ssyevd; CUDA: syevd.
void eigh(const float* A, int64_t n, std::vector<float>& w, std::vector<float>& V, Device dev = Device::Cpu);

// Cholesky factor L [n, n] (lower triangular, zeros above; A = L·Lᵀ) of a symmetric positive
// definite A (lower triangle read). Throws moetool::Error naming the failing leading minor when A
// is not positive definite. CPU: spotrf; CUDA: potrf.
std::vector<float> cholesky(const float* A, int64_t n, Device dev = Device::Cpu);

namespace detail {
// CUDA implementations (kernels/cuda/linalg_cuda.cu; throwing stubs without the backend).
Svd cuda_svd(const float* A, int64_t m, int64_t n);
std::vector<Svd> cuda_svd_batched(const float* A, int64_t batch, int64_t m, int64_t n);
// Randomized SVD's device part: with the probe matrix omega [n, l] (row-major), returns Q [m, l]
// (orthonormal columns, row-major) and B = Qᵀ·A [l, n].
void cuda_range_finder(const float* A, int64_t m, int64_t n, const float* omega, int64_t l, int64_t power_iters,
                       std::vector<float>& Q, std::vector<float>& B);
void cuda_eigh(const float* A, int64_t n, std::vector<float>& w, std::vector<float>& V);
std::vector<float> cuda_cholesky(const float* A, int64_t n);
}  // namespace detail

}  // namespace moetool::linalg
