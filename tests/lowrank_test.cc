// tests/lowrank_test.cc — kernels/lowrank.h against float64 references (Eigen): full rank reproduces W
// (plain and whitened, exact and randomized SVD); the randomized SVD reaches the Eckart–Young optimum
// on a known decaying spectrum and error2 reports the achieved error; whitened truncation beats
// plain on correlated inputs, is optimal for ‖(W − Ŵ)Xᵀ‖ and error2 is that error (plus damping);
// whiten's Cholesky and eigen-fallback factors; bad input is refused with one-line messages.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/error.h"
#include "kernels/lowrank.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using lowrank::decompose;
using lowrank::Decomposition;
using lowrank::SvdOptions;
using lowrank::whiten;
using lowrank::Whitening;
using testing::error_of;
using testing::random_normal;
using Mat = Eigen::MatrixXd;
using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

Mat to_mat(const std::vector<float>& v, int64_t r, int64_t c) {
  return Eigen::Map<const RowMatF>(v.data(), r, c).cast<double>();
}
std::vector<float> to_floats(const Mat& m) {
  std::vector<float> v(static_cast<size_t>(m.size()));
  Eigen::Map<RowMatF>(v.data(), m.rows(), m.cols()) = m.cast<float>();
  return v;
}
// Row-major double copy (the layout whiten and decompose read a gram in).
std::vector<double> to_row_major(const Mat& m) {
  std::vector<double> v(static_cast<size_t>(m.size()));
  Eigen::Map<RowMatD>(v.data(), m.rows(), m.cols()) = m;
  return v;
}
Mat gaussian(int64_t r, int64_t c, uint64_t seed) {
  return to_mat(random_normal(static_cast<size_t>(r * c), seed), r, c);
}
// U·V of a decomposition at rank r, in double.
Mat product(const Decomposition& d, int64_t r) {
  std::vector<float> U, V;
  d.factors(r, U, V);
  return to_mat(U, d.rows(), r) * to_mat(V, r, d.cols());
}
// Columns of an orthonormal basis of a Gaussian [n, k] (k ≤ n).
Mat orthonormal(int64_t n, int64_t k, uint64_t seed) {
  return gaussian(n, k, seed).householderQr().householderQ() * Mat::Identity(n, k);
}
// Eckart–Young: Σ_{i≥r} σ_i² of A, from an exact double SVD.
double optimal_tail(const Mat& A, int64_t r) {
  const Eigen::VectorXd s = A.bdcSvd().singularValues();
  return s.tail(s.size() - r).squaredNorm();
}

// A float32 SVD is backward stable: ‖A − UΣVᵀ‖₂ ≤ c·p·ε·‖A‖₂, p = 48 the larger dimension,
// ε = 6e-8, ‖A‖₂ ≈ √48 + √32 ≈ 12.6 ≈ 3·max|A| for these Gaussians: 48·6e-8·3 ≈ 1e-5 of max|A| per
// unit of c; 1e-4 allows c ≈ 10 (the factors' own float rounding and the randomized path's QR included).
constexpr double kRel = 1e-4;

TEST(LowRank, FullRankReproducesWPlainAndWhitened) {
  const int64_t rows = 48, cols = 32, N = 256;
  const std::vector<float> w = random_normal(static_cast<size_t>(rows * cols), 1);
  const Mat W = to_mat(w, rows, cols);
  const double max_w = W.cwiseAbs().maxCoeff();
  for (const double exact_above : {0.25, 1.0}) {  // 32 > 0.25·32: exact LAPACK; 32 ≤ 1.0·32: randomized
    SCOPED_TRACE(exact_above);
    SvdOptions opt;
    opt.exact_above = exact_above;
    const Decomposition d = decompose(w.data(), rows, cols, nullptr, cols, opt);
    EXPECT_FALSE(d.whitened());
    ASSERT_EQ(d.max_rank(), cols);
    EXPECT_TRUE(std::is_sorted(d.singular_values().rbegin(), d.singular_values().rend()));
    EXPECT_NEAR(d.total_energy(), W.squaredNorm(), 1e-12 * W.squaredNorm());  // both sums in double
    EXPECT_LE((product(d, cols) - W).cwiseAbs().maxCoeff(), kRel * max_w);
    // Σσ² in float32 agrees with ‖W‖² to about k·ε relative: the full-rank tail is ~0.
    EXPECT_LE(d.error2(cols), 1e-5 * d.total_energy());
    EXPECT_DOUBLE_EQ(d.error2(0), d.total_energy());
  }
  // Whitened: mildly correlated inputs X [N, cols] = Z·(I + 0.2·R).
  const Mat X = gaussian(N, cols, 2) * (Mat::Identity(cols, cols) + 0.2 * gaussian(cols, cols, 3));
  const Mat G = X.transpose() * X;
  const std::vector<double> g = to_row_major(G);
  const Decomposition d = decompose(w.data(), rows, cols, g.data(), cols);
  EXPECT_TRUE(d.whitened());
  // The error of the SVD of W·S is relative to ‖W‖‖S‖ and V = Vrᵀ·S⁻¹ multiplies it by ‖S⁻¹‖: the
  // plain bound times cond(S) = √cond(G_damped).
  const Mat Gd = G + 0.01 * G.diagonal().mean() * Mat::Identity(cols, cols);
  const Eigen::VectorXd ev = Gd.selfadjointView<Eigen::Lower>().eigenvalues();
  const double cond_s = std::sqrt(ev.maxCoeff() / ev.minCoeff());
  EXPECT_LT(cond_s, 50) << "the test's inputs are meant to be mildly conditioned (observed 18)";
  EXPECT_LE((product(d, cols) - W).cwiseAbs().maxCoeff(), kRel * cond_s * max_w);
}

