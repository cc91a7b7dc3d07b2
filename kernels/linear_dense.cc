// kernels/linear_dense.cc — dense float weight matrices (see linear.h).
#include <cstring>

#include "core/error.h"
#include "kernels/linear.h"
#include "kernels/ops.h"

namespace moetool {
namespace {

class DenseMatrix final : public WeightMatrix {
 public:
  DenseMatrix(Tensor f32, DType stored) : w_(std::move(f32)), stored_(stored) {}
  int64_t rows() const override { return w_.shape[0]; }
  int64_t cols() const override { return w_.shape[1]; }
  void matmul(const float* X, int64_t n, float* Y, float beta) const override {
    ops::gemm_nt(n, rows(), cols(), X, cols(), w_.as<const float>(), cols(), Y, rows(), 1.0f, beta);
  }
  void to_dense(float* out) const override { std::memcpy(out, w_.data, w_.nbytes()); }
  std::string storage() const override { return dtype_name(stored_); }
  uint64_t stored_bytes() const override { return static_cast<uint64_t>(w_.numel()) * dtype_size(stored_); }

 private:
  Tensor w_;  // [rows, cols] f32
  DType stored_;
};

}  // namespace

std::shared_ptr<const WeightMatrix> make_dense_matrix(const Tensor& t, const std::string& name) {
  if (t.shape.size() != 2) fail("tensor '", name, "': expected a 2-D weight matrix, got shape ", shape_str(t.shape));
  if (!is_float(t.dtype)) fail("tensor '", name, "': expected a float dtype, got ", dtype_name(t.dtype));
  if (t.dtype == DType::F32) return std::make_shared<DenseMatrix>(t, DType::F32);
  return std::make_shared<DenseMatrix>(t.to(DType::F32), t.dtype);
}

}  // namespace moetool
