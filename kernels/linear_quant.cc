// kernels/linear_quant.cc — quantized weight matrices (see linear_quant.h).
#include "kernels/linear_quant.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "formats/ggml_quants.h"
#include "core/error.h"
#include "kernels/ops.h"
#include "kernels/quant_dot.h"

namespace moetool {
namespace {

class QuantMatrix final : public WeightMatrix {
 public:
  QuantMatrix(GGMLType type, int64_t rows, int64_t cols, const uint8_t* data, std::shared_ptr<const void> owner)
      : type_(type), rows_(rows), cols_(cols), row_bytes_(ggml_row_size(type, cols)), data_(data),
        owner_(std::move(owner)) {
    packed_.kind = PackedWeight::Kind::Ggml;
    packed_.ggml_type = static_cast<int>(type_);
    packed_.blocks = data_;
    packed_.bytes = stored_bytes();
  }

  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  std::string storage() const override { return ggml_type_name(type_); }
  uint64_t stored_bytes() const override { return static_cast<uint64_t>(rows_) * row_bytes_; }
  const PackedWeight* packed() const override { return &packed_; }

  void to_dense(float* out) const override { dequantize_rows(type_, data_, out, rows_, cols_); }

  // Y[n, rows] = X[n, cols] · Wᵀ + beta · Y.
  void matmul(const float* X, int64_t n, float* Y, float beta) const override {
    if (n <= 0 || rows_ == 0) return;
    if (quant_dot() == QuantDot::Int8 && ggml_int8_dot_supported(type_)) {
      matmul_int8(X, n, Y, beta);
      return;
    }
    if (n <= kFusedMaxTokens) {
      matmul_fused(X, n, Y, beta);
      return;
    }
    // Tiles of rows: dequantize (parallel over rows), then one sgemm per tile.
    // (std::clamp needs lo ≤ hi: a matrix of fewer than 16 rows is one tile.)
    const int64_t tile = std::min<int64_t>(rows_, std::max<int64_t>(kTileFloats / std::max<int64_t>(cols_, 1), 16));
    std::vector<float> buf(static_cast<size_t>(tile * cols_));  // [tile, cols]
    for (int64_t r0 = 0; r0 < rows_; r0 += tile) {
      const int64_t m = std::min(tile, rows_ - r0);
      dequantize_rows(type_, data_ + static_cast<size_t>(r0) * row_bytes_, buf.data(), m, cols_);
      ops::gemm_nt(n, m, cols_, X, cols_, buf.data(), cols_, Y + r0, rows_, 1.0f, beta);
    }
  }

 private:
  static constexpr int64_t kFusedMaxTokens = 4;
  static constexpr int64_t kTileFloats = 1 << 20;  // 4 MiB of dequantized rows per tile

  // The integer path (kernels/quant_dot.h): tiles of rows unpacked from the blocks.
  void matmul_int8(const float* X, int64_t n, float* Y, float beta) const {
    int8_matmul(X, n, rows_, cols_, ggml_int8_offset(type_), Y, beta, [&](int64_t r0, int64_t m, U8Rows* w) {
      unpack_ggml_rows(type_, data_ + static_cast<size_t>(r0) * row_bytes_, m, cols_, w);
    });
  }

  // A few tokens: each thread dequantizes one row at a time and dots it with every token.
  void matmul_fused(const float* X, int64_t n, float* Y, float beta) const {
    const bool par = rows_ * cols_ >= 65536;
#pragma omp parallel if (par)
    {
      std::vector<float> w(static_cast<size_t>(cols_));
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows_; ++r) {
        dequantize_row(type_, data_ + static_cast<size_t>(r) * row_bytes_, w.data(), cols_);
        for (int64_t t = 0; t < n; ++t) {
          const float* x = X + t * cols_;
          double acc = 0.0;
          for (int64_t j = 0; j < cols_; ++j) acc += static_cast<double>(x[j]) * w[static_cast<size_t>(j)];
          float& y = Y[t * rows_ + r];
          y = static_cast<float>(acc) + (beta != 0.0f ? beta * y : 0.0f);
        }
      }
    }
  }

  GGMLType type_;
  int64_t rows_, cols_;
  size_t row_bytes_;
  const uint8_t* data_;
  std::shared_ptr<const void> owner_;
  PackedWeight packed_;
};

}  // namespace

std::shared_ptr<const WeightMatrix> make_quant_matrix(GGMLType type, int64_t rows, int64_t cols,
                                                      std::span<const uint8_t> bytes,
                                                      std::shared_ptr<const void> owner, const std::string& name) {
  if (!ggml_dequant_supported(type))
    fail("tensor '", name, "': ggml type ", ggml_type_name(type), " cannot be multiplied by moetool");
  if (rows < 0 || cols <= 0) fail("tensor '", name, "': bad matrix shape [", rows, ", ", cols, "]");
  const size_t row_bytes = ggml_row_size(type, cols, str("tensor '", name, "'"));
  if (bytes.size() != static_cast<size_t>(rows) * row_bytes)
    fail("tensor '", name, "': expected ", static_cast<size_t>(rows) * row_bytes, " bytes for [", rows, ", ", cols,
         "] of ", ggml_type_name(type), ", got ", bytes.size());
  return std::make_shared<QuantMatrix>(type, rows, cols, bytes.data(), std::move(owner));
}

std::shared_ptr<const WeightMatrix> quantize_matrix(GGMLType type, const float* W, int64_t rows, int64_t cols,
                                                    const std::string& name) {
  const size_t row_bytes = ggml_row_size(type, cols, str("tensor '", name, "'"));
  auto buf = std::make_shared<std::vector<uint8_t>>(static_cast<size_t>(rows) * row_bytes);
  quantize_rows(type, W, buf->data(), rows, cols, nullptr, str("tensor '", name, "'"));
  std::span<const uint8_t> bytes(buf->data(), buf->size());
  return make_quant_matrix(type, rows, cols, bytes, std::shared_ptr<const void>(buf, buf->data()), name);
}

}  // namespace moetool
