// tests/bf16_emulation_test.cc — the CPU engine's bf16 mode, which emulates the CUDA engine's bf16
// arithmetic: the bf16 weight matrix against float64 on rounded values, the tiled bf16 attention
// against a plainly written float64 reference of its schedule (scores rising across tiles, so every
// tile rescales) and against float32 attention, the engine in bf16 against float32 (TinyStories on
// real text, synthetic MoE), and the CLI flag. The GPU side of the comparison is in
// tests/cuda_engine_test.cc.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "formats/ggml_quants.h"
#include "core/fs.h"
#include "formats/tokenizer.h"
#include "kernels/backend_shared.h"
#include "kernels/linear_bf16.h"
#include "kernels/linear_quant.h"
#include "kernels/ops.h"
#include "tests/test_util.h"
#include "engine/engine.h"
#include "engine/weights.h"

namespace moetool::testing {
namespace {

float r16(float x) { return shared::bf16_to_float(shared::float_to_bf16(x)); }

double nmse(const std::vector<float>& ref, const std::vector<float>& got) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (static_cast<double>(ref[i]) - got[i]) * (static_cast<double>(ref[i]) - got[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return num / den;
}

double top1(const std::vector<float>& a, const std::vector<float>& b, int64_t V) {
  const int64_t n = static_cast<int64_t>(a.size()) / V;
  int64_t same = 0;
  for (int64_t t = 0; t < n; ++t) {
    auto ra = a.begin() + t * V, rb = b.begin() + t * V;
    same += std::max_element(ra, ra + V) - ra == std::max_element(rb, rb + V) - rb;
  }
  return static_cast<double>(same) / static_cast<double>(n);
}

TEST(Bf16Emulation, MatrixEqualsFloat64OnRoundedValues) {
  const int64_t rows = 37, cols = 96, n = 5;
  const auto W = random_normal(static_cast<size_t>(rows * cols), 1);
  const auto X = random_normal(static_cast<size_t>(n * cols), 2);
  const auto src = quantize_matrix(GGMLType::F16, W.data(), rows, cols, "w");
  const auto m = make_bf16_matrix(*src);
  EXPECT_EQ(m->storage(), "bf16(F16)");
  EXPECT_EQ(m->stored_bytes(), static_cast<uint64_t>(rows * cols * 2));
  EXPECT_EQ(m->packed(), nullptr);
  std::vector<float> Wd(W.size()), Wr(W.size());
  src->to_dense(Wd.data());
  m->to_dense(Wr.data());
  int64_t moved = 0;
  for (size_t i = 0; i < W.size(); ++i) {
    EXPECT_EQ(Wr[i], r16(Wd[i]));
    moved += Wr[i] != Wd[i];
  }
  EXPECT_GT(moved, static_cast<int64_t>(W.size()) / 2);  // f16 values mostly do not fit bf16
  std::vector<float> ref(static_cast<size_t>(n * rows)), Y(ref.size(), 1.0f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < rows; ++j) {
      double a = 0;
      for (int64_t c = 0; c < cols; ++c)
        a += static_cast<double>(r16(X[static_cast<size_t>(i * cols + c)])) * r16(Wd[static_cast<size_t>(j * cols + c)]);
      ref[static_cast<size_t>(i * rows + j)] = static_cast<float>(a + 0.5);  // beta = 0.5 on Y = 1
    }
  m->matmul(X.data(), n, Y.data(), 0.5f);
  EXPECT_LE(nmse(ref, Y), 1e-12);
}

// Scores that rise along the keys: every tile raises the running maximum, so each tile's
// probabilities are rounded relative to a different maximum and rescaled afterwards. The reference
// writes that schedule out in float64 (only the bf16 rounding of each p in float, as specified).
TEST(Bf16Emulation, AttentionRescalesEveryTileLikeTheGpu) {
  const int64_t T = 200, d = 16, BN = shared::kAttnKeyTile;
  std::vector<float> q(static_cast<size_t>(T * d), 0.0f), k(static_cast<size_t>(T * d), 0.0f);
  auto v = random_normal(static_cast<size_t>(T * d), 3);
  for (auto& x : v) x = r16(x);
  for (int64_t t = 0; t < T; ++t) {
    q[static_cast<size_t>(t * d)] = 1.0f;
    k[static_cast<size_t>(t * d)] = r16(0.03f * static_cast<float>(t));
  }
  const float scale = 0.7f, sl2 = scale * 1.4426950408889634f;
  for (int64_t window : {0, 90}) {
    std::vector<float> out(static_cast<size_t>(T * d));
    ops::attention_bf16(q.data(), d, k.data(), d, v.data(), d, out.data(), T, 0, 1, 1, d, d, scale, window);
    double worst = 0;
    for (int64_t i = 0; i < T; ++i) {
      const int64_t first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
      std::vector<double> w(static_cast<size_t>(i + 1), 0.0);
      const float s_last = k[static_cast<size_t>(i * d)] * sl2;  // the row's final maximum
      for (int64_t j = first; j <= i; ++j) {
        const int64_t tile_end = std::min(i, (j / BN + 1) * BN - 1);  // the tile's running max: its last key
        const float mt = k[static_cast<size_t>(tile_end * d)] * sl2, sj = k[static_cast<size_t>(j * d)] * sl2;
        w[static_cast<size_t>(j)] = static_cast<double>(r16(std::exp2(sj - mt))) * std::exp2(static_cast<double>(mt) - s_last);
      }
      double l = 0;
      for (double x : w) l += x;
      for (int64_t e = 0; e < d; ++e) {
        double o = 0;
        for (int64_t j = first; j <= i; ++j) o += w[static_cast<size_t>(j)] * v[static_cast<size_t>(j * d + e)];
        worst = std::max(worst, std::abs(o / l - out[static_cast<size_t>(i * d + e)]));
      }
    }
    EXPECT_LE(worst, 2e-5) << "window " << window;
  }
}

TEST(Bf16Emulation, AttentionIsFloat32AttentionUpToProbabilityRounding) {
  const int64_t n = 100, pos0 = 30, T = pos0 + n, Hq = 4, Hkv = 2, d = 64;
  auto q = random_normal(static_cast<size_t>(n * Hq * d), 4), k = random_normal(static_cast<size_t>(T * Hkv * d), 5),
       v = random_normal(static_cast<size_t>(T * Hkv * d), 6);
  for (auto* x : {&q, &k, &v})
    for (float& e : *x) e = r16(e);
  for (int64_t window : {0, 50}) {
    std::vector<float> a(static_cast<size_t>(n * Hq * d)), b(a.size());
    ops::attention(q.data(), Hq * d, k.data(), Hkv * d, v.data(), Hkv * d, a.data(), n, pos0, Hq, Hkv, d, d, 0.125f,
                   window);
    ops::attention_bf16(q.data(), Hq * d, k.data(), Hkv * d, v.data(), Hkv * d, b.data(), n, pos0, Hq, Hkv, d, d,
                        0.125f, window);
    const double e = nmse(a, b);
    EXPECT_LE(e, 1e-4) << window;
    EXPECT_GT(e, 1e-12) << window << ": the probabilities were not rounded";
  }
}

TEST(Bf16Emulation, TinyStoriesInBf16OnTheCpu) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const std::string dir = shared_path("models/tinystories-656k");
  auto ids = Tokenizer::from_hf_dir(dir)->encode(read_file(shared_path("data/tinystories-calib.txt")));
  ids.resize(256);
  auto w = open_weights(dir);
  const auto a = Engine(w).logits(ids);
  Engine bf(w, true, DeviceOptions{Device::Cpu, Precision::BF16});
  const auto b = bf.logits(ids);
  const double e = nmse(a, b);
  EXPECT_LE(e, 1e-3);  // the bf16 bound (the GPU measured 1.5e-5 against float32)
  EXPECT_GT(e, 1e-9);  // and it is not float32
  EXPECT_GE(top1(a, b, w->config().vocab_size), 0.99);
  EXPECT_EQ(bf.logits(ids), b);  // deterministic
}

TEST(Bf16Emulation, MoeAndCommandLine) {
  TempDir td;
  auto w = synth_weights(td, "qwen2_moe", 9, DType::BF16);
  const auto toks = random_tokens(80, w->config().vocab_size, 10);
  const auto a = Engine(w).logits(toks);
  const auto b = Engine(w, true, DeviceOptions{Device::Cpu, Precision::BF16}).logits(toks);
  EXPECT_LE(nmse(a, b), 5e-3);
  EXPECT_GT(nmse(a, b), 1e-10);
  const auto r = run_moetool({"logits", td.file("m"), "--tokens", "1,2,3,4", "--dtype", "bf16", "-o", td.file("l.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("device cpu, bf16"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moetool::testing
