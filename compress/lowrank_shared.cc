// compress/lowrank_shared.cc — shared-basis and delta factorisations (see lowrank_shared.h).
#include "compress/lowrank_shared.h"

#include <cmath>

#include <Eigen/Dense>

#include "core/error.h"

namespace moetool::svd {

namespace {
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}

lowrank::Decomposition shared_decomposition(const std::vector<const float*>& W, const std::vector<double>& f,
                                            int64_t rows, int64_t cols, SharedSide side, int64_t max_rank,
                                            const lowrank::SvdOptions& opt, const double* gram) {
  check(W.size() == f.size() && !W.empty(), "svd: ", W.size(), " experts with ", f.size(), " weights");
  // Stack [√f_e·W_e] (input side: [E·rows, cols]) or [√f_e·W_eᵀ] (output side: [E·cols, rows]); the
  // stack's right singular vectors are the shared basis.
  const int64_t E = static_cast<int64_t>(W.size());
  const int64_t n = side == SharedSide::Input ? cols : rows, m = side == SharedSide::Input ? rows : cols;
  RowMat S(E * m, n);
  for (int64_t e = 0; e < E; ++e) {
    const float s = static_cast<float>(std::sqrt(std::max(f[static_cast<size_t>(e)], 0.0)));
    const Eigen::Map<const RowMat> w(W[static_cast<size_t>(e)], rows, cols);
    if (side == SharedSide::Input) S.middleRows(e * m, m) = s * w;
    else S.middleRows(e * m, m) = s * w.transpose();
  }
  return lowrank::decompose(S.data(), E * m, n, side == SharedSide::Input ? gram : nullptr, max_rank, opt);
}

void shared_factors(const lowrank::Decomposition& d, int64_t r, SharedSide side, const std::vector<const float*>& W,
                    int64_t rows, int64_t cols, std::vector<float>& shared, std::vector<std::vector<float>>& own,
                    const double* gram, double damp) {
  std::vector<float> U, B;  // B [r, n]: orthonormal rows, the basis (whitened: V in raw input coordinates)
  d.factors(r, U, B);
  const int64_t n = side == SharedSide::Input ? cols : rows;
  const Eigen::Map<const RowMat> basis(B.data(), r, n);
  own.clear();
  if (side == SharedSide::Input && gram) {
    // U_e = W_e·G·Vᵀ·(V·G·Vᵀ)⁻¹ in double, G the damped Gram.
    using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    RowMatD G = Eigen::Map<const RowMatD>(gram, cols, cols);
    G.diagonal().array() += damp * G.diagonal().mean();
    const RowMatD V = basis.cast<double>();
    const RowMatD GVt = G * V.transpose();                      // [cols, r]
    const Eigen::LDLT<Eigen::MatrixXd> M((V * GVt).eval());     // V·G·Vᵀ [r, r], symmetric positive definite
    const RowMatD P = M.solve(GVt.transpose()).transpose();     // G·Vᵀ·(V·G·Vᵀ)⁻¹ [cols, r]
    shared = B;
    for (const float* w : W) {
      std::vector<float> u(static_cast<size_t>(rows * r));
      Eigen::Map<RowMat>(u.data(), rows, r) = (Eigen::Map<const RowMat>(w, rows, cols).cast<double>() * P).cast<float>();
      own.push_back(std::move(u));
    }
    return;
  }
  if (side == SharedSide::Input) {
    shared = B;  // V [r, cols]
    for (const float* w : W) {
      std::vector<float> u(static_cast<size_t>(rows * r));
      Eigen::Map<RowMat>(u.data(), rows, r) = Eigen::Map<const RowMat>(w, rows, cols) * basis.transpose();
      own.push_back(std::move(u));
    }
  } else {
    shared.assign(static_cast<size_t>(rows * r), 0.0f);  // U [rows, r] = Bᵀ
    Eigen::Map<RowMat>(shared.data(), rows, r) = basis.transpose();
    for (const float* w : W) {
      std::vector<float> v(static_cast<size_t>(r * cols));
      Eigen::Map<RowMat>(v.data(), r, cols) = basis * Eigen::Map<const RowMat>(w, rows, cols);
      own.push_back(std::move(v));
    }
  }
}

std::vector<float> weighted_mean(const std::vector<const float*>& W, const std::vector<double>& f, int64_t rows,
                                 int64_t cols) {
  double total = 0;
  for (double x : f) total += std::max(x, 0.0);
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<double> acc(n, 0.0);
  for (size_t e = 0; e < W.size(); ++e) {
    const double w = total > 0 ? std::max(f[e], 0.0) / total : 1.0 / static_cast<double>(W.size());
    for (size_t i = 0; i < n; ++i) acc[i] += w * W[e][i];
  }
  return std::vector<float>(acc.begin(), acc.end());
}

}  // namespace moetool::svd
