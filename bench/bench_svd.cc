// bench/bench_svd.cc — the cost and accuracy of a truncated SVD of one large weight-shaped matrix
// (default 4096 × 14336, Mixtral's down/up shape, rank 512): (a) linalg::svd (full LAPACK sgesdd)
// then truncation, (b) linalg::svd_randomized at the same rank for each power-iteration count.
// Prints seconds, the speed-up over (a), and each method's ‖A − A_r‖_F² over the optimum Σ_{i≥r} σ_i²
// (σ from the full SVD). Optionally (--whiten N) times lowrank::decompose with the Gram of N random
// correlated inputs (whitening + W·S + SVD + Vrᵀ·S⁻¹).
//
// The matrix has a realistic spectrum and a dense random basis, built fast: a rank-k0 signal
// Q1·diag(σ)·Q2ᵀ (Q1 [rows, k0], Q2 [cols, k0] orthonormal from QR of Gaussians; σ_i = (1 + i/32)⁻¹, a
// slow power-law decay like trained weights) plus a Gaussian noise floor ν·N (a Marchenko–Pastur
// bulk over all min(rows, cols) directions, its top near σ_k0). A Gaussian range finder is rotation
// invariant, so only the spectrum matters to the randomized method's accuracy.
// Usage: bench_svd [--rows 4096] [--cols 14336] [--rank 512] [--power-iters 2,4] [--k0 1024]
//                  [--noise 1e-4] [--whiten 0] [--seed 1]
#include <cblas.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/linalg.h"
#include "kernels/lowrank.h"

using namespace moetool;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<float> gaussian(int64_t n, uint64_t seed, float scale = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  const int64_t chunks = 64, per = (n + chunks - 1) / chunks;
#pragma omp parallel for
  for (int64_t c = 0; c < chunks; ++c) {
    std::mt19937_64 g(seed * 1000003 + static_cast<uint64_t>(c));
    std::normal_distribution<float> d(0.f, scale);
    for (int64_t i = c * per; i < std::min(n, (c + 1) * per); ++i) v[static_cast<size_t>(i)] = d(g);
  }
  return v;
}

// Orthonormal columns [n, k] (row-major) from the QR of a Gaussian.
std::vector<float> orthonormal(int64_t n, int64_t k, uint64_t seed) {
  using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const std::vector<float> g = gaussian(n * k, seed);
  const Eigen::MatrixXf q = Eigen::Map<const RowMatF>(g.data(), n, k).householderQr().householderQ() *
                            Eigen::MatrixXf::Identity(n, k);
  std::vector<float> out(static_cast<size_t>(n * k));
  Eigen::Map<RowMatF>(out.data(), n, k) = q;
  return out;
}

// ‖A − U·diag(S)·Vt‖_F² at rank r (U [m, ldu] row-major, first r columns; Vt [≥r, n]).
double residual2(const std::vector<float>& A, int64_t m, int64_t n, const linalg::Svd& s, int64_t r) {
  std::vector<float> US(static_cast<size_t>(m * r));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < r; ++j)
      US[static_cast<size_t>(i * r + j)] = s.U[static_cast<size_t>(i * s.k + j)] * s.S[static_cast<size_t>(j)];
  std::vector<float> R(A);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(r),
              -1.0f, US.data(), static_cast<int>(r), s.Vt.data(), static_cast<int>(n), 1.0f, R.data(), static_cast<int>(n));
  double e = 0;
  const int64_t count = m * n;
#pragma omp parallel for reduction(+ : e)
  for (int64_t i = 0; i < count; ++i) e += static_cast<double>(R[static_cast<size_t>(i)]) * R[static_cast<size_t>(i)];
  return e;
}

