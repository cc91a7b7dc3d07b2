// tests/gptq_test.cc — GPTQ (compress/gptq.h) and the GPTQ weight matrix (kernels/linear_gptq.h).
// On correlated calibration inputs (X = Z·A, uneven column scales) GPTQ's layer-output error
// ‖(W − Ŵ)Xᵀ‖² is well below RTN's at 2, 3 and 4 bits, grouped and per row, with and without
// act-order; it agrees with an independent textbook float64 GPTQ (explicit inverse, no Cholesky, no
// lazy batches); with a diagonal Hessian it is exactly RTN; dead columns are zeroed and counted;
// the reported loss equals the measured ‖ΔW Xᵀ‖²/N; an indefinite Hessian raises the damping. The
// matrix multiplies like int_dequantize + a float64 product for 1, 3 (fused path) and 64 tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "compress/gptq.h"
#include "formats/gptq_pack.h"
#include "compress/int_quant.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/backend_shared.h"
#include "kernels/linear_gptq.h"
#include "tests/gptq_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::Layer;
using testing::make_layer;
using testing::output_error_of;

// Measured ‖(W − Ŵ) Xᵀ‖_F² / N in float64.
double output_error(const Layer& L, const IntQuantized& q) {
  std::vector<float> D(static_cast<size_t>(L.rows * L.cols));
  int_dequantize(q, D.data());
  return output_error_of(L, D.data());
}