TEST(LowRank, RandomizedReachesEckartYoungOnDecayingSpectrum) {
  // W [256, 512] = Q1·diag(σ)·Q2ᵀ, σ_i = exp(−i/20) + 0.01·u_i (u uniform in [0, 1)): a slow decay
  // with a noise floor, the hard case for a range finder.
  const int64_t rows = 256, cols = 512;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Eigen::VectorXd sigma(rows);
  for (int64_t i = 0; i < rows; ++i) sigma(i) = std::exp(-static_cast<double>(i) / 20) + 0.01 * u(rng);
  const Mat Wd = orthonormal(rows, rows, 11) * sigma.asDiagonal() * orthonormal(cols, rows, 12).transpose();
  const std::vector<float> w = to_floats(Wd);
  const Mat W = to_mat(w, rows, cols);  // the float matrix decompose sees; its exact spectrum is the reference
  SvdOptions opt;
  opt.exact_above = 1.0;  // max_rank ≤ 1.0·min(rows, cols) always: the randomized path
  for (const int64_t r : {16, 32, 64}) {
    SCOPED_TRACE(r);
    const Decomposition d = decompose(w.data(), rows, cols, nullptr, r, opt);
    const double opt_err = optimal_tail(W, r), achieved = (W - product(d, r)).squaredNorm();
    // 4 power iterations raise the spectrum to the 9th power: σ_{r+10}/σ_r ≈ e^{−1/2} becomes ≈ 0.01
    // (observed ratios to the optimum: 1.00003, 1.00001, 1.00004 at r = 16, 32, 64).
    EXPECT_LE(achieved, 1.01 * opt_err) << "optimal " << opt_err;
    EXPECT_GE(achieved, (1 - 1e-4) * opt_err);  // Eckart–Young: nothing beats it (float rounding aside)
    // error2 = ‖W‖² − Σσ²: at r = 64 the tail is ~0.3 % of ‖W‖², so float32 σ² (relative ~1e-6
    // each) cancel to ~1e-3 of the error at worst (observed 1.6e-4); 5e-3 leaves a margin.
    EXPECT_NEAR(d.error2(r), achieved, 5e-3 * achieved);
    // Lower ranks of the same decomposition are its leading triplets: error2 is their error too.
    const int64_t h = r / 2;
    const double achieved_h = (W - product(d, h)).squaredNorm();
    EXPECT_NEAR(d.error2(h), achieved_h, 5e-3 * achieved_h);
    EXPECT_LE(achieved_h, 1.01 * optimal_tail(W, h));
    EXPECT_GT(d.error2(h), d.error2(r));
  }
}

