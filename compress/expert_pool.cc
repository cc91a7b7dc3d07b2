// compress/expert_pool.cc — a layer's pooled MoE-block inputs and the Hessians of a
// low-coverage expert from them (see expert_pool.h).
#include "compress/expert_pool.h"

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace moetool {

void ExpertPool::add(const float* X, int64_t n, int64_t cols, const float* logits, int64_t E) {
  if (cols_ == 0) cols_ = cols, E_ = logits ? E : 0;
  if (cols != cols_ || (logits ? E : 0) != E_)
    fail("expert pool: rows of ", cols, " columns and ", E, " router logits after ", cols_, " and ", E_);
  for (int64_t i = 0; i < n; ++i, ++seen_) {
    if (seen_ % stride_ != 0) continue;
    if (rows_ == cap_) {  // full: keep every other row, sample half as often from now on
      for (int64_t r = 0; r < rows_ / 2; ++r) {
        std::copy(x_.begin() + 2 * r * cols_, x_.begin() + (2 * r + 1) * cols_, x_.begin() + r * cols_);
        std::copy(p_.begin() + 2 * r * E_, p_.begin() + (2 * r + 1) * E_, p_.begin() + r * E_);
      }
      rows_ /= 2;
      x_.resize(static_cast<size_t>(rows_ * cols_));
      p_.resize(static_cast<size_t>(rows_ * E_));
      stride_ *= 2;
      if (seen_ % stride_ != 0) continue;
    }
    x_.insert(x_.end(), X + i * cols, X + (i + 1) * cols);
    if (E_) {  // softmax of the row's logits
      const float* z = logits + i * E_;
      const float mx = *std::max_element(z, z + E_);
      double s = 0;
      for (int64_t e = 0; e < E_; ++e) s += std::exp(static_cast<double>(z[e]) - mx);
      for (int64_t e = 0; e < E_; ++e) p_.push_back(static_cast<float>(std::exp(static_cast<double>(z[e]) - mx) / s));
    }
    ++rows_;
  }
}

std::vector<double> pooled_hessian(const ExpertPool& pool, const WeightSource& w, Role role, int64_t layer,
                                   int64_t expert) {
  const int64_t n = pool.rows();
  std::vector<double> A;  // [n, c] the linear's inputs
  int64_t c = pool.cols();
  if (role == Role::ExpertDown) {
    const auto g = w.matrix(Role::ExpertGate, layer, expert), u = w.matrix(Role::ExpertUp, layer, expert);
    c = g->rows();
    std::vector<float> G(static_cast<size_t>(n * c)), U(G.size());
    g->matmul(pool.data().data(), n, G.data());
    u->matmul(pool.data().data(), n, U.data());
    A.resize(G.size());
    for (size_t i = 0; i < G.size(); ++i) A[i] = G[i] / (1.0f + std::exp(-G[i])) * U[i];
  } else {
    A.assign(pool.data().begin(), pool.data().end());
  }
  for (int64_t t = 0; t < n; ++t) {  // row t scaled by √p_te: Σ p_te a aᵀ
    const double s = std::sqrt(static_cast<double>(pool.prob(t, expert)));
    for (int64_t j = 0; j < c; ++j) A[static_cast<size_t>(t * c + j)] *= s;
  }
  std::vector<double> H(static_cast<size_t>(c * c), 0.0);
  if (n == 0) return H;
  // H = AᵀA with Eigen on the calling thread (callers run experts in parallel OpenMP threads, where
  // OpenBLAS's own threads would spin against them).
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMat> Hm(H.data(), c, c);
  Hm.selfadjointView<Eigen::Upper>().rankUpdate(Eigen::Map<const RowMat>(A.data(), n, c).transpose());
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < i; ++j) H[static_cast<size_t>(i * c + j)] = H[static_cast<size_t>(j * c + i)];
  return H;
}

}  // namespace moetool
