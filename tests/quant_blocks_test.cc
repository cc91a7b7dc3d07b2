// tests/quant_blocks_test.cc — ggml block formats (formats/ggml_quants.h): byte identity with an
// independent implementation of ggml's reference quantizers, round trips within each format's error
// bound, error falling with bits, llama.cpp's fallback types, and the edge cases (constant rows,
// zero blocks, huge values, NaN/Inf, bad row lengths, threading).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "formats/ggml_quant_internal.h"
#include "formats/ggml_quants.h"
#include "core/error.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::fnv1a64;
using testing::lcg_rows;

std::string hex(const std::vector<uint8_t>& b) {
  std::string s;
  char buf[3];
  for (uint8_t x : b) {
    std::snprintf(buf, sizeof buf, "%02x", x);
    s += buf;
  }
  return s;
}

std::vector<uint8_t> quantize(GGMLType t, const std::vector<float>& x, int64_t rows, int64_t cols) {
  std::vector<uint8_t> out(static_cast<size_t>(rows) * ggml_row_size(t, cols));
  quantize_rows(t, x.data(), out.data(), rows, cols);
  return out;
}

std::vector<float> roundtrip(GGMLType t, const std::vector<float>& x, int64_t rows, int64_t cols) {
  const auto q = quantize(t, x, rows, cols);
  std::vector<float> y(x.size());
  dequantize_rows(t, q.data(), y.data(), rows, cols);
  return y;
}

const std::vector<GGMLType> kAllTypes = {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0,
                                         GGMLType::Q5_1, GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K,
                                         GGMLType::F16,  GGMLType::BF16, GGMLType::F32};

TEST(QuantBlocks, InputGeneratorMatchesTheOracleScript) {
  const auto big = lcg_rows(3, 64, 512);
  std::vector<uint8_t> bytes(big.size() * 4);
  std::memcpy(bytes.data(), big.data(), bytes.size());
  EXPECT_EQ(fnv1a64(bytes), 0x98b80dc703fc65e7ull);
}

// Expected bytes from tests/tools/ggml_quant_oracle.py --backend numpy, i.e. the `gguf` package's
// numpy quantizers (gguf-py 0.19.0, gguf/quants.py), which gguf-py keeps bit-exact with ggml's
// quantize_row_{q8_0,q4_0,q4_1,q5_0,q5_1}_ref. Regenerate with that script if the generator changes.
TEST(QuantBlocks, ByteIdenticalToGgmlReferenceQuantizers) {
  struct Case {
    GGMLType t;
    const char* small_hex;  // lcg_rows(1, 2, 64)
    uint64_t big_fnv;       // lcg_rows(3, 64, 512)
  };
  const Case cases[] = {
      {GGMLType::Q8_0,
       "690efcf6260beb78eb5cd7ae19d3831918ffc5e27fcf9494b3732d38cdd82a5cee2e200efb5c2eabac1ef9c4a70909be2da1cae3197ff1"
       "38f564b3764dd009ba44eef78a8213e03f71cae0d11157e981adfc1432d24120312cc06ef113031b47e6b3051dd616ac1210c9de9f2ecf"
       "2611c47f25135770dec2b6160cf01d31d6fa041a1c110a670bd8",
       0x496afc51d6cbf6b3ull},
      {GGMLType::Q4_0,
       "5d9ec8a906b7f9f0d9125b4db6ab5f269658139e6802954d9d26d81c3eb777cc459e9bfa7323a6bcbf45f675998da7c0633889ab559c9e"
       "a2d77b7a9e655bb6878c60667773217abc",
       0x2abaec8ec39f9109ull},
      {GGMLType::Q5_0,
       "5d9a539b7b4c71410b6fe3e1a324a59a6d56bf4d2da0139ad9e954ead1042a9b1b3ca1186b6fff987a2c17f4731fc6b8d7b34c686e89ec"
       "ea220b3d90d6601346ba389e9e2ec1c9809ed7f42ccaa65b1ef8d0dbeef532f458",
       0xb5f3e889c330f2f8ull},
      {GGMLType::Q4_1,
       "bc1e44aa4767fa58161f36eda5b34955a0d969a7421ea9a997fd6ab272d927e4c2488833ba617405812373afa6bcbf45f675998da7c063"
       "3889ab559c372208ad288374508aa34968728f89887cde7442",
       0xae1120066f5e2b83ull},
      {GGMLType::Q5_1,
       "841a44aaac6484b38fcef4912d2e6deb5a6592ba50b2d25f0f1aa9a92616ab152efbd564e4c35ee79490006785d3e80b431f73afc6b8d7"
       "b34c796f89fcea331c4da0d6601347ba39031e08add13e322e3006f9b0144783d0e51f1200f9cdf985",
       0x6de351dbfcf65710ull},
  };
  const auto small = lcg_rows(1, 2, 64);
  const auto big = lcg_rows(3, 64, 512);
  for (const auto& c : cases) {
    SCOPED_TRACE(ggml_type_name(c.t));
    EXPECT_EQ(hex(quantize(c.t, small, 2, 64)), c.small_hex);
    EXPECT_EQ(fnv1a64(quantize(c.t, big, 64, 512)), c.big_fnv);
  }
}