// Textbook GPTQ in float64 (the paper's Algorithm without the Cholesky reformulation or lazy
// batches): quantize column k, e = (w − ŵ)/Hinv_kk, W[:, k+1:] −= e·Hinv[k, k+1:], then eliminate k
// from Hinv. Group parameters from the updated weights at each group's first column.
IntQuantized textbook_gptq(const Layer& L, const IntQuantSpec& spec, double damp) {
  const int64_t n = L.cols, rows = L.rows;
  const int64_t gs = spec.group_size == -1 ? n : spec.group_size;
  std::vector<double> Hd = L.H;
  double mean = 0;
  for (int64_t j = 0; j < n; ++j) mean += Hd[size_t(j * n + j)] / double(n);
  for (int64_t j = 0; j < n; ++j) Hd[size_t(j * n + j)] += damp * mean;
  // Hinv by Gauss-Jordan.
  std::vector<double> M = Hd, Hi(size_t(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) Hi[size_t(j * n + j)] = 1.0;
  for (int64_t c = 0; c < n; ++c) {
    const double p = M[size_t(c * n + c)];
    for (int64_t b = 0; b < n; ++b) M[size_t(c * n + b)] /= p, Hi[size_t(c * n + b)] /= p;
    for (int64_t a = 0; a < n; ++a) {
      if (a == c) continue;
      const double f = M[size_t(a * n + c)];
      if (f == 0) continue;
      for (int64_t b = 0; b < n; ++b) M[size_t(a * n + b)] -= f * M[size_t(c * n + b)], Hi[size_t(a * n + b)] -= f * Hi[size_t(c * n + b)];
    }
  }
  std::vector<double> Wd(L.W.begin(), L.W.end());
  std::vector<float> Wf(static_cast<size_t>(rows * n));
  IntQuantized out = rtn_quantize(L.W.data(), rows, n, spec);  // layout; values overwritten below
  const int32_t maxq = (1 << spec.bits) - 1;
  std::vector<IntGroupParams> p(static_cast<size_t>(rows));
  for (int64_t k = 0; k < n; ++k) {
    for (int64_t r = 0; r < rows; ++r) {
      if (k % gs == 0) {
        std::vector<float> g(static_cast<size_t>(gs));
        for (int64_t j = 0; j < gs; ++j) g[size_t(j)] = float(Wd[size_t(r * n + k + j)]);
        p[size_t(r)] = int_minmax_params(g.data(), gs, spec.bits, spec.sym);
        out.scales[size_t(k / gs * rows + r)] = p[size_t(r)].scale;
        out.zeros[size_t(k / gs * rows + r)] = p[size_t(r)].zero;
      }
      const double w = Wd[size_t(r * n + k)];
      const int32_t q = int_quantize_value(float(w), p[size_t(r)], maxq);
      out.q[size_t(r * n + k)] = uint8_t(q);
      const double e = (w - double(p[size_t(r)].scale) * (q - p[size_t(r)].zero)) / Hi[size_t(k * n + k)];
      for (int64_t j = k + 1; j < n; ++j) Wd[size_t(r * n + j)] -= e * Hi[size_t(k * n + j)];
    }
    const double d = Hi[size_t(k * n + k)];
    for (int64_t a = k + 1; a < n; ++a)
      for (int64_t b = k + 1; b < n; ++b) Hi[size_t(a * n + b)] -= Hi[size_t(a * n + k)] * Hi[size_t(k * n + b)] / d;
  }
  return out;
}

TEST(GPTQ, BeatsRtnOnCorrelatedInputs) {
  const Layer L = make_layer(32, 256, 384, 7);
  for (int bits : {2, 3, 4})
    for (int64_t gs : {32, 128, -1})
      for (int mode = 0; mode < 3; ++mode) {  // plain, act-order, act-order + static groups
        if (gs == -1 && mode == 2) continue;
        SCOPED_TRACE(::testing::Message() << "bits=" << bits << " gs=" << gs << " mode=" << mode);
        GPTQOptions o;
        o.spec = {bits, gs, true};
        o.act_order = mode >= 1;
        o.static_groups = mode == 2;
        GPTQStats st;
        const IntQuantized g = gptq_quantize(L.W.data(), L.rows, L.cols, L.H.data(), L.N, o, &st, "t");
        const IntQuantized r = rtn_quantize(L.W.data(), L.rows, L.cols, o.spec);
        const double eg = output_error(L, g), er = output_error(L, r);
        // Measured ratios (this seed): 2 bits 0.78 .. 0.88 in column order, 0.44 .. 0.60 with
        // act-order; 3 and 4 bits 0.40 .. 0.50 and 0.23 .. 0.28.
        const double limit = bits == 2 ? (mode == 0 ? 0.95 : 0.7) : (mode == 0 ? 0.6 : 0.35);
        EXPECT_LT(eg, limit * er) << "gptq " << eg << " rtn " << er;
        EXPECT_NEAR(st.loss, eg, 2e-3 * eg);
        EXPECT_EQ(st.dead_columns, 0);
        EXPECT_DOUBLE_EQ(st.damp_used, 0.01);
        const int64_t g_size = gs == -1 ? L.cols : gs;
        std::vector<int64_t> per_group(size_t(g.ngroups), 0);
        for (int32_t gi : g.g_idx) ++per_group[size_t(gi)];
        for (int64_t c : per_group) EXPECT_EQ(c, g_size);  // every group still holds group_size columns
        if (mode != 1) {
          for (int64_t j = 0; j < L.cols; ++j) ASSERT_EQ(g.g_idx[size_t(j)], j / g_size);
        }
      }
}

TEST(GPTQ, AsymmetricAndLazyBlocksAgreeWithTextbookFloat64) {
  const Layer L = make_layer(24, 128, 384, 17);
  for (bool sym : {true, false})
    for (int64_t gs : {32, -1})
      for (int64_t bs : {16, 128}) {
        SCOPED_TRACE(::testing::Message() << "sym=" << sym << " gs=" << gs << " block=" << bs);
        GPTQOptions o;
        o.spec = {3, gs, sym};
        o.block_size = bs;
        GPTQStats st;
        const IntQuantized g = gptq_quantize(L.W.data(), L.rows, L.cols, L.H.data(), L.N, o, &st);
        const IntQuantized ref = textbook_gptq(L, o.spec, o.damp);
        const double eg = output_error(L, g), eref = output_error(L, ref);
        EXPECT_NEAR(eg, eref, 0.03 * eref) << "moetool " << eg << " textbook " << eref;
        size_t same = 0;
        for (size_t k = 0; k < g.q.size(); ++k) same += g.q[k] == ref.q[k];
        EXPECT_GE(double(same) / double(g.q.size()), 0.97);
        EXPECT_NEAR(st.loss, eg, 2e-3 * eg);
        EXPECT_LT(eg, 0.75 * output_error(L, rtn_quantize(L.W.data(), L.rows, L.cols, o.spec)));
      }
}

TEST(GPTQ, DiagonalHessianIsExactlyRtn) {
  const int64_t rows = 16, cols = 128;
  const Layer L = make_layer(rows, cols, 8, 3);
  std::vector<double> I(size_t(cols * cols), 0.0), D(size_t(cols * cols), 0.0);
  for (int64_t j = 0; j < cols; ++j) I[size_t(j * cols + j)] = 4.0, D[size_t(j * cols + j)] = 1.0 + double((j * 31) % 17);
  for (bool sym : {true, false})
    for (int64_t gs : {32, -1}) {
      SCOPED_TRACE(::testing::Message() << "sym=" << sym << " gs=" << gs);
      GPTQOptions o;
      o.spec = {4, gs, sym};
      const IntQuantized r = rtn_quantize(L.W.data(), rows, cols, o.spec);
      GPTQStats st;
      const IntQuantized g = gptq_quantize(L.W.data(), rows, cols, I.data(), 100, o, &st);
      EXPECT_EQ(g.q, r.q);
      EXPECT_EQ(g.scales, r.scales);
      EXPECT_EQ(g.zeros, r.zeros);
      EXPECT_EQ(g.g_idx, r.g_idx);
      // loss = Σ_j H_jj ‖ΔW[:, j]‖² / N for a diagonal H.
      std::vector<float> Dq(static_cast<size_t>(rows * cols));
      int_dequantize(r, Dq.data());
      double want = 0;
      for (size_t k = 0; k < Dq.size(); ++k) want += 4.0 * std::pow(double(L.W[k]) - Dq[k], 2);
      EXPECT_NEAR(st.loss, want / 100.0, 1e-4 * want / 100.0);
      // Act-order over a diagonal H: a permutation without updates — per row or with static
      // groups still exactly RTN.
      o.act_order = true;
      o.static_groups = true;
      const IntQuantized a = gptq_quantize(L.W.data(), rows, cols, D.data(), 100, o);
      EXPECT_EQ(a.q, r.q);
      EXPECT_EQ(a.scales, r.scales);
      EXPECT_EQ(a.g_idx, r.g_idx);
    }
}

TEST(GPTQ, DeadColumns) {
  const std::vector<int64_t> dead = {0, 5, 77, 127};
  const Layer L = make_layer(16, 128, 256, 23, dead);
  for (bool act : {false, true}) {
    GPTQOptions o;
    o.spec = {4, 32, false};
    o.act_order = act;
    GPTQStats st;
    const IntQuantized g = gptq_quantize(L.W.data(), L.rows, L.cols, L.H.data(), L.N, o, &st);
    EXPECT_EQ(st.dead_columns, int64_t(dead.size()));
    std::vector<float> D(static_cast<size_t>(L.rows * L.cols));
    int_dequantize(g, D.data());
    for (int64_t r = 0; r < L.rows; ++r)
      for (int64_t j : dead) EXPECT_EQ(D[size_t(r * L.cols + j)], 0.0f);
    const double eg = output_error(L, g);
    EXPECT_TRUE(std::isfinite(eg));
    EXPECT_NEAR(st.loss, eg, 2e-3 * eg);
    EXPECT_LT(eg, 0.75 * output_error(L, rtn_quantize(L.W.data(), L.rows, L.cols, o.spec)));
  }
  // All columns dead (no calibration data): every weight becomes 0.
  const std::vector<double> Z(size_t(128 * 128), 0.0);
  GPTQStats st;
  const IntQuantized g = gptq_quantize(L.W.data(), L.rows, L.cols, Z.data(), 0, GPTQOptions{}, &st);
  EXPECT_EQ(st.dead_columns, 128);
  std::vector<float> D(static_cast<size_t>(L.rows * L.cols));
  int_dequantize(g, D.data());
  for (float v : D) ASSERT_EQ(v, 0.0f);
}

TEST(GPTQ, LargeHessianLapackPath) {
  // cols > 512 takes the LAPACK factorization: H = XᵀX of 64 correlated rows + a small diagonal.
  const int64_t rows = 32, cols = 640, N = 64;
  const Layer L = make_layer(rows, cols, N, 91);
  std::vector<double> H = L.H;
  for (int64_t j = 0; j < cols; ++j) H[size_t(j * cols + j)] += 0.5;
  // Measured tr(ΔW H ΔWᵀ) / N for this H.
  auto err_h = [&](const IntQuantized& q) {
    std::vector<float> D(size_t(rows * cols));
    int_dequantize(q, D.data());
    double e = 0;
    std::vector<double> d(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) d[size_t(j)] = double(L.W[size_t(r * cols + j)]) - D[size_t(r * cols + j)];
      for (int64_t a = 0; a < cols; ++a) {
        double s = 0;
        for (int64_t b = 0; b < cols; ++b) s += H[size_t(a * cols + b)] * d[size_t(b)];
        e += d[size_t(a)] * s;
      }
    }
    return e / double(N);
  };
  for (bool act : {false, true}) {
    GPTQOptions o;
    o.spec = {4, 64, true};
    o.act_order = act;
    GPTQStats st;
    const IntQuantized g = gptq_quantize(L.W.data(), rows, cols, H.data(), N, o, &st);
    const double eg = err_h(g), er = err_h(rtn_quantize(L.W.data(), rows, cols, o.spec));
    EXPECT_NEAR(st.loss, eg, 2e-3 * eg) << "act=" << act;
    EXPECT_LT(eg, 0.6 * er) << "act=" << act;
  }
}