std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(std::atoll(item.c_str()));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 4096, cols = 14336, rank = 512, k0 = 1024, whiten_n = 0;
  double noise = 1e-4;
  uint64_t seed = 1;
  std::vector<int64_t> power_iters = {2, 4};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--rows") rows = std::atoll(v.c_str());
    else if (a == "--cols") cols = std::atoll(v.c_str());
    else if (a == "--rank") rank = std::atoll(v.c_str());
    else if (a == "--power-iters") power_iters = parse_list(v);
    else if (a == "--k0") k0 = std::atoll(v.c_str());
    else if (a == "--noise") noise = std::atof(v.c_str());
    else if (a == "--whiten") whiten_n = std::atoll(v.c_str());
    else if (a == "--seed") seed = std::strtoull(v.c_str(), nullptr, 10);
    else {
      std::fprintf(stderr, "bench_svd: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  k0 = std::min({k0, rows, cols});
  if (rank < 1 || rank > std::min(rows, cols)) {
    std::fprintf(stderr, "bench_svd: --rank %lld out of range 1..%lld\n", static_cast<long long>(rank),
                 static_cast<long long>(std::min(rows, cols)));
    return 2;
  }

  auto t = Clock::now();
  // A [rows, cols] = Q1·diag(σ)·Q2ᵀ + ν·N.
  std::vector<float> Q1 = orthonormal(rows, k0, seed), Q2 = orthonormal(cols, k0, seed + 1);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < k0; ++j) Q1[static_cast<size_t>(i * k0 + j)] *= 1.0f / (1.0f + static_cast<float>(j) / 32);
  std::vector<float> A = gaussian(rows * cols, seed + 2, static_cast<float>(noise));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(k0), 1.0f, Q1.data(), static_cast<int>(k0), Q2.data(), static_cast<int>(k0), 1.0f,
              A.data(), static_cast<int>(cols));
  Q1 = {};
  Q2 = {};
  std::printf("matrix [%lld, %lld] (signal rank %lld, noise %.1e) built in %.1f s; truncation rank %lld\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(k0), noise,
              seconds_since(t), static_cast<long long>(rank));
  std::fflush(stdout);

  t = Clock::now();
  const linalg::Svd full = linalg::svd(A.data(), rows, cols);
  const double t_full = seconds_since(t);
  double optimal = 0, total = 0;
  for (int64_t i = 0; i < full.k; ++i) {
    const double s2 = static_cast<double>(full.S[static_cast<size_t>(i)]) * full.S[static_cast<size_t>(i)];
    total += s2;
    if (i >= rank) optimal += s2;
  }
  const double full_err = residual2(A, rows, cols, full, rank);
  std::printf("(a) full LAPACK sgesdd + truncation: %8.2f s, error ratio %.5f (optimal tail %.4e = %.2f%% of ‖A‖²)\n",
              t_full, full_err / optimal, optimal, 100 * optimal / total);
  std::fflush(stdout);

  for (const int64_t q : power_iters) {
    t = Clock::now();
    const linalg::Svd r = linalg::svd_randomized(A.data(), rows, cols, rank, 10, q, seed);
    const double t_r = seconds_since(t);
    const double err = residual2(A, rows, cols, r, rank);
    std::printf("(b) randomized, oversample 10, power iters %lld: %8.2f s, speed-up %.1fx, error ratio %.5f\n",
                static_cast<long long>(q), t_r, t_full / t_r, err / optimal);
    std::fflush(stdout);
  }

  if (whiten_n > 0) {
    // Correlated inputs X [N, cols] = Z·diag(d)·(I + 0.1·R), d_i = 1/(1 + i/64); G = XᵀX in double.
    std::vector<float> X = gaussian(whiten_n * cols, seed + 3);
    for (int64_t i = 0; i < whiten_n; ++i)
      for (int64_t j = 0; j < cols; ++j) X[static_cast<size_t>(i * cols + j)] /= 1.0f + static_cast<float>(j) / 64;
    std::vector<double> Xd(X.begin(), X.end()), G(static_cast<size_t>(cols * cols), 0.0);
    X = {};
    t = Clock::now();
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, static_cast<int>(cols), static_cast<int>(whiten_n), 1.0,
                Xd.data(), static_cast<int>(cols), 0.0, G.data(), static_cast<int>(cols));
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < i; ++j) G[static_cast<size_t>(j * cols + i)] = G[static_cast<size_t>(i * cols + j)];
    std::printf("gram of %lld inputs: %.2f s\n", static_cast<long long>(whiten_n), seconds_since(t));
    t = Clock::now();
    const lowrank::Whitening wh = lowrank::whiten(G.data(), cols, 0.01);
    const double t_wh = seconds_since(t);
    lowrank::SvdOptions opt;
    opt.power_iters = power_iters.empty() ? 4 : power_iters.back();
    t = Clock::now();
    const lowrank::Decomposition d = lowrank::decompose_whitened(A.data(), rows, cols, wh, rank, opt);
    std::printf("whitened: whiten (%s) %.2f s, decompose (W·S, randomized SVD q=%lld, Vᵀ·S⁻¹) %.2f s, "
                "error2/total %.4e\n", wh.cholesky ? "cholesky" : "eigen", t_wh, static_cast<long long>(opt.power_iters),
                seconds_since(t), d.error2(rank) / d.total_energy());
  }
  return 0;
}