// K-quants: expected bytes from tests/tools/ggml_quant_oracle.py --backend ggml, i.e. ggml itself
// (the libggml-base built by llama-cpp-python 0.3.36, through ggml_quantize_chunk without an
// importance matrix = quantize_row_q{4,5,6}_K_ref). The same backend reproduces every numpy
// digest of the test above, so both oracles agree with each other and with moetool.
TEST(QuantBlocks, KQuantsByteIdenticalToGgml) {
  const auto small_k = lcg_rows(2, 1, 256);
  const auto big = lcg_rows(3, 64, 512);
  EXPECT_EQ(hex(quantize(GGMLType::Q4_K, small_k, 1, 256)),
            "fe08c214bfb1a7b5bfeba2b6db3e2bcd9bb5bbd7859193959d5ba769d6718714853878b7f870ab880e4c938893ac28978fb04106"
            "4665a690d761e9a5b87e38556ba38b9f388ac6b8fa5793cb88b6a57fb970477aaa5684b58eb8d2eaadd795f6969ab6cac5cf550a"
            "9859b185c4a9944f94671396bfb1a2d0bc7671f25539097c228935637755e4209a3dc3c229ca43f1");
  EXPECT_EQ(fnv1a64(quantize(GGMLType::Q4_K, big, 64, 512)), 0x2777d69efe2a5a0aull);
  EXPECT_EQ(fnv1a64(quantize(GGMLType::Q5_K, big, 64, 512)), 0x463eb2ac3e9e9432ull);
  EXPECT_EQ(fnv1a64(quantize(GGMLType::Q6_K, big, 64, 512)), 0xba75ed7e14614b93ull);
  EXPECT_EQ(hex(quantize(GGMLType::Q6_K, small_k, 1, 256)).substr(0, 64),
            "00946f3f26812da6e7708f64b942cd60f5d0132ea0412dd32ae0fe10ad12710e");
}

// Gaussian rows at several scales; every element within the format's bound of its block's max |x|.
TEST(QuantBlocks, RoundTripWithinErrorBound) {
  const int64_t rows = 24, cols = 1024;
  std::vector<float> x = testing::random_normal(static_cast<size_t>(rows * cols), 7);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) x[static_cast<size_t>(r * cols + c)] *= std::ldexp(1.0f, static_cast<int>(r % 9) - 6);
  for (GGMLType t : kAllTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    const auto y = roundtrip(t, x, rows, cols);
    const int64_t bs = t == GGMLType::F32 || t == GGMLType::F16 || t == GGMLType::BF16 ? 32 : ggml_block_size(t);
    const double bound = ggml_quant_error_bound(t);
    double worst = 0;
    for (size_t b0 = 0; b0 < x.size(); b0 += static_cast<size_t>(bs)) {
      double amax = 0;
      for (int64_t j = 0; j < bs; ++j) amax = std::max(amax, std::fabs(double(x[b0 + j])));
      for (int64_t j = 0; j < bs; ++j) {
        const double e = std::fabs(double(x[b0 + j]) - y[b0 + j]) / amax;
        worst = std::max(worst, e);
      }
    }
    EXPECT_LE(worst, bound);
    if (t == GGMLType::F32) EXPECT_EQ(worst, 0.0);
    else EXPECT_GT(worst, 0.0);  // a real quantizer, not a copy
  }
}

double rmse_ratio(GGMLType t, const std::vector<float>& x, int64_t rows, int64_t cols) {
  const auto y = roundtrip(t, x, rows, cols);
  double se = 0, ss = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    se += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ss += double(x[i]) * x[i];
  }
  return std::sqrt(se / ss);
}