TEST(GPTQ, IndefiniteHessianRaisesDampingThenFails) {
  const int64_t rows = 8, cols = 64;
  const auto W = testing::random_normal(size_t(rows * cols), 41);
  // 2×2 blocks [[1, 3], [3, 1]] (eigenvalues 4, −2): λ = 0.01, 0.1, 1 fail; λ = 10 works.
  std::vector<double> H(size_t(cols * cols), 0.0);
  for (int64_t j = 0; j < cols; j += 2) {
    H[size_t(j * cols + j)] = H[size_t((j + 1) * cols + j + 1)] = 1.0;
    H[size_t(j * cols + j + 1)] = H[size_t((j + 1) * cols + j)] = 3.0;
  }
  GPTQOptions o;
  o.spec = {4, 32, true};
  GPTQStats st;
  const IntQuantized g = gptq_quantize(W.data(), rows, cols, H.data(), 10, o, &st);
  EXPECT_NEAR(st.damp_used, 10.0, 1e-9);
  EXPECT_NEAR(st.lambda, 10.0, 1e-9);
  EXPECT_EQ(g.q.size(), size_t(rows * cols));
  for (int64_t j = 0; j < cols; j += 2) H[size_t(j * cols + j + 1)] = H[size_t((j + 1) * cols + j)] = 1000.0;
  try {
    gptq_quantize(W.data(), rows, cols, H.data(), 10, o, nullptr, "layer 2 down_proj");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 2 down_proj"), std::string::npos);
  }
  std::vector<float> bad = W;
  bad[3] = INFINITY;
  EXPECT_THROW(gptq_quantize(bad.data(), rows, cols, H.data(), 10, o), Error);
  o.spec.group_size = 48;
  EXPECT_THROW(gptq_quantize(W.data(), rows, cols, H.data(), 10, o), Error);
}

