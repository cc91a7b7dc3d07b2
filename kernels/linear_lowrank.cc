// kernels/linear_lowrank.cc — low-rank weight matrices W = U·V (+ base) (see linear_lowrank.h).
#include "kernels/linear_lowrank.h"

#include <cstring>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"

namespace moetool {
namespace {

class LowRankMatrix final : public WeightMatrix {
 public:
  // Tensors already float32 (u_, v_, base_ if has_base); `stored_bytes` of their stored forms.
  LowRankMatrix(Tensor u, Tensor v, std::optional<Tensor> base, uint64_t stored_bytes)
      : u_(std::move(u)), v_(std::move(v)), base_(std::move(base)), stored_bytes_(stored_bytes) {
    f_.rank = u_.shape[1];
    f_.U = u_.as<const float>();
    f_.V = v_.as<const float>();
    f_.base = base_ ? base_->as<const float>() : nullptr;
  }
  int64_t rows() const override { return u_.shape[0]; }
  int64_t cols() const override { return v_.shape[1]; }
  // Y = (X·Vᵀ)·Uᵀ + beta·Y (+ X·baseᵀ): two thin GEMMs through a [n, r] intermediate.
  void matmul(const float* X, int64_t n, float* Y, float beta) const override {
    if (n == 0) return;
    const int64_t R = rows(), C = cols(), r = f_.rank;
    std::vector<float> T(static_cast<size_t>(n * r));  // per call: matmul may run on several threads
    ops::gemm_nt(n, r, C, X, C, f_.V, C, T.data(), r, 1.0f, 0.0f);
    ops::gemm_nt(n, R, r, T.data(), r, f_.U, r, Y, R, 1.0f, beta);
    if (f_.base) ops::gemm_nt(n, R, C, X, C, f_.base, C, Y, R, 1.0f, 1.0f);
  }
  void to_dense(float* out) const override {
    const int64_t R = rows(), C = cols();
    if (f_.base) std::memcpy(out, f_.base, static_cast<size_t>(R * C) * sizeof(float));
    ops::gemm_nn(R, C, f_.rank, f_.U, f_.rank, f_.V, C, out, C, 1.0f, f_.base ? 1.0f : 0.0f);
  }
  std::string storage() const override { return str("lowrank(r=", f_.rank, ")", f_.base ? "+base" : ""); }
  uint64_t stored_bytes() const override { return stored_bytes_; }
  const LowRankFactors* lowrank() const override { return &f_; }

 private:
  Tensor u_, v_;
  std::optional<Tensor> base_;
  uint64_t stored_bytes_;
  LowRankFactors f_;
};

// t as float32: in place when it already is, else converted once.
Tensor as_f32(const Tensor& t) { return t.dtype == DType::F32 ? t : t.to(DType::F32); }

}  // namespace

std::shared_ptr<const WeightMatrix> make_lowrank_matrix(Tensor U, Tensor V, std::optional<Tensor> base,
                                                        const std::string& name) {
  auto check_float = [&](const Tensor& t, const char* what) {
    if (t.shape.size() != 2)
      fail("low-rank matrix '", name, "': ", what, " must be 2-D, got shape ", shape_str(t.shape));
    if (!is_float(t.dtype))
      fail("low-rank matrix '", name, "': ", what, ": expected a float dtype, got ", dtype_name(t.dtype));
  };
  check_float(U, "U");
  check_float(V, "V");
  if (U.shape[1] != V.shape[0] || U.shape[1] < 1)
    fail("low-rank matrix '", name, "': U ", shape_str(U.shape), " and V ", shape_str(V.shape),
         " do not share a rank (expected [rows, r] and [r, cols], r ≥ 1)");
  uint64_t bytes = U.nbytes() + V.nbytes();
  if (base) {
    check_float(*base, "base");
    if (base->shape != Shape{U.shape[0], V.shape[1]})
      fail("low-rank matrix '", name, "': base shape ", shape_str(base->shape), ", expected ",
           shape_str({U.shape[0], V.shape[1]}));
    bytes += base->nbytes();
    base = as_f32(*base);
  }
  return std::make_shared<LowRankMatrix>(as_f32(U), as_f32(V), std::move(base), bytes);
}

}  // namespace moetool