TEST(QuantBlocks, ErrorDecreasesWithBits) {
  const int64_t rows = 32, cols = 512;
  const auto x = testing::random_normal(static_cast<size_t>(rows * cols), 11);
  const double q4_0 = rmse_ratio(GGMLType::Q4_0, x, rows, cols), q5_0 = rmse_ratio(GGMLType::Q5_0, x, rows, cols),
               q8_0 = rmse_ratio(GGMLType::Q8_0, x, rows, cols), q4_1 = rmse_ratio(GGMLType::Q4_1, x, rows, cols),
               q5_1 = rmse_ratio(GGMLType::Q5_1, x, rows, cols), q4_k = rmse_ratio(GGMLType::Q4_K, x, rows, cols),
               q5_k = rmse_ratio(GGMLType::Q5_K, x, rows, cols), q6_k = rmse_ratio(GGMLType::Q6_K, x, rows, cols),
               f16 = rmse_ratio(GGMLType::F16, x, rows, cols);
  EXPECT_GT(q4_0, q5_0);
  EXPECT_GT(q5_0, q8_0);
  EXPECT_GT(q4_1, q5_1);
  EXPECT_GT(q4_k, q5_k);
  EXPECT_GT(q5_k, q6_k);
  EXPECT_GT(q6_k, q8_0);
  EXPECT_GT(q8_0, f16);
  // K-quants beat the plain formats of the same width; Q4_K is near 4.5 bits of accuracy.
  EXPECT_LT(q4_k, q4_0);
  EXPECT_LT(q5_k, q5_0);
  EXPECT_LT(q4_k, 0.12);
  EXPECT_LT(q8_0, 0.01);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GGMLType::Q4_0), 4.5);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GGMLType::Q8_0), 8.5);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GGMLType::Q4_K), 4.5);
  EXPECT_DOUBLE_EQ(ggml_bits_per_weight(GGMLType::Q6_K), 6.5625);
}

TEST(QuantBlocks, ConstantRowsAndZeroBlocks) {
  const int64_t cols = 512;
  for (GGMLType t : kAllTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    for (float c : {0.3f, -1.75f, 1e-3f}) {
      const std::vector<float> x(cols, c);
      const auto y = roundtrip(t, x, 1, cols);
      for (float v : y) EXPECT_NEAR(v, c, std::fabs(c) * ggml_quant_error_bound(t) + 1e-12);
    }
    const std::vector<float> z(cols, 0.0f);
    for (float v : roundtrip(t, z, 1, cols)) EXPECT_EQ(v, 0.0f);
  }
  // The bytes ggml writes for a zero block (gguf-py agrees): Q4_0's scale is −0 (0/−8).
  EXPECT_EQ(hex(quantize(GGMLType::Q4_0, std::vector<float>(32, 0.0f), 1, 32)),
            "0080" + std::string(32, '8'));
  EXPECT_EQ(hex(quantize(GGMLType::Q8_0, std::vector<float>(32, 0.0f), 1, 32)), std::string(68, '0'));
  std::string q8_const = "d618";  // f16(0.3/127), then 32 × q = 127
  for (int i = 0; i < 32; ++i) q8_const += "7f";
  EXPECT_EQ(hex(quantize(GGMLType::Q8_0, std::vector<float>(32, 0.3f), 1, 32)), q8_const);
}

