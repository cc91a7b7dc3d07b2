// tests/dtype_test.cc — float conversions against float64 references: exhaustive f16 and bf16
// round trips, round-to-nearest-even on ties, NaN/Inf preservation, f8 decoding tables.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/dtype.h"
#include "core/error.h"

namespace moetool {
namespace {

// Reference: the f16 value nearest to x (ties to even), computed in double by enumerating neighbours.
uint16_t ref_f32_to_f16(float x) {
  if (std::isnan(x)) return 0x7e00;
  double best_err = INFINITY;
  uint16_t best = 0;
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const double ax = std::fabs(static_cast<double>(x));
  if (ax >= 65520.0) return sign | 0x7c00;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    double v = f16_to_f32(static_cast<uint16_t>(h));
    double err = std::fabs(v - ax);
    if (err < best_err || (err == best_err && (h & 1) == 0)) {
      best_err = err;
      best = static_cast<uint16_t>(h);
    }
  }
  return sign | best;
}

TEST(DType, NamesRoundTrip) {
  for (int i = 0; i < kNumDTypes; ++i) {
    auto t = static_cast<DType>(i);
    auto p = parse_dtype(dtype_name(t));
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(*p, t);
  }
  EXPECT_FALSE(parse_dtype("F4").has_value());
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::U64), 8u);
}

TEST(DType, F16ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    float f = f16_to_f32(static_cast<uint16_t>(h));
    uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(back))) << h;
    } else {
      EXPECT_EQ(back, h) << h;
    }
  }
}

TEST(DType, F16RoundingMatchesNearestEvenReference) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> bits;
  int checked = 0;
  while (checked < 3000) {
    uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f) || std::fabs(f) > 1e6f || std::fabs(f) < 1e-9f) continue;
    ASSERT_EQ(f32_to_f16(f), ref_f32_to_f16(f)) << f;
    ++checked;
  }
  // Exact ties: halfway between 1.0 and the next f16 (1 + 2^-10) rounds to even (1.0).
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie to even -> 0
}

TEST(DType, BF16RoundTripAndTies) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    float f = bf16_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(f))));
    } else {
      EXPECT_EQ(f32_to_bf16(f), b);
    }
  }
  // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties to even -> 1.0.
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  // Relative error bound for random values: half an ulp, <= 2^-8 (7 stored mantissa bits).
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0, 100);
  for (int i = 0; i < 10000; ++i) {
    float x = nd(rng);
    double r = bf16_to_f32(f32_to_bf16(x));
    EXPECT_LE(std::fabs(r - x), std::fabs(x) * std::ldexp(1.0, -8) + 1e-30);
  }
}

TEST(DType, F8Decoding) {
  EXPECT_EQ(f8e4m3_to_f32(0x38), 1.0f);   // exp 7, mant 0
  EXPECT_EQ(f8e4m3_to_f32(0x7e), 448.0f);  // max normal
  EXPECT_TRUE(std::isnan(f8e4m3_to_f32(0x7f)));
  EXPECT_EQ(f8e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(f8e4m3_to_f32(0xb8), -1.0f);
  EXPECT_EQ(f8e5m2_to_f32(0x3c), 1.0f);
  EXPECT_EQ(f8e5m2_to_f32(0x7b), 57344.0f);
  EXPECT_TRUE(std::isinf(f8e5m2_to_f32(0x7c)));
  EXPECT_TRUE(std::isnan(f8e5m2_to_f32(0x7e)));
}

// The E4M3FN encoder against an independent reference: the nearest of all 126 finite non-negative
// codes by exhaustive search (ties to the even code), on every code, every midpoint between
// neighbours, points just beside them, and random magnitudes across the whole range.
TEST(DType, F8E4M3EncodingIsNearestEven) {
  auto reference = [](float f) -> uint8_t {
    if (std::isnan(f)) return 0x7f;
    const uint8_t sign = std::signbit(f) ? 0x80 : 0;
    const double a = std::fabs(static_cast<double>(f));
    if (a >= 448.0) return sign | 0x7e;
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c <= 0x7e; ++c) {
      const double d = std::fabs(a - static_cast<double>(f8e4m3_to_f32(static_cast<uint8_t>(c))));
      if (d < bd || (d == bd && (c & 1) == 0)) best = c, bd = d;
    }
    return sign | static_cast<uint8_t>(best);
  };
  std::vector<float> xs;
  for (int c = 0; c < 0x7e; ++c) {
    const float lo = f8e4m3_to_f32(static_cast<uint8_t>(c)), hi = f8e4m3_to_f32(static_cast<uint8_t>(c + 1));
    const float mid = 0.5f * (lo + hi);  // exact in f32
    for (float v : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f), hi}) xs.push_back(v);
  }
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> e(-14.0f, 9.5f);
  for (int i = 0; i < 20000; ++i) xs.push_back(std::exp2(e(rng)));
  for (float v : {0.0f, 448.0f, 460.0f, 1e6f, INFINITY, std::ldexp(1.0f, -10), 3 * std::ldexp(1.0f, -11)})
    xs.push_back(v);
  int bad = 0;
  for (float v : xs)
    for (float x : {v, -v}) {
      const uint8_t got = f32_to_f8e4m3(x), want = reference(x);
      if (got != want && ++bad < 5) ADD_FAILURE() << x << ": got 0x" << std::hex << int(got) << ", want 0x" << int(want);
    }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(f32_to_f8e4m3(NAN) & 0x7f, 0x7f);
  for (int c = 0; c < 256; ++c)  // every finite code survives decode -> encode
    if ((c & 0x7f) != 0x7f) EXPECT_EQ(f32_to_f8e4m3(f8e4m3_to_f32(static_cast<uint8_t>(c))), c) << c;
}

TEST(DType, ConvertArrays) {
  std::vector<float> src = {1.5f, -2.25f, 1e-3f, NAN, INFINITY, 0.0f};
  std::vector<uint16_t> h(src.size());
  convert(DType::F32, src.data(), DType::F16, h.data(), src.size());
  std::vector<double> d(src.size());
  convert(DType::F16, h.data(), DType::F64, d.data(), src.size());
  EXPECT_EQ(d[0], 1.5);
  EXPECT_EQ(d[1], -2.25);
  EXPECT_NEAR(d[2], 1e-3, 1e-6);
  EXPECT_TRUE(std::isnan(d[3]));
  EXPECT_TRUE(std::isinf(d[4]));
  std::vector<int32_t> ints(2);
  EXPECT_THROW(convert(DType::I32, ints.data(), DType::F32, src.data(), 2), Error);
}

}  // namespace
}  // namespace moetool