TEST(LowRank, WhitenedTruncationBeatsPlainOnCorrelatedInputs) {
  // X [N, cols] = Z·diag(exp(−i/8))·R: strongly correlated columns, a few directions carry the energy.
  const int64_t rows = 48, cols = 64, N = 512, r = 8;
  Eigen::VectorXd scale(cols);
  for (int64_t i = 0; i < cols; ++i) scale(i) = std::exp(-static_cast<double>(i) / 8);
  const Mat X = gaussian(N, cols, 21) * scale.asDiagonal() * gaussian(cols, cols, 22);
  const Mat G = X.transpose() * X;
  const std::vector<double> g = to_row_major(G);
  const std::vector<float> w = random_normal(static_cast<size_t>(rows * cols), 23);
  const Mat W = to_mat(w, rows, cols);
  auto out_err = [&](const Decomposition& d) { return ((W - product(d, r)) * X.transpose()).squaredNorm(); };

  SvdOptions opt;
  opt.damp = 0;
  const Decomposition white = decompose(w.data(), rows, cols, g.data(), r, opt);
  const Decomposition plain = decompose(w.data(), rows, cols, nullptr, r, opt);
  const double ew = out_err(white), ep = out_err(plain);
  // Observed: whitened/plain output error² ≈ 0.15 (‖·‖_F ratio ≈ 0.38); the plain SVD spends its rank
  // on directions of W the inputs barely excite.
  EXPECT_LT(ew, 0.2 * ep) << "whitened " << ew << " plain " << ep;
  // Optimal for the output error: Eckart–Young on W·Xᵀ (= the spectrum of W·S for any S·Sᵀ = G).
  EXPECT_LE(ew, 1.01 * optimal_tail(W * X.transpose(), r));
  // Undamped: error2 is ‖(W − Ŵ)·Xᵀ‖². The tail is ~9 % of tr(W G Wᵀ): float σ² cancellation costs
  // ~1e-5 relative (observed 6e-6); 2e-3 leaves a margin for the factors' own float rounding.
  EXPECT_NEAR(white.error2(r), ew, 2e-3 * ew);
  EXPECT_NEAR(white.total_energy(), (W * X.transpose()).squaredNorm(), 1e-9 * white.total_energy());

  // Damped: error2 is ‖(W − Ŵ)S‖² with S·Sᵀ = G + δI, i.e. the output error plus δ·‖W − Ŵ‖².
  const Decomposition damped = decompose(w.data(), rows, cols, g.data(), r);  // default damp 0.01
  const double delta = 0.01 * G.diagonal().mean();
  const Mat E = W - product(damped, r);
  const double want = (E * X.transpose()).squaredNorm() + delta * E.squaredNorm();
  EXPECT_NEAR(damped.error2(r), want, 2e-3 * want);
}

TEST(LowRank, WhitenCholeskyAndEigenFallback) {
  // SPD gram (N > n, damp 0): Cholesky, S lower triangular, S·Sᵀ = G to double rounding (n·ε·max|G|).
  const int64_t n = 40;
  const Mat X = gaussian(200, n, 31);
  const Mat G = X.transpose() * X;
  const std::vector<double> g = to_row_major(G);
  const Whitening a = whiten(g.data(), n, 0.0);
  EXPECT_TRUE(a.cholesky);
  const Mat S = Eigen::Map<const RowMatD>(a.S.data(), n, n);
  EXPECT_EQ(S.triangularView<Eigen::StrictlyUpper>().toDenseMatrix().cwiseAbs().maxCoeff(), 0.0);
  EXPECT_LE((S * S.transpose() - G).cwiseAbs().maxCoeff(), 1e-12 * G.cwiseAbs().maxCoeff());
  // Damping adds δ = damp·mean(diag G) to the diagonal.
  const Whitening ad = whiten(g.data(), n, 0.1);
  const Mat Sd = Eigen::Map<const RowMatD>(ad.S.data(), n, n);
  EXPECT_DOUBLE_EQ(ad.delta, 0.1 * G.diagonal().mean());
  EXPECT_LE((Sd * Sd.transpose() - G - ad.delta * Mat::Identity(n, n)).cwiseAbs().maxCoeff(),
            1e-12 * G.cwiseAbs().maxCoeff());
  // apply / apply_inverse are M·S and M·S⁻¹ (cond(S) ≈ 2.5 here: 1e-12 is ~1e4·ε).
  const Mat M = gaussian(5, n, 32);
  std::vector<double> m = to_row_major(M);
  a.apply(m.data(), 5);
  EXPECT_LE((Eigen::Map<const RowMatD>(m.data(), 5, n) - M * S).cwiseAbs().maxCoeff(),
            1e-12 * (M * S).cwiseAbs().maxCoeff());
  a.apply_inverse(m.data(), 5);
  EXPECT_LE((Eigen::Map<const RowMatD>(m.data(), 5, n) - M).cwiseAbs().maxCoeff(), 1e-12 * M.cwiseAbs().maxCoeff());

  // Rank-deficient gram (N = 20 < n = 48), no damping: exactly singular → the eigen path, with
  // eigenvalues clamped at 1e-6·λ_max, so S·Sᵀ differs from G by at most that in any direction.
  const int64_t n2 = 48, N2 = 20, rows = 40;
  const Mat X2 = gaussian(N2, n2, 33);
  const Mat G2 = X2.transpose() * X2;
  const std::vector<double> g2 = to_row_major(G2);
  const Whitening b = whiten(g2.data(), n2, 0.0);
  EXPECT_FALSE(b.cholesky);
  ASSERT_EQ(b.eig.size(), static_cast<size_t>(n2));
  const double lmax = *std::max_element(b.eig.begin(), b.eig.end());
  EXPECT_GE(*std::min_element(b.eig.begin(), b.eig.end()), 1e-6 * lmax * (1 - 1e-12));
  for (double v : b.S) ASSERT_TRUE(std::isfinite(v));
  const Mat S2 = Eigen::Map<const RowMatD>(b.S.data(), n2, n2);
  EXPECT_LE((S2 * S2.transpose() - G2).cwiseAbs().maxCoeff(), 1.01e-6 * lmax);
  std::vector<double> m2 = to_row_major(gaussian(3, n2, 34));
  const std::vector<double> m2_in = m2;
  b.apply(m2.data(), 3);
  b.apply_inverse(m2.data(), 3);
  // The round trip passes through 1/√(1e-6·λ_max): cond(S) ≈ 1e3, so ~1e3·n·ε ≈ 1e-11.
  for (size_t i = 0; i < m2.size(); ++i) ASSERT_NEAR(m2[i], m2_in[i], 1e-9) << i;
  // Full rank on the same gram reproduces W on the inputs: ‖(U·V − W)·X2ᵀ‖ relative to ‖W·X2ᵀ‖. The
  // SVD's error on W·S is ≤ c·p·ε·‖W·S‖ and S⁻¹·X2ᵀ has norm ≈ 1 on the data's span: ~1e-5.
  const std::vector<float> w = random_normal(static_cast<size_t>(rows * n2), 35);
  const Mat W = to_mat(w, rows, n2);
  SvdOptions opt;
  opt.damp = 0;
  const Decomposition d = decompose(w.data(), rows, n2, g2.data(), rows, opt);
  std::vector<float> U, V;
  d.factors(rows, U, V);
  for (float v : U) ASSERT_TRUE(std::isfinite(v));
  for (float v : V) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LE(((product(d, rows) - W) * X2.transpose()).norm(), 1e-4 * (W * X2.transpose()).norm());
  // The default damping makes the same gram positive definite: Cholesky again.
  EXPECT_TRUE(whiten(g2.data(), n2, SvdOptions{}.damp).cholesky);
}

