// compress/hessian_collect.cc — input second moments of a layer's linears (see hessian_collect.h).
#include "compress/hessian_collect.h"


#include <algorithm>
#include <cmath>

#include <Eigen/Dense>

#include "compress/quantize_int.h"

namespace moetool {

Role input_role(Role r) {
  switch (r) {
    case Role::K: case Role::V: return Role::Q;
    case Role::Up: return Role::Gate;
    case Role::ExpertUp: return Role::ExpertGate;
    case Role::SharedUp: return Role::SharedGate;
    default: return r;
  }
}

void symmetrize(std::vector<double>& H, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j) H[static_cast<size_t>(i * n + j)] = H[static_cast<size_t>(j * n + i)];
}

// One product of the stacked [ΔW; W] (float64) with H, in row blocks to bound the scratch memory:
// Eigen's GEMM, which runs on the calling thread inside an OpenMP region (the callers quantize
// several linears in parallel; OpenBLAS would start its own threads there and spin against them).
double relative_output_error(const float* W, const float* Wq, int64_t rows, int64_t cols, const std::vector<double>& H) {
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t stride = std::max<int64_t>(1, rows / 256), n = (rows + stride - 1) / stride;  // rows used
  const int64_t block = std::max<int64_t>(1, std::min<int64_t>(n, (int64_t{1} << 22) / std::max<int64_t>(cols, 1)));
  const Eigen::Map<const RowMat> Hm(H.data(), cols, cols);
  RowMat A(2 * block, cols), P;
  double num = 0, den = 0;
  for (int64_t r0 = 0; r0 < n; r0 += block) {
    const int64_t m = std::min(block, n - r0);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < cols; ++j) {
        const size_t i = static_cast<size_t>((r0 + r) * stride * cols + j);
        A(r, j) = static_cast<double>(Wq[i]) - W[i];
        A(m + r, j) = W[i];
      }
    P.noalias() = A.topRows(2 * m) * Hm;
    for (int64_t r = 0; r < 2 * m; ++r) (r < m ? num : den) += A.row(r).dot(P.row(r));
  }
  return den > 0 ? std::sqrt(std::max(num, 0.0) / den) : 0.0;
}

void HessianCollector::on_linear_input(int64_t l, Role role, int64_t expert, const float* X, int64_t n, int64_t cols) {
  if (role == Role::Router && pool) router_x_.assign(X, X + n * cols);  // pooled with its logits
  if (!int_quantizable_role(role) || input_role(role) != role) return;
  add(HessianKey{role, l, expert}, X, n, cols);
  // The engine does not report the shared expert's down_proj input: silu(x·Wgᵀ)·(x·Wuᵀ).
  if (role == Role::SharedGate) {
    if (!sg_) {
      sg_ = w_.matrix(Role::SharedGate, layer_);
      su_ = w_.matrix(Role::SharedUp, layer_);
    }
    const int64_t I = sg_->rows();
    std::vector<float> G(static_cast<size_t>(n * I)), U(static_cast<size_t>(n * I));
    sg_->matmul(X, n, G.data());
    su_->matmul(X, n, U.data());
    for (size_t i = 0; i < G.size(); ++i) G[i] = G[i] / (1.0f + std::exp(-G[i])) * U[i];
    add(HessianKey{Role::SharedDown, l, -1}, G.data(), n, I);
  }
}

void HessianCollector::on_router(int64_t, const float* logits, const int32_t*, const float*, int64_t n, int64_t E,
                                 int64_t) {
  if (pool && !router_x_.empty()) pool->add(router_x_.data(), n, static_cast<int64_t>(router_x_.size()) / n, logits, E);
  router_x_.clear();
}

void HessianCollector::add(const HessianKey& k, const float* X, int64_t n, int64_t cols) {
  Moments& m = moments[k];
  m.count += n;
  if (diag_) {
    if (m.H.empty()) m.H.assign(static_cast<size_t>(cols), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < cols; ++j) m.H[static_cast<size_t>(j)] += static_cast<double>(X[i * cols + j]) * X[i * cols + j];
    return;
  }
  if (m.H.empty()) m.H.assign(static_cast<size_t>(cols * cols), 0.0);
  xd_.resize(static_cast<size_t>(n * cols));
  for (size_t i = 0; i < xd_.size(); ++i) xd_[i] = X[i];
  // H (row-major upper) += Xᵀ X with Eigen on OpenMP's threads: OpenBLAS's own threads, started
  // once per chunk here between the engine's OpenMP regions, spin against them (3x slower GPTQ
  // passes measured on 2 cores).
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<RowMat>(m.H.data(), cols, cols)
      .selfadjointView<Eigen::Upper>()
      .rankUpdate(Eigen::Map<const RowMat>(xd_.data(), n, cols).transpose());
}

void HessianCollector::symmetrize_all() {
  if (diag_) return;
  for (auto& [k, mo] : moments) symmetrize(mo.H, static_cast<int64_t>(std::llround(std::sqrt(static_cast<double>(mo.H.size())))));
}

}  // namespace moetool
