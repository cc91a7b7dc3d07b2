// tests/int_quant_test.cc — group-wise integer quantization (compress/int_quant.h) and the GPTQ v1
// tensor packing (formats/gptq_pack.h): RTN keeps every weight within half a step for every width
// 2..8, sym/asym and group size, with minimal f16 scales and nearest levels (checked independently
// per element); the importance-weighted search never loses to min/max in weighted error and wins
// clearly on non-uniform importance; packing matches a bit-by-bit reference packer and hand-computed
// words (2, 3, 4, 8 bits), round-trips exactly, and refuses what the v1 layout cannot hold.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "formats/gptq_pack.h"
#include "compress/int_quant.h"
#include "core/dtype.h"
#include "core/error.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

// Gaussian rows of varying scale with a few outlier input columns (×6), like real projections.
std::vector<float> realistic_weights(int64_t rows, int64_t cols, uint64_t seed) {
  auto W = testing::random_normal(static_cast<size_t>(rows * cols), seed);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      float& w = W[static_cast<size_t>(r * cols + j)];
      w *= 0.02f * (1.0f + 0.5f * static_cast<float>(r % 5));
      if (j % 37 == 5) w *= 6.0f;
    }
  return W;
}

bool is_f16(float s) { return f16_to_f32(f32_to_f16(s)) == s; }
// The largest f16 value below s > 0.
float f16_below(float s) {
  uint16_t h = f32_to_f16(s);
  while (f16_to_f32(h) >= s) --h;
  return f16_to_f32(h);
}

// Σ_j imp_j (w − ŵ)² over one (row, group), ŵ from the stored q / scale / zero.
double group_weighted_error(const IntQuantized& q, const float* W, const float* imp, int64_t r, int64_t g) {
  double e = 0;
  for (int64_t j = 0; j < q.cols; ++j) {
    if (q.g_idx[static_cast<size_t>(j)] != g) continue;
    const size_t gi = static_cast<size_t>(g * q.rows + r);
    const double wq = double(q.scales[gi]) * (int(q.q[static_cast<size_t>(r * q.cols + j)]) - q.zeros[gi]);
    const double d = W[r * q.cols + j] - wq;
    e += (imp ? imp[j] : 1.0) * d * d;
  }
  return e;
}

TEST(IntQuant, RtnHalfStepBoundEveryWidthAndGroup) {
  const int64_t rows = 16, cols = 512;
  const auto W = realistic_weights(rows, cols, 11);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool sym : {true, false})
      for (int64_t gs : {32, 64, 128, 256, -1}) {
        SCOPED_TRACE(::testing::Message() << "bits=" << bits << " sym=" << sym << " gs=" << gs);
        const IntQuantSpec spec{bits, gs, sym};
        const IntQuantized q = rtn_quantize(W.data(), rows, cols, spec);
        const int64_t g_size = gs == -1 ? cols : gs, ng = cols / g_size;
        const int32_t maxq = (1 << bits) - 1;
        ASSERT_EQ(q.ngroups, ng);
        ASSERT_EQ(q.q.size(), size_t(rows * cols));
        ASSERT_EQ(q.scales.size(), size_t(ng * rows));
        for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(q.g_idx[size_t(j)], j / g_size);
        std::vector<float> D(static_cast<size_t>(rows * cols));
        int_dequantize(q, D.data());
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t g = 0; g < ng; ++g) {
            const size_t gi = size_t(g * rows + r);
            const float s = q.scales[gi];
            const int32_t z = q.zeros[gi];
            // The scale is the minimal f16 one covering GPTQ's range.
            float lo = 0, hi = 0;
            for (int64_t j = g * g_size; j < (g + 1) * g_size; ++j)
              lo = std::min(lo, W[size_t(r * cols + j)]), hi = std::max(hi, W[size_t(r * cols + j)]);
            ASSERT_TRUE(is_f16(s));
            if (sym) {
              ASSERT_EQ(z, 1 << (bits - 1));
              const float need = 2.0f * std::max(-lo, hi) / float(maxq);
              ASSERT_GE(s, need);
              ASSERT_LT(f16_below(s), need);
            } else {
              ASSERT_GE(z, 1);
              ASSERT_LE(z, maxq);
              ASSERT_GE(double(s) * maxq, double(hi) - lo - 1e-7);
            }
            for (int64_t j = g * g_size; j < (g + 1) * g_size; ++j) {
              const size_t k = size_t(r * cols + j);
              const int32_t qv = q.q[k];
              ASSERT_LE(qv, maxq);
              const double w = W[k], wq = double(s) * (qv - z);
              ASSERT_EQ(D[k], float(wq));
              // Half a step, and the nearest level of the grid.
              ASSERT_LE(std::fabs(w - wq), 0.5 * s * (1 + 1e-6)) << "r=" << r << " j=" << j;
              for (int32_t o : {qv - 1, qv + 1})
                if (o >= 0 && o <= maxq) ASSERT_LE(std::fabs(w - wq), std::fabs(w - double(s) * (o - z)) + 1e-9);
            }
          }
      }
  // One more bit, about half the error (on gaussian rows without outliers, which would keep most
  // weights at level 0 for the narrowest widths): catches levels that are valid but wrong.
  const auto G = testing::random_normal(size_t(rows * cols), 12);
  for (bool sym : {true, false}) {
    double prev = 1e30;
    for (int bits = 2; bits <= 8; ++bits) {
      const IntQuantized q = rtn_quantize(G.data(), rows, cols, {bits, 64, sym});
      std::vector<float> D(G.size());
      int_dequantize(q, D.data());
      double sq = 0;
      for (size_t k = 0; k < G.size(); ++k) sq += (double(G[k]) - D[k]) * (double(G[k]) - D[k]);
      const double rmse = std::sqrt(sq / double(G.size()));
      EXPECT_LT(rmse, 0.62 * prev) << "bits=" << bits << " sym=" << sym;
      EXPECT_GT(rmse, 0.0);
      prev = rmse;
    }
  }
}

