// tests/autoround_ggml_test.cc — AutoRound over ggml blocks (compress/autoround_ggml.h). On
// correlated calibration inputs (tests/gptq_test_util.h) the tuned blocks' layer-output error is
// never above ggml's importance-weighted rounding it starts from, and well below it for every type —
// also on held-out inputs of the same distribution that the Hessian never saw; the written blocks
// are valid blocks of the type (levels in range, the K-quants' packed sub-block scales and mins
// exactly ggml's, d and m within the bound of ggml's); the reported losses are the measured ones;
// the bytes do not depend on the thread count; bad input names the tensor.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "compress/autoround_ggml.h"
#include "compress/gptq_ggml.h"
#include "core/error.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_levels.h"
#include "formats/ggml_quants.h"
#include "tests/gptq_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::Layer;
using testing::make_layer;
using testing::decode;
using testing::kGridTypes;
using testing::output_error_of;


// ggml's importance-weighted rounding with imatrix = diag(H)/N (what --method imatrix writes).
std::vector<uint8_t> imatrix_round(GGMLType t, const Layer& L, const std::vector<double>& H, int64_t N) {
  std::vector<float> imp(static_cast<size_t>(L.cols));
  for (int64_t j = 0; j < L.cols; ++j) imp[size_t(j)] = float(H[size_t(j * L.cols + j)] / double(N));
  std::vector<uint8_t> out(static_cast<size_t>(L.rows) * ggml_row_size(t, L.cols));
  quantize_rows(t, L.W.data(), out.data(), L.rows, L.cols, imp.data());
  return out;
}

// The output error on rows [t0, t1) of X (mean over those rows).
double output_error_on(const Layer& L, const float* D, int64_t t0, int64_t t1) {
  double e = 0;
  for (int64_t t = t0; t < t1; ++t)
    for (int64_t r = 0; r < L.rows; ++r) {
      double y = 0;
      for (int64_t j = 0; j < L.cols; ++j)
        y += (double(L.W[size_t(r * L.cols + j)]) - D[size_t(r * L.cols + j)]) * L.X[size_t(t * L.cols + j)];
      e += y * y;
    }
  return e / double(t1 - t0);
}

// The bytes of a block other than its f16 d and m fields and its levels: the K-quants' packed
// sub-block scales and mins (empty for the other types).
std::vector<uint8_t> sub_scales(GGMLType t, const uint8_t* blk) {
  if (t == GGMLType::Q4_K) return {blk + ggml::BlockQ4_K::kScales, blk + ggml::BlockQ4_K::kScales + 12};
  if (t == GGMLType::Q5_K) return {blk + ggml::BlockQ5_K::kScales, blk + ggml::BlockQ5_K::kScales + 12};
  if (t == GGMLType::Q6_K) return {blk + ggml::BlockQ6_K::kScales, blk + ggml::BlockQ6_K::kScales + 16};
  return {};
}