TEST(LowRank, RejectsBadInput) {
  const int64_t rows = 12, cols = 8;
  std::vector<float> w = random_normal(static_cast<size_t>(rows * cols), 41);
  EXPECT_NE(error_of([&] { decompose(w.data(), rows, cols, nullptr, 0); }).find("max_rank 0 is out of range 1..8"),
            std::string::npos);
  EXPECT_NE(error_of([&] { decompose(w.data(), rows, cols, nullptr, 9); }).find("max_rank 9 is out of range 1..8"),
            std::string::npos);
  std::vector<float> wn = w;
  wn[static_cast<size_t>(3 * cols + 5)] = NAN;
  const std::string nan_msg = error_of([&] { decompose(wn.data(), rows, cols, nullptr, 4); });
  EXPECT_NE(nan_msg.find("non-finite value"), std::string::npos) << nan_msg;
  EXPECT_NE(nan_msg.find("row 3, col 5"), std::string::npos) << nan_msg;
  const Mat X = gaussian(30, cols, 42);
  std::vector<double> g = to_row_major(X.transpose() * X);
  g[static_cast<size_t>(2 * cols + 7)] = NAN;
  const std::string gram_msg = error_of([&] { decompose(w.data(), rows, cols, g.data(), 4); });
  EXPECT_NE(gram_msg.find("gram [8, 8] has a non-finite value (nan) at (2, 7)"), std::string::npos) << gram_msg;
  std::vector<double> zero(static_cast<size_t>(cols * cols), 0.0);
  EXPECT_NE(error_of([&] { whiten(zero.data(), cols, 0.01); }).find("cannot be factored"), std::string::npos);
  std::vector<double> asym = to_row_major(X.transpose() * X);
  asym[1] += 1.0;
  EXPECT_NE(error_of([&] { whiten(asym.data(), cols, 0.01); }).find("not symmetric"), std::string::npos);
  const Decomposition d = decompose(w.data(), rows, cols, nullptr, 4);
  std::vector<float> U, V;
  EXPECT_NE(error_of([&] { d.factors(5, U, V); }).find("rank 5 is out of range 0..4"), std::string::npos);
  EXPECT_NE(error_of([&] { d.error2(-1); }).find("rank -1 is out of range"), std::string::npos);
  const Whitening wh = whiten(to_row_major(X.transpose() * X).data(), cols, 0.01);
  EXPECT_NE(error_of([&] { lowrank::decompose_whitened(w.data(), cols, rows, wh, 4); }).find("expected cols = 12"),
            std::string::npos);
}

}  // namespace
}  // namespace moetool