TEST(IntQuant, AllZeroAndSingleSignGroups) {
  const int64_t rows = 2, cols = 64;
  std::vector<float> W(size_t(rows * cols), 0.0f);
  for (int64_t j = 32; j < 64; ++j) W[size_t(j)] = 0.01f * float(j - 31);   // row 0, group 1: all positive
  for (int64_t j = 0; j < 32; ++j) W[size_t(cols + j)] = -0.02f * float(j + 1);  // row 1, group 0: all negative
  for (bool sym : {true, false}) {
    const IntQuantized q = rtn_quantize(W.data(), rows, cols, {4, 32, sym});
    std::vector<float> D(W.size());
    int_dequantize(q, D.data());
    for (size_t k = 0; k < W.size(); ++k) {
      const size_t gi = size_t((int64_t(k % cols) / 32) * rows + int64_t(k / cols));
      EXPECT_LE(std::fabs(D[k] - W[k]), 0.5f * q.scales[gi] * (1 + 1e-6f)) << k << " sym=" << sym;
      if (W[k] == 0.0f) EXPECT_EQ(D[k], 0.0f);  // 0 is always exact (the range contains it)
    }
    for (int32_t z : q.zeros) EXPECT_GE(z, 1);  // storable in the v1 layout
  }
}

TEST(IntQuant, ImportanceWeightedNeverWorseAndBetterOnSkewedImportance) {
  const int64_t rows = 16, cols = 256;
  const auto W = realistic_weights(rows, cols, 21);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> imp(static_cast<size_t>(cols)), flat(size_t(cols), 3.0f);
  for (auto& v : imp) v = std::exp(2.0f * nd(rng));  // log-normal: a few columns dominate
  imp[7] = 0.0f;                                      // a column calibration never exercised
  for (int bits : {2, 3, 4, 8})
    for (bool sym : {true, false})
      for (int64_t gs : {32, 128, -1}) {
        SCOPED_TRACE(::testing::Message() << "bits=" << bits << " sym=" << sym << " gs=" << gs);
        const IntQuantSpec spec{bits, gs, sym};
        const IntQuantized plain = rtn_quantize(W.data(), rows, cols, spec);
        for (const auto* im : {&imp, &flat}) {
          const IntQuantized wq = rtn_quantize(W.data(), rows, cols, spec, im->data());
          double e_plain = 0, e_w = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t g = 0; g < plain.ngroups; ++g) {
              const double a = group_weighted_error(plain, W.data(), im->data(), r, g);
              const double b = group_weighted_error(wq, W.data(), im->data(), r, g);
              ASSERT_LE(b, a * (1 + 1e-12)) << "r=" << r << " g=" << g;  // never worse, per group
              e_plain += a, e_w += b;
            }
          for (float s : wq.scales) ASSERT_TRUE(is_f16(s) && s > 0);
          for (size_t k = 0; k < wq.zeros.size(); ++k) {
            ASSERT_GE(wq.zeros[k], sym ? (1 << (bits - 1)) : 1);
            ASSERT_LE(wq.zeros[k], sym ? (1 << (bits - 1)) : (1 << bits) - 1);
          }
          // Measured (this seed): skewed 0.37 .. 0.69 at ≤ 4 bits, 0.45 .. 0.94 at 8 bits; flat ≤ 0.983.
          if (im == &imp) {
            EXPECT_LT(e_w, (bits <= 4 ? 0.8 : 0.96) * e_plain) << "weighted " << e_w << " vs plain " << e_plain;
          } else {
            EXPECT_LT(e_w, 0.995 * e_plain) << "flat importance: refit scales still beat min/max";
          }
        }
      }
}