// ---- the GPTQ weight matrix ----

void expect_matmul_matches(const WeightMatrix& m, const IntQuantized& q, int64_t n, float beta, uint64_t seed) {
  const int64_t rows = q.rows, cols = q.cols;
  std::vector<float> D(static_cast<size_t>(rows * cols));
  int_dequantize(q, D.data());
  const auto X = testing::random_normal(size_t(n * cols), seed);
  const auto Y0 = testing::random_normal(size_t(n * rows), seed + 1);
  std::vector<float> Y = Y0;
  m.matmul(X.data(), n, Y.data(), beta);
  double maxref = 0, maxdiff = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double ref = beta * double(Y0[size_t(t * rows + r)]);
      for (int64_t j = 0; j < cols; ++j) ref += double(X[size_t(t * cols + j)]) * D[size_t(r * cols + j)];
      maxref = std::max(maxref, std::fabs(ref));
      maxdiff = std::max(maxdiff, std::fabs(ref - Y[size_t(t * rows + r)]));
    }
  EXPECT_LE(maxdiff, 1e-5 * maxref) << "n=" << n << " beta=" << beta << " " << m.storage();
  EXPECT_GT(maxref, 0.0);
}

TEST(GPTQMatrix, MatmulEqualsDequantizedFloat64Product) {
  const Layer L = make_layer(96, 256, 256, 51);
  for (int bits : {2, 3, 4, 8})
    for (bool act : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "bits=" << bits << " act=" << act);
      GPTQOptions o;
      o.spec = {bits, 32, bits != 4};
      o.act_order = act;
      const IntQuantized q = gptq_quantize(L.W.data(), L.rows, L.cols, L.H.data(), L.N, o);
      const auto m = make_gptq_matrix(q, "w");
      EXPECT_EQ(m->rows(), L.rows);
      EXPECT_EQ(m->cols(), L.cols);
      EXPECT_EQ(m->storage(), str("GPTQ int", bits, " g32", act ? " act-order" : ""));
      EXPECT_EQ(m->stored_bytes(), int_quant_bytes(o.spec, L.rows, L.cols));
      std::vector<float> D(static_cast<size_t>(L.rows * L.cols)), E(D.size());
      int_dequantize(q, D.data());
      m->to_dense(E.data());
      EXPECT_EQ(D, E);
      for (int64_t n : {1, 3, 64})
        for (float beta : {0.0f, 0.5f}) expect_matmul_matches(*m, q, n, beta, 300 + uint64_t(n));
    }
}

