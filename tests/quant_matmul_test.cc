// tests/quant_matmul_test.cc — quantized weight matrices (kernels/linear_quant.h): the product
// equals dequantize-then-dense to 1e-5 relative for every block type, both the fused few-token path
// and the tiled sgemm path, with beta accumulation; storage names and byte counts; bad inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "formats/ggml_blocks.h"
#include "formats/ggml_quants.h"
#include "core/error.h"
#include "kernels/linear_quant.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

TEST(QuantMatmul, EqualsDequantizedDenseProduct) {
  const int64_t rows = 70, cols = 512;
  const auto W = testing::random_normal(static_cast<size_t>(rows * cols), 5);
  for (GGMLType t : {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1, GGMLType::Q4_K,
                     GGMLType::Q5_K, GGMLType::Q6_K, GGMLType::F16, GGMLType::BF16}) {
    SCOPED_TRACE(ggml_type_name(t));
    auto m = quantize_matrix(t, W.data(), rows, cols, "w");
    EXPECT_EQ(m->rows(), rows);
    EXPECT_EQ(m->cols(), cols);
    EXPECT_EQ(m->storage(), ggml_type_name(t));
    EXPECT_EQ(m->stored_bytes(), rows * ggml_row_size(t, cols));
    std::vector<float> D(static_cast<size_t>(rows * cols));
    m->to_dense(D.data());
    for (int64_t n : {1, 3, 9, 40}) {
      const auto X = testing::random_normal(static_cast<size_t>(n * cols), 100 + static_cast<uint64_t>(n));
      std::vector<float> Y0 = testing::random_normal(static_cast<size_t>(n * rows), 200);
      for (float beta : {0.0f, 0.5f}) {
        std::vector<float> Y = Y0;
        m->matmul(X.data(), n, Y.data(), beta);
        double maxref = 0, maxdiff = 0;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t r = 0; r < rows; ++r) {
            double ref = 0;
            for (int64_t c = 0; c < cols; ++c) ref += double(X[static_cast<size_t>(i * cols + c)]) * D[static_cast<size_t>(r * cols + c)];
            ref += beta * double(Y0[static_cast<size_t>(i * rows + r)]);
            maxref = std::max(maxref, std::fabs(ref));
            maxdiff = std::max(maxdiff, std::fabs(ref - Y[static_cast<size_t>(i * rows + r)]));
          }
        EXPECT_LE(maxdiff, 1e-5 * maxref) << "n=" << n << " beta=" << beta;
      }
    }
  }
}

// The stored blocks a GPU backend uploads (WeightMatrix::packed) decode, with the CUDA kernels' own
// per-element decoder (ggml::block_value of formats/ggml_blocks.h), to exactly the CPU's weights.
TEST(QuantMatmul, PackedBlocksDecodeLikeTheGpu) {
  const int64_t rows = 9, cols = 512;
  const auto W = testing::random_normal(static_cast<size_t>(rows * cols), 6);
  const auto check = [&](auto block) {
    using B = decltype(block);
    SCOPED_TRACE(B::kName);
    auto m = quantize_matrix(B::kType, W.data(), rows, cols, "w");
    const PackedWeight* p = m->packed();
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(p->kind, PackedWeight::Kind::Ggml);
    EXPECT_EQ(p->ggml_type, static_cast<int>(B::kType));
    ASSERT_EQ(p->bytes, m->stored_bytes());
    ASSERT_EQ(static_cast<int64_t>(p->bytes), rows * (cols / B::kElems) * B::kBytes);
    std::vector<float> D(static_cast<size_t>(rows * cols));
    m->to_dense(D.data());
    int64_t differ = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        differ += ggml::block_value<B>(p->blocks + (r * (cols / B::kElems) + c / B::kElems) * B::kBytes,
                                       static_cast<int>(c % B::kElems)) != D[static_cast<size_t>(r * cols + c)];
    EXPECT_EQ(differ, 0);
  };
  check(ggml::BlockQ8_0{});
  check(ggml::BlockQ4_0{});
  check(ggml::BlockQ4_K{});
}

TEST(QuantMatmul, ViewsOverExternalBytesAndErrors) {
  const int64_t rows = 4, cols = 64;
  const auto W = testing::random_normal(static_cast<size_t>(rows * cols), 9);
  std::vector<uint8_t> bytes(static_cast<size_t>(rows) * ggml_row_size(GGMLType::Q8_0, cols));
  quantize_rows(GGMLType::Q8_0, W.data(), bytes.data(), rows, cols);
  auto m = make_quant_matrix(GGMLType::Q8_0, rows, cols, bytes, nullptr, "w");
  std::vector<float> d(static_cast<size_t>(rows * cols));
  m->to_dense(d.data());
  for (size_t i = 0; i < d.size(); ++i) EXPECT_NEAR(d[i], W[i], 0.05);
  EXPECT_THROW(make_quant_matrix(GGMLType::Q8_0, rows + 1, cols, bytes, nullptr, "w"), Error);
  EXPECT_THROW(make_quant_matrix(GGMLType::Q8_0, rows, 48, bytes, nullptr, "w"), Error);
  EXPECT_THROW(make_quant_matrix(GGMLType::IQ2_XXS, rows, 256, bytes, nullptr, "w"), Error);
}

}  // namespace
}  // namespace moetool