TEST(IntQuant, SpecErrorsAndSizes) {
  const std::vector<float> W(64 * 8, 0.5f);
  EXPECT_THROW(rtn_quantize(W.data(), 8, 64, {1, 32, true}), Error);
  EXPECT_THROW(rtn_quantize(W.data(), 8, 64, {9, 32, true}), Error);
  EXPECT_THROW(rtn_quantize(W.data(), 8, 64, {4, 0, true}), Error);
  EXPECT_THROW(rtn_quantize(W.data(), 8, 64, {4, -2, true}), Error);
  EXPECT_THROW(rtn_quantize(W.data(), 8, 64, {4, 48, true}), Error);
  try {
    check_int_spec({4, 48, true}, 8, 64, "layer 3 q_proj");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3 q_proj"), std::string::npos);
  }
  std::vector<float> bad = W;
  bad[100] = NAN;
  EXPECT_THROW(rtn_quantize(bad.data(), 8, 64, {4, 32, true}), Error);
  std::vector<float> imp(64, 1.0f);
  imp[3] = -1.0f;
  EXPECT_THROW(rtn_quantize(W.data(), 8, 64, {4, 32, true}, imp.data()), Error);
  bad = W;
  bad[5] = 1e9f;  // scale beyond f16
  EXPECT_THROW(rtn_quantize(bad.data(), 8, 64, {4, 32, true}), Error);

  // 4096 × 4096 int4 g128: qweight 8 MiB, qzeros 32·4096·4/8, scales 32·4096·2, g_idx 4·4096.
  EXPECT_EQ(int_quant_bytes({4, 128, true}, 4096, 4096), 8388608u + 65536u + 262144u + 16384u);
  EXPECT_NEAR(int_quant_bpw({4, 128, true}, 4096, 4096), 4.1640625, 1e-12);
  EXPECT_EQ(int_quant_bytes({3, -1, false}, 64, 128), 4u * 12 * 64 + 4u * 6 + 2u * 64 + 4u * 128);
}

// ---- packing ----

// Independent reference: every bit of every value placed at stream position i·bits + b.
std::vector<int32_t> pack_bit_by_bit(const std::vector<uint32_t>& vals, int bits) {
  std::vector<uint32_t> words((vals.size() * bits + 31) / 32, 0u);
  for (size_t i = 0; i < vals.size(); ++i)
    for (int b = 0; b < bits; ++b)
      if ((vals[i] >> b) & 1u) {
        const size_t pos = i * size_t(bits) + size_t(b);
        words[pos / 32] |= 1u << (pos % 32);
      }
  return std::vector<int32_t>(words.begin(), words.end());
}

IntQuantized random_quantized(int bits, int64_t rows, int64_t cols, int64_t ngroups, bool shuffled_gidx,
                              uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int32_t maxq = (1 << bits) - 1;
  IntQuantized q;
  q.spec = {bits, ngroups == 1 ? -1 : cols / ngroups, false};
  q.rows = rows, q.cols = cols, q.ngroups = ngroups;
  for (int64_t k = 0; k < rows * cols; ++k) q.q.push_back(uint8_t(rng() % uint64_t(maxq + 1)));
  for (int64_t k = 0; k < ngroups * rows; ++k) {
    q.zeros.push_back(int32_t(1 + rng() % uint64_t(maxq + 1)));  // 1 .. 2^bits: all that v1 can store
    q.scales.push_back(f16_to_f32(f32_to_f16(0.001f + float(rng() % 1000) * 1e-4f)));
  }
  for (int64_t j = 0; j < cols; ++j) q.g_idx.push_back(int32_t(j / (cols / ngroups)));
  if (shuffled_gidx) std::shuffle(q.g_idx.begin(), q.g_idx.end(), rng);
  return q;
}