TEST(QuantBlocks, HugeValuesNaNAndInfinity) {
  // Large but representable: the scale fits in f16.
  std::vector<float> x = testing::random_normal(256, 3);
  for (float& v : x) v *= 1e5f;
  for (GGMLType t : {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_K, GGMLType::Q6_K, GGMLType::BF16}) {
    SCOPED_TRACE(ggml_type_name(t));
    const auto y = roundtrip(t, x, 1, 256);
    for (float v : y) EXPECT_TRUE(std::isfinite(v));
  }
  // Too large for half-precision scales / values: a clear error, never Inf in the file.
  std::vector<float> huge(256, 1.0f);
  huge[5] = 3e9f;
  for (GGMLType t : {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q5_1, GGMLType::Q4_K, GGMLType::Q6_K, GGMLType::F16}) {
    SCOPED_TRACE(ggml_type_name(t));
    try {
      quantize(t, huge, 1, 256);
      ADD_FAILURE() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("row 0"), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(quantize(GGMLType::F32, huge, 1, 256));  // F32 keeps anything finite
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    std::vector<float> v = testing::random_normal(2 * 64, 4);
    v[64 + 9] = bad;
    for (GGMLType t : {GGMLType::Q8_0, GGMLType::F16, GGMLType::F32}) {
      try {
        std::vector<uint8_t> out(2 * ggml_row_size(t, 64));
        quantize_rows(t, v.data(), out.data(), 2, 64, nullptr, "tensor 'w'");
        ADD_FAILURE() << "expected an error for " << bad;
      } catch (const Error& e) {
        const std::string m = e.what();
        EXPECT_NE(m.find("tensor 'w': row 1"), std::string::npos) << m;
        EXPECT_NE(m.find("column 9"), std::string::npos) << m;
      }
    }
  }
}

TEST(QuantBlocks, RowLengthsAndFallbackTypes) {
  std::vector<float> x(256, 1.0f);
  std::vector<uint8_t> out(1024);
  EXPECT_THROW(quantize_rows(GGMLType::Q4_K, x.data(), out.data(), 1, 128), Error);
  EXPECT_THROW(quantize_rows(GGMLType::Q8_0, x.data(), out.data(), 1, 48), Error);
  EXPECT_THROW(quantize_rows(GGMLType::Q2_K, x.data(), out.data(), 1, 256), Error);  // not implemented
  try {
    check_quant_row(GGMLType::Q6_K, 384, "blk.0.ffn_down.weight");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.ffn_down.weight: row length 384 is not a multiple of Q6_K's block size 256"),
              std::string::npos)
        << e.what();
  }
  // llama-quantize's fallbacks (src/llama-quant.cpp tensor_type_fallback).
  EXPECT_EQ(ggml_fallback_type(GGMLType::Q4_K, 128), GGMLType::Q5_0);
  EXPECT_EQ(ggml_fallback_type(GGMLType::Q5_K, 384), GGMLType::Q5_1);
  EXPECT_EQ(ggml_fallback_type(GGMLType::Q6_K, 128), GGMLType::Q8_0);
  EXPECT_EQ(ggml_fallback_type(GGMLType::Q4_K, 512), GGMLType::Q4_K);
  EXPECT_EQ(ggml_fallback_type(GGMLType::Q4_K, 48), GGMLType::F16);
  EXPECT_EQ(ggml_fallback_type(GGMLType::Q8_0, 48), GGMLType::F16);
}

TEST(QuantBlocks, ThreadedEqualsRowByRow) {
  const int64_t rows = 300, cols = 512;
  const auto x = testing::random_normal(static_cast<size_t>(rows * cols), 21);
  for (GGMLType t : {GGMLType::Q4_K, GGMLType::Q8_0, GGMLType::Q6_K}) {
    const auto all = quantize(t, x, rows, cols);
    const size_t rb = ggml_row_size(t, cols);
    std::vector<uint8_t> one(rb);
    for (int64_t r = 0; r < rows; r += 37) {
      quantize_rows(t, x.data() + r * cols, one.data(), 1, cols);
      EXPECT_EQ(std::memcmp(one.data(), all.data() + r * rb, rb), 0) << ggml_type_name(t) << " row " << r;
    }
  }
}

// Q6_K's reference scale search runs the 16 sub-blocks of a super-block as vector lanes
// (make_qx_quants_16x16); it must equal the scalar search bit for bit on any input: seeded Gaussian
// sub-blocks at scales 1e-6 .. 1e3, all-zero and below-epsilon sub-blocks, constant ones, ties of
// |x| between a positive and a negative value, one large outlier.
TEST(QuantBlocks, Q6KScaleSearchLanesEqualTheScalarSearch) {
  std::mt19937_64 g(41);
  std::normal_distribution<float> n01;
  int checked = 0;
  for (int rep = 0; rep < 400; ++rep) {
    std::vector<float> x(256);
    for (int j = 0; j < 16; ++j) {
      const int kind = static_cast<int>(g() % 8);
      const float sc = std::pow(10.f, static_cast<float>(static_cast<int>(g() % 10)) - 6.f);
      for (int i = 0; i < 16; ++i) {
        float v = n01(g) * sc;
        if (kind == 0) v = 0;
        if (kind == 1) v = 1e-16f * n01(g);
        if (kind == 2) v = sc;
        if (kind == 3 && i < 2) v = i == 0 ? sc * 3 : -sc * 3;
        if (kind == 4 && i == 7) v = sc * 1000;
        x[16 * j + i] = v;
      }
    }
    int8_t La[256], Lb[256];
    float sa[16], sb[16];
    ggml_quant::make_qx_quants_16x16(x.data(), La, sa);
    for (int j = 0; j < 16; ++j) sb[j] = ggml_quant::make_qx_quants(16, 32, x.data() + 16 * j, Lb + 16 * j, nullptr);
    ASSERT_EQ(std::memcmp(sa, sb, sizeof sa), 0) << rep;
    ASSERT_EQ(std::memcmp(La, Lb, sizeof La), 0) << rep;
    ++checked;
  }
  EXPECT_EQ(checked, 400);
}

}  // namespace
}  // namespace moetool
