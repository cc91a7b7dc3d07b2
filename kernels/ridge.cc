// kernels/ridge.cc — ridge least squares with the regularisation chosen on held-out rows (see ridge.h).
#include "kernels/ridge.h"

#include <Eigen/Dense>

#include <algorithm>
#include <limits>

#include "core/error.h"

namespace moetool {

namespace {
using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}  // namespace

RidgeRouter fit_ridge_router(const std::vector<float>& X, int64_t T, int64_t H, const std::vector<double>& Y,
                             int64_t E) {
  check(static_cast<int64_t>(X.size()) == T * H && static_cast<int64_t>(Y.size()) == T * E,
        "ridge router: inputs have the wrong size");
  check(T >= 2, "ridge router: needs at least 2 calibration tokens");
  MatD Xd(T, H), Yd(T, E);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) Xd(t, h) = X[static_cast<size_t>(t * H + h)];
    double m = 0;
    for (int64_t e = 0; e < E; ++e) m += Y[static_cast<size_t>(t * E + e)];
    m /= static_cast<double>(E);
    for (int64_t e = 0; e < E; ++e) Yd(t, e) = Y[static_cast<size_t>(t * E + e)] - m;
  }
  std::vector<int64_t> tr, va;
  for (int64_t t = 0; t < T; ++t) (T >= 10 && t % 5 == 4 ? va : tr).push_back(t);
  auto rows = [&](const MatD& M, const std::vector<int64_t>& idx) {
    MatD out(static_cast<int64_t>(idx.size()), M.cols());
    for (size_t i = 0; i < idx.size(); ++i) out.row(static_cast<int64_t>(i)) = M.row(idx[i]);
    return out;
  };
  auto solve = [&](const MatD& Xa, const MatD& Ya, double lam_rel) {
    MatD G = Xa.transpose() * Xa;
    const double base = std::max(G.trace() / static_cast<double>(H), 1e-30);
    G.diagonal().array() += lam_rel * base;
    return MatD(G.ldlt().solve(Xa.transpose() * Ya));  // [H, E]
  };
  auto r2_of = [&](const MatD& Xa, const MatD& Ya, const MatD& W) {
    const MatD P = Xa * W;
    double res = 0, tot = 0;
    for (int64_t e = 0; e < E; ++e) {
      const double mean = Ya.col(e).mean();
      res += (Ya.col(e) - P.col(e)).squaredNorm();
      tot += (Ya.col(e).array() - mean).square().sum();
    }
    return tot > 0 ? 1.0 - res / tot : 0.0;
  };
  RidgeRouter out;
  const std::vector<double> grid = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
  double best_lam = 1e-3, best_r2 = -std::numeric_limits<double>::infinity();
  if (!va.empty()) {
    const MatD Xt = rows(Xd, tr), Yt = rows(Yd, tr), Xv = rows(Xd, va), Yv = rows(Yd, va);
    for (double lam : grid) {
      const double r2 = r2_of(Xv, Yv, solve(Xt, Yt, lam));
      if (r2 > best_r2) {
        best_r2 = r2;
        best_lam = lam;
      }
    }
  }
  const MatD W = solve(Xd, Yd, best_lam);
  if (va.empty()) best_r2 = r2_of(Xd, Yd, W);
  out.W.resize(static_cast<size_t>(E * H));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t h = 0; h < H; ++h) out.W[static_cast<size_t>(e * H + h)] = static_cast<float>(W(h, e));
  out.r2 = best_r2;
  out.lambda = best_lam;
  return out;
}

}  // namespace moetool