TEST(GPTQPack, MatchesBitByBitPackerAndRoundTrips) {
  for (int bits : {2, 3, 4, 5, 6, 7, 8})
    for (bool shuffled : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "bits=" << bits << " act-order g_idx=" << shuffled);
      const int64_t rows = 96, cols = 256, ng = 4;
      const IntQuantized q = random_quantized(bits, rows, cols, ng, shuffled, 100 + uint64_t(bits));
      const GPTQTensors t = gptq_pack(q);
      ASSERT_EQ(t.qweight.size(), size_t(cols * bits / 32 * rows));
      ASSERT_EQ(t.qzeros.size(), size_t(ng * rows * bits / 32));
      // qweight column r = the bit stream of q[r, :]; qzeros row g = the stream of zeros[g, :] − 1.
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<uint32_t> v;
        for (int64_t i = 0; i < cols; ++i) v.push_back(q.q[size_t(r * cols + i)]);
        const auto ref = pack_bit_by_bit(v, bits);
        for (size_t w = 0; w < ref.size(); ++w) ASSERT_EQ(t.qweight[w * size_t(rows) + size_t(r)], ref[w]) << r;
      }
      for (int64_t g = 0; g < ng; ++g) {
        std::vector<uint32_t> v;
        for (int64_t r = 0; r < rows; ++r) v.push_back(uint32_t(q.zeros[size_t(g * rows + r)] - 1));
        const auto ref = pack_bit_by_bit(v, bits);
        for (size_t w = 0; w < ref.size(); ++w) ASSERT_EQ(t.qzeros[size_t(g) * ref.size() + w], ref[w]) << g;
      }
      for (size_t k = 0; k < q.scales.size(); ++k) ASSERT_EQ(f16_to_f32(t.scales[k]), q.scales[k]);
      const IntQuantized u = gptq_unpack(t, "x");
      EXPECT_EQ(u.q, q.q);
      EXPECT_EQ(u.zeros, q.zeros);
      EXPECT_EQ(u.scales, q.scales);
      EXPECT_EQ(u.g_idx, q.g_idx);
      EXPECT_EQ(u.ngroups, ng);
      EXPECT_EQ(u.spec.group_size, cols / ng);
      EXPECT_FALSE(u.spec.sym);
    }
}

