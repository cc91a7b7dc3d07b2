// kernels/linear_df11.cc — DF11-coded weight matrices (see linear_df11.h).
#include "kernels/linear_df11.h"

#include <mutex>

#include "core/error.h"
#include "formats/df11.h"

namespace moetool {
namespace {

class Df11Matrix final : public WeightMatrix {
 public:
  Df11Matrix(int64_t rows, int64_t cols, const PackedWeight& pw, std::shared_ptr<const void> owner, std::string name)
      : rows_(rows), cols_(cols), pw_(pw), owner_(std::move(owner)), name_(std::move(name)) {
    if (pw_.kind != PackedWeight::Kind::Df11) fail(name_, ": not DF11 storage");
    pw_.what = name_;
    df11_check_blocks(pw_.df11_offsets, pw_.df11_nblocks, pw_.df11_exp_bytes, rows_ * cols_, pw_.df11_block, name_);
    df11_decode_table(pw_.df11_lengths, name_);  // the code lengths form a prefix code
  }
  const PackedWeight* packed() const override { return &pw_; }
  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  std::string storage() const override { return "DF11"; }
  uint64_t stored_bytes() const override {
    const auto nb = static_cast<uint64_t>(pw_.df11_nblocks);
    return 256 + 8 * (nb + 1) + static_cast<uint64_t>(pw_.df11_exp_bytes) + static_cast<uint64_t>(rows_ * cols_) +
           8 * nb;
  }
  void matmul(const float* X, int64_t n, float* Y, float beta) const override { dense().matmul(X, n, Y, beta); }
  void to_dense(float* out) const override { dense().to_dense(out); }
  void prepare() const override { dense(); }

 private:
  // The BF16 matrix, decoded on first use.
  const WeightMatrix& dense() const {
    std::call_once(once_, [&] {
      Tensor t = Tensor::zeros(DType::BF16, {rows_, cols_});
      df11_decode(pw_.df11_lengths, pw_.df11_offsets, pw_.df11_nblocks, pw_.df11_exp, pw_.df11_exp_bytes, pw_.df11_sm,
                  rows_ * cols_, pw_.df11_block, t.as<uint16_t>(), name_, pw_.df11_hash);
      dense_ = make_dense_matrix(t, name_);
    });
    return *dense_;
  }
  int64_t rows_, cols_;
  PackedWeight pw_;
  std::shared_ptr<const void> owner_;
  std::string name_;
  mutable std::once_flag once_;
  mutable std::shared_ptr<const WeightMatrix> dense_;
};

}  // namespace

std::shared_ptr<const WeightMatrix> make_df11_matrix(int64_t rows, int64_t cols, const PackedWeight& pw,
                                                     std::shared_ptr<const void> owner, const std::string& name) {
  return std::make_shared<Df11Matrix>(rows, cols, pw, std::move(owner), name);
}

}  // namespace moetool
