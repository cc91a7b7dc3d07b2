// convert/expert_refit.cc — refit_down (see expert_refit.h): normal equations in double, Cholesky.
#include "convert/expert_refit.h"

#include <Eigen/Dense>

#include "core/error.h"

namespace moetool {

DownRefit refit_down(const float* A, int64_t T, int64_t I, const float* down, int64_t H, const NeuronGroups& groups,
                     const std::vector<int64_t>& shared, const std::vector<std::vector<int32_t>>& sel,
                     const std::vector<std::vector<float>>& w, int64_t k, double ridge) {
  using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  check(T > 0 && I > 0 && H > 0, "expert refit: empty calibration or layer");
  check(static_cast<int64_t>(sel.size()) == T && static_cast<int64_t>(w.size()) == T, "expert refit: routing of ",
        sel.size(), " tokens for ", T);
  // Which expert each neuron belongs to (−1: shared, −2: neither).
  std::vector<int64_t> owner(static_cast<size_t>(I), -2);
  for (int64_t i : shared) owner[static_cast<size_t>(i)] = -1;
  for (size_t e = 0; e < groups.size(); ++e)
    for (int64_t i : groups[e]) owner[static_cast<size_t>(i)] = static_cast<int64_t>(e);
  // Z [T, I] and Y [T, H] = A·downᵀ.
  MatD Z = MatD::Zero(T, I), Y(T, H);
  const Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> Af(A, T, I), Df(down, H, I);
  Y = Af.cast<double>() * Df.cast<double>().transpose();
  std::vector<double> gate(groups.size());
  for (int64_t t = 0; t < T; ++t) {
    std::fill(gate.begin(), gate.end(), 0.0);
    for (size_t j = 0; j < sel[static_cast<size_t>(t)].size(); ++j) {
      const int32_t e = sel[static_cast<size_t>(t)][j];
      if (e >= 0 && static_cast<size_t>(e) < gate.size()) gate[static_cast<size_t>(e)] += w[static_cast<size_t>(t)][j];
    }
    for (int64_t i = 0; i < I; ++i) {
      const int64_t o = owner[static_cast<size_t>(i)];
      const double c = o == -1 ? 1.0 : o >= 0 ? gate[static_cast<size_t>(o)] : 0.0;
      Z(t, i) = c * A[t * I + i];
    }
  }
  // G0: the construction's effective columns.
  MatD G0 = Df.cast<double>();
  for (int64_t i = 0; i < I; ++i) G0.col(i) *= owner[static_cast<size_t>(i)] >= 0 ? static_cast<double>(k) : 1.0;
  const MatD ZtZ = Z.transpose() * Z;
  const double mean_diag = ZtZ.diagonal().mean();
  DownRefit r;
  r.lambda = ridge * (mean_diag > 0 ? mean_diag : 1.0);
  if (r.lambda <= 0) r.lambda = 1e-12;
  MatD M = ZtZ;
  M.diagonal().array() += r.lambda;
  const MatD rhs = Z.transpose() * Y + r.lambda * G0.transpose();  // [I, H]
  const Eigen::LLT<MatD> llt(M);
  check(llt.info() == Eigen::Success, "expert refit: the normal equations are not positive definite");
  const MatD G = llt.solve(rhs).transpose();  // [H, I]
  const double yy = Y.squaredNorm();
  r.err_before = yy > 0 ? (Y - Z * G0.transpose()).squaredNorm() / yy : 0.0;
  r.err_after = yy > 0 ? (Y - Z * G.transpose()).squaredNorm() / yy : 0.0;
  r.G.resize(static_cast<size_t>(H * I));
  for (int64_t h = 0; h < H; ++h)
    for (int64_t i = 0; i < I; ++i) r.G[static_cast<size_t>(h * I + i)] = static_cast<float>(G(h, i));
  return r;
}

}  // namespace moetool