// The stored tensors a GPU backend uploads (WeightMatrix::packed) decode, with the CUDA kernel's own
// per-element function (shared::gptq_int4_value), to exactly the CPU's weights.
TEST(GPTQMatrix, PackedTensorsDecodeLikeTheGpu) {
  const Layer L = make_layer(64, 128, 128, 52);
  for (bool act : {false, true}) {
    GPTQOptions o;
    o.spec = {4, 32, false};
    o.act_order = act;
    const IntQuantized q = gptq_quantize(L.W.data(), L.rows, L.cols, L.H.data(), L.N, o);
    const auto m = make_gptq_matrix(q, "w");
    const PackedWeight* p = m->packed();
    ASSERT_NE(p, nullptr);
    ASSERT_EQ(p->kind, PackedWeight::Kind::Gptq);
    EXPECT_EQ(p->bits, 4);
    ASSERT_EQ(p->ngroups, L.cols / 32);
    std::vector<float> scales(static_cast<size_t>(p->ngroups * L.rows));
    for (size_t i = 0; i < scales.size(); ++i) scales[i] = f16_to_f32(p->scales[i]);
    std::vector<float> D(static_cast<size_t>(L.rows * L.cols));
    m->to_dense(D.data());
    int64_t differ = 0;
    for (int64_t r = 0; r < L.rows; ++r)
      for (int64_t c = 0; c < L.cols; ++c)
        differ += shared::gptq_int4_value(p->qweight, p->qzeros, scales.data(), p->g_idx, L.rows, c, r) !=
                  D[static_cast<size_t>(r * L.cols + c)];
    EXPECT_EQ(differ, 0) << "act-order " << act;
  }
}

TEST(GPTQMatrix, SeveralTilesAndViewsOverExternalTensors) {
  // cols 4096 → 256-row tiles: 320 rows take two (one partial).
  const int64_t rows = 320, cols = 4096;
  const auto W = testing::random_normal(size_t(rows * cols), 61);
  const IntQuantized q = rtn_quantize(W.data(), rows, cols, {4, 128, true});
  const GPTQTensors t = gptq_pack(q);
  const auto m = make_gptq_matrix(4, rows, cols, t.ngroups, t.qweight.data(), t.qzeros.data(), t.scales.data(),
                                  t.g_idx.data(), nullptr, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(m->storage(), "GPTQ int4 g128");
  expect_matmul_matches(*m, q, 64, 0.0f, 71);
  expect_matmul_matches(*m, q, 2, 1.0f, 72);

  std::vector<int32_t> g = t.g_idx;
  g[9] = int32_t(t.ngroups);
  try {
    make_gptq_matrix(4, rows, cols, t.ngroups, t.qweight.data(), t.qzeros.data(), t.scales.data(), g.data(), nullptr,
                     "model.layers.0.mlp.down_proj");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers.0.mlp.down_proj"), std::string::npos);
  }
  EXPECT_THROW(make_gptq_matrix(4, 4, cols, t.ngroups, t.qweight.data(), t.qzeros.data(), t.scales.data(),
                                t.g_idx.data(), nullptr, "w"),
               Error);  // 4 outputs × 4 bits: qzeros not packable
  EXPECT_THROW(make_gptq_matrix(1, rows, cols, t.ngroups, t.qweight.data(), t.qzeros.data(), t.scales.data(),
                                t.g_idx.data(), nullptr, "w"),
               Error);
  IntQuantized z = q;
  z.zeros[0] = 0;
  EXPECT_THROW(make_gptq_matrix(z, "w"), Error);
}

}  // namespace
}  // namespace moetool