TEST(GPTQPack, HandComputedWords) {
  // 4 bits, q[r, i] = (i + r) % 16 over 8 inputs: input i at bit 4i.
  {
    IntQuantized q = random_quantized(4, 8, 8, 1, false, 1);
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t i = 0; i < 8; ++i) q.q[size_t(r * 8 + i)] = uint8_t((i + r) % 16);
    for (int64_t r = 0; r < 8; ++r) q.zeros[size_t(r)] = int32_t(r + 1);  // stored r
    const GPTQTensors t = gptq_pack(q);
    ASSERT_EQ(t.qweight.size(), 8u);  // [1, 8]
    EXPECT_EQ(uint32_t(t.qweight[0]), 0x76543210u);
    EXPECT_EQ(uint32_t(t.qweight[1]), 0x87654321u);
    EXPECT_EQ(uint32_t(t.qweight[7]), 0xEDCBA987u);
    ASSERT_EQ(t.qzeros.size(), 1u);
    EXPECT_EQ(uint32_t(t.qzeros[0]), 0x76543210u);
  }
  // 2 bits: 16 inputs with q = i % 4 → 0b11100100 per byte; 8 bits: 1, 2, 3, 4 → 0x04030201.
  {
    IntQuantized q = random_quantized(2, 16, 16, 1, false, 2);
    for (int64_t i = 0; i < 16; ++i) q.q[size_t(i)] = uint8_t(i % 4);  // row 0
    EXPECT_EQ(uint32_t(gptq_pack(q).qweight[0]), 0xE4E4E4E4u);
    IntQuantized q8 = random_quantized(8, 4, 4, 1, false, 3);
    for (int64_t i = 0; i < 4; ++i) q8.q[size_t(i)] = uint8_t(i + 1);
    EXPECT_EQ(uint32_t(gptq_pack(q8).qweight[0]), 0x04030201u);
  }
  // 3 bits: 32 inputs fill 3 words; value 10 occupies bits 30, 31 | 32; value 21 bits 63 | 64, 65.
  {
    IntQuantized q = random_quantized(3, 32, 32, 1, false, 4);
    for (int64_t i = 0; i < 32; ++i) q.q[size_t(i)] = 0;
    q.q[10] = 5;  // 0b101: bit 30 set, bit 31 clear, bit 32 (word 1 bit 0) set
    q.q[21] = 6;  // 0b110: bit 63 clear, bits 64, 65 (word 2 bits 0, 1) set
    const GPTQTensors t = gptq_pack(q);
    ASSERT_EQ(t.qweight.size(), size_t(3 * 32));
    EXPECT_EQ(uint32_t(t.qweight[0 * 32]), 0x40000000u);
    EXPECT_EQ(uint32_t(t.qweight[1 * 32]), 0x00000001u);
    EXPECT_EQ(uint32_t(t.qweight[2 * 32]), 0x00000003u);
    for (int64_t i = 0; i < 32; ++i) q.q[size_t(i)] = 7;
    const GPTQTensors all = gptq_pack(q);
    for (int w = 0; w < 3; ++w) EXPECT_EQ(uint32_t(all.qweight[size_t(w) * 32]), 0xFFFFFFFFu);
  }
}

TEST(GPTQPack, RefusesWhatV1CannotHold) {
  IntQuantized q = random_quantized(4, 8, 64, 2, false, 9);
  q.zeros[3] = 0;  // v1 stores zero − 1
  EXPECT_THROW(gptq_pack(q), Error);
  q = random_quantized(4, 8, 64, 2, false, 9);
  q.zeros[3] = 17;
  EXPECT_THROW(gptq_pack(q), Error);
  q = random_quantized(4, 8, 64, 2, false, 9);
  q.g_idx[5] = 2;
  EXPECT_THROW(gptq_pack(q), Error);
  EXPECT_THROW(gptq_pack(random_quantized(4, 8, 36, 1, false, 9)), Error);  // 36·4 bits
  EXPECT_THROW(gptq_pack(random_quantized(4, 4, 64, 1, false, 9)), Error);  // 4·4 bits of zeros
  EXPECT_THROW(gptq_pack(random_quantized(3, 32, 48, 1, false, 9)), Error);  // 48·3 bits

  const GPTQTensors t = gptq_pack(random_quantized(4, 8, 64, 2, false, 9));
  std::vector<int32_t> g = t.g_idx;
  g[0] = -1;
  try {
    gptq_unpack(4, 8, 64, t.qweight.data(), t.qzeros.data(), t.scales.data(), g.data(), 2, "model.layers.0.mlp.up_proj");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.up_proj"), std::string::npos);
  }
  std::vector<uint16_t> s = t.scales;
  s[1] = 0x7C00;  // +Inf
  EXPECT_THROW(gptq_unpack(4, 8, 64, t.qweight.data(), t.qzeros.data(), s.data(), t.g_idx.data(), 2), Error);
  EXPECT_THROW(gptq_unpack(9, 8, 64, t.qweight.data(), t.qzeros.data(), t.scales.data(), t.g_idx.data(), 2), Error);
}

TEST(GPTQPack, RtnThroughPackDequantizesIdentically) {
  const int64_t rows = 64, cols = 256;
  const auto W = realistic_weights(rows, cols, 31);
  for (bool sym : {true, false}) {
    const IntQuantized q = rtn_quantize(W.data(), rows, cols, {4, 64, sym});
    const IntQuantized u = gptq_unpack(gptq_pack(q));
    EXPECT_EQ(u.spec.sym, sym);
    std::vector<float> a(static_cast<size_t>(rows * cols)), b(a.size());
    int_dequantize(q, a.data());
    int_dequantize(u, b.data());
    EXPECT_EQ(a, b);
  }
}

}  // namespace
}  // namespace moetool