TEST(AutoRoundGGML, BeatsImatrixRoundingAlsoOnHeldOutInputs) {
  // H from the first 2048 input rows; the last 768 are held out.
  const Layer L = make_layer(32, 512, 2816, 7);
  const int64_t Nc = 2048;
  std::vector<double> Hc(size_t(L.cols * L.cols), 0.0);
  for (int64_t t = 0; t < Nc; ++t) {
    const float* x = L.X.data() + t * L.cols;
    for (int64_t a = 0; a < L.cols; ++a)
      for (int64_t b = 0; b < L.cols; ++b) Hc[size_t(a * L.cols + b)] += double(x[a]) * x[b];
  }
  for (GGMLType t : kGridTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    AutoRoundOptions o;
    AutoRoundStats st;
    const auto a = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, Hc.data(), Nc, t, o, &st, "t");
    ASSERT_EQ(a.size(), size_t(L.rows) * ggml_row_size(t, L.cols));
    const auto base = imatrix_round(t, L, Hc, Nc);
    const auto Da = decode(t, a, L.rows, L.cols), Db = decode(t, base, L.rows, L.cols);
    for (float v : Da) ASSERT_TRUE(std::isfinite(v));
    const double ea = output_error_on(L, Da.data(), 0, Nc), eb = output_error_on(L, Db.data(), 0, Nc);
    const double ha = output_error_on(L, Da.data(), Nc, L.N), hb = output_error_on(L, Db.data(), Nc, L.N);
    // The reported losses are the measured ones (float64 sums of the same quantities).
    EXPECT_NEAR(st.init_loss, eb, 1e-6 * eb);
    EXPECT_NEAR(st.loss, ea, 1e-6 * ea);
    EXPECT_LE(ea, eb * (1 + 1e-6)) << "never above the start";
    // Measured ratios (this seed, 200 steps): calibration 0.77 .. 0.93, held out 0.84 .. 0.95 over
    // the types (GPTQ over ggml blocks: 0.45 .. 0.52 and 0.53 .. 0.61); no better than ggml's
    // rounding would be 1 (and the start guarantees ≤ 1 on calibration, not held out).
    EXPECT_LT(ea, 0.95 * eb) << "autoround " << ea << " imatrix " << eb;
    EXPECT_LT(ha, 0.98 * hb) << "held out: autoround " << ha << " imatrix " << hb;
    // Rows whose sign steps beat the start (the refit then works on all): 32 of 32 for Q8_0/Q4_0,
    // 26 Q5_0, 31 Q6_K, 21 Q5_K, 15 Q4_K, 6 Q4_1, 1 Q5_1 — with a min field, each step of α moves
    // most of a block's levels at once and the best step is mostly the start.
    EXPECT_GT(st.rows_improved, 0);
    // Valid blocks: levels in range; sub-block scales untouched; d, m within the bound of ggml's.
    const int64_t qb = ggml_block_size(t);
    GGMLBlockLevels lv;
    for (int64_t b = 0; b < L.rows * L.cols / qb; ++b) {
      const uint8_t* pa = a.data() + size_t(b) * ggml_type_size(t);
      const uint8_t* pb = base.data() + size_t(b) * ggml_type_size(t);
      ggml_block_levels(t, pa, &lv);
      for (int j = 0; j < qb; ++j) {
        const int q = ggml_block_level(t, pa, j);
        ASSERT_TRUE(q >= lv.qmin && q <= lv.qmax) << q;
      }
      ASSERT_EQ(sub_scales(t, pa), sub_scales(t, pb)) << "block " << b;
      const GGMLScaleFields fa = ggml_block_scale_fields(t, pa), fb = ggml_block_scale_fields(t, pb);
      ASSERT_TRUE(std::isfinite(fa.d) && std::isfinite(fa.m));
      if (fa.d * fb.d < 0) ADD_FAILURE() << "d changed sign in block " << b;
    }
  }
}

TEST(AutoRoundGGML, WithoutStepsOrScalesItStaysBounded) {
  const Layer L = make_layer(16, 256, 400, 21);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q4_K}) {
    SCOPED_TRACE(ggml_type_name(t));
    // Scales fixed, no refit: every block keeps ggml's d and m bit for bit.
    AutoRoundOptions o;
    o.scale_bound = 0;
    o.refit_scales = false;
    AutoRoundStats st;
    const auto a = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, o, &st, "t");
    const auto base = imatrix_round(t, L, L.H, L.N);
    for (int64_t b = 0; b < L.rows * L.cols / ggml_block_size(t); ++b) {
      const uint8_t* pa = a.data() + size_t(b) * ggml_type_size(t);
      const uint8_t* pb = base.data() + size_t(b) * ggml_type_size(t);
      const GGMLScaleFields fa = ggml_block_scale_fields(t, pa), fb = ggml_block_scale_fields(t, pb);
      ASSERT_EQ(fa.d, fb.d);
      ASSERT_EQ(fa.m, fb.m);
    }
    EXPECT_LE(st.loss, st.init_loss * (1 + 1e-6));
    // With the scales tuned, α stays in [1 − b, 1 + b]: |d| ≤ (1 + b)·|d_ggml| up to f16 rounding.
    AutoRoundOptions s;
    s.scale_bound = 0.1;
    s.refit_scales = false;
    const auto c = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, s, nullptr, "t");
    for (int64_t b = 0; b < L.rows * L.cols / ggml_block_size(t); ++b) {
      const GGMLScaleFields fc = ggml_block_scale_fields(t, c.data() + size_t(b) * ggml_type_size(t));
      const GGMLScaleFields fb = ggml_block_scale_fields(t, base.data() + size_t(b) * ggml_type_size(t));
      ASSERT_LE(std::fabs(fc.d), 1.1f * std::fabs(fb.d) * (1 + 1e-3f) + 1e-7f) << b;
      ASSERT_GE(std::fabs(fc.d), 0.9f * std::fabs(fb.d) * (1 - 1e-3f) - 1e-7f) << b;
    }
  }
}

