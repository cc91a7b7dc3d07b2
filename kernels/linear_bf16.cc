// kernels/linear_bf16.cc — make_bf16_matrix (kernels/linear_bf16.h).
#include "kernels/linear_bf16.h"

#include <string>
#include <vector>

#include "kernels/backend_shared.h"
#include "kernels/ops.h"

namespace moetool {
namespace {

class Bf16Matrix final : public WeightMatrix {
 public:
  explicit Bf16Matrix(const WeightMatrix& m)
      : rows_(m.rows()), cols_(m.cols()), w_(static_cast<size_t>(rows_ * cols_)), inner_(m.storage()) {
    m.to_dense(w_.data());
    for (float& x : w_) x = shared::round_bf16(x);
  }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  void matmul(const float* X, int64_t n, float* Y, float beta) const override {
    std::vector<float> xr(X, X + n * cols_);  // [n, cols] rounded
    for (float& x : xr) x = shared::round_bf16(x);
    ops::gemm_nt(n, rows_, cols_, xr.data(), cols_, w_.data(), cols_, Y, rows_, 1.0f, beta);
  }
  void to_dense(float* out) const override { std::copy(w_.begin(), w_.end(), out); }
  std::string storage() const override { return "bf16(" + inner_ + ")"; }
  uint64_t stored_bytes() const override { return static_cast<uint64_t>(rows_ * cols_) * 2; }

 private:
  int64_t rows_, cols_;
  std::vector<float> w_;  // [rows, cols], values representable in bf16
  std::string inner_;
};

}  // namespace

std::shared_ptr<const WeightMatrix> make_bf16_matrix(const WeightMatrix& m) { return std::make_shared<Bf16Matrix>(m); }

}  // namespace moetool