TEST(AutoRoundGGML, FromGptqBlocksNeverAboveGptq) {
  const Layer L = make_layer(16, 512, 640, 9);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q5_1, GGMLType::Q4_K, GGMLType::Q6_K}) {
    SCOPED_TRACE(ggml_type_name(t));
    GPTQStats gs;
    const auto g = gptq_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, {}, &gs, "t");
    AutoRoundOptions o;
    o.iters = 50;
    AutoRoundStats st;
    const auto a = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, o, &st, "t", g.data());
    const double eg = output_error_of(L, decode(t, g, L.rows, L.cols).data());
    const double ea = output_error_of(L, decode(t, a, L.rows, L.cols).data());
    EXPECT_NEAR(st.init_loss, eg, 1e-6 * eg);  // the start's offsets reproduce GPTQ's levels exactly
    EXPECT_LE(ea, eg * (1 + 1e-6));
  }
}

TEST(AutoRoundGGML, BytesDoNotDependOnThreadsOrRuns) {
  const Layer L = make_layer(80, 512, 600, 13);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q5_K}) {
    AutoRoundOptions o;
    o.iters = 40;
    const int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    const auto a = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, o, nullptr, "t");
    omp_set_num_threads(std::max(saved, 2));
    const auto b = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, o, nullptr, "t");
    const auto c = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, o, nullptr, "t");
    omp_set_num_threads(saved);
    EXPECT_EQ(a, b) << ggml_type_name(t);
    EXPECT_EQ(b, c) << ggml_type_name(t);
  }
}

TEST(AutoRoundGGML, DeadColumnsAreCounted) {
  const std::vector<int64_t> dead = {0, 5, 64, 300};
  const Layer L = make_layer(16, 512, 256, 3, dead);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q6_K}) {
    AutoRoundStats st;
    const auto a = autoround_quantize_ggml(L.W.data(), L.rows, L.cols, L.H.data(), L.N, t, {}, &st, "t");
    EXPECT_EQ(st.dead_columns, int64_t(dead.size()));
    const auto D = decode(t, a, L.rows, L.cols);
    EXPECT_NEAR(st.loss, output_error_of(L, D.data()), 1e-6 * st.loss);
    for (int64_t r = 0; r < L.rows; ++r)
      for (int64_t j : dead) EXPECT_EQ(D[size_t(r * L.cols + j)], 0.0f) << r << "," << j;
  }
}

TEST(AutoRoundGGML, BadInputNamesTheTensor) {
  const Layer L = make_layer(4, 64, 64, 1);
  const auto contains_all = [](const std::string& m, std::initializer_list<const char*> parts) {
    for (const char* p : parts) EXPECT_NE(m.find(p), std::string::npos) << m << " lacks " << p;
  };
  const auto run = [&](GGMLType t, AutoRoundOptions o, const float* W) {
    return testing::error_of(
        [&] { autoround_quantize_ggml(W, L.rows, L.cols, L.H.data(), L.N, t, o, nullptr, "blk.0.ffn_up"); });
  };
  contains_all(run(GGMLType::Q4_K, {}, L.W.data()), {"blk.0.ffn_up", "multiple of", "256"});
  contains_all(run(GGMLType::F16, {}, L.W.data()), {"blk.0.ffn_up", "F16"});
  AutoRoundOptions bad;
  bad.iters = 0;
  contains_all(run(GGMLType::Q4_0, bad, L.W.data()), {"blk.0.ffn_up", "--iters", "0"});
  bad = {};
  bad.lr = 2;
  contains_all(run(GGMLType::Q4_0, bad, L.W.data()), {"blk.0.ffn_up", "--lr", "2"});
  auto W = L.W;
  W[7] = std::nanf("");
  contains_all(run(GGMLType::Q4_0, {}, W.data()), {"blk.0.ffn_up", "weight [0, 7]"});
}

}  // namespace
}  // namespace moetool
