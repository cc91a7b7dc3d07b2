// tests/expert_rewrite_test.cc — the experts rewriter (compress/expert_rewrite.h) on every MoE family:
// keeping every expert gives bit-identical logits; keeping K gives the logits of the original model
// whose other experts' router logits are −∞ (their selection scores too, for DeepSeek-V3's biased
// group-limited routing); slimming equals the original with the dropped neurons' down_proj columns
// zeroed; bad edits are one-line errors that leave nothing behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include "compress/expert_rewrite.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/masked_experts.h"
#include "engine/overlay_weights.h"
#include "formats/synth.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;

std::string synth(const TempDir& d, const std::string& family) {
  SynthOptions so;
  so.family = family;
  so.preset = "small";  // 8 experts: DeepSeek-V3's 2 groups keep 2 of 4 each
  so.seed = 33;
  synth_model(d.file("src"), so);
  return d.file("src");
}

ExpertRewrite edit_all_layers(const Model& m, const std::vector<int64_t>& keep) {
  ExpertRewrite rw;
  rw.num_experts = static_cast<int64_t>(keep.size());
  for (int64_t l = 0; l < m.config().num_layers; ++l)
    if (m.config().is_moe_layer(l)) rw.layers.push_back({l, keep, {}});
  return rw;
}

std::vector<float> logits_of(std::shared_ptr<const WeightSource> w, const std::vector<int32_t>& toks) {
  return Engine(std::move(w)).logits(toks);
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

class Rewrite : public ::testing::TestWithParam<std::string> {};

TEST_P(Rewrite, KeepAllIsBitIdenticalAndKeepKEqualsMaskedRouting) {
  TempDir d;
  const Model src = Model::open(synth(d, GetParam()));
  const auto toks = testing::random_tokens(48, src.config().vocab_size, 5);
  const auto base = logits_of(safetensors_weights(src), toks);

  const RewriteResult all = rewrite_experts(src, edit_all_layers(src, {0, 1, 2, 3, 4, 5, 6, 7}), d.file("all"));
  EXPECT_EQ(all.params, all.source_params);
  const Model back_all = Model::open(d.file("all"));
  EXPECT_TRUE(back_all.check().empty());
  EXPECT_EQ(logits_of(safetensors_weights(back_all), toks), base) << "keeping every expert changed the logits";

  // Two experts of each DeepSeek-V3 group (0..3, 4..7); any 4 elsewhere.
  const std::vector<int64_t> keep = {1, 2, 4, 7};
  const RewriteResult r = rewrite_experts(src, edit_all_layers(src, keep), d.file("k4"));
  const Model pruned = Model::open(d.file("k4"));
  EXPECT_TRUE(pruned.check().empty());
  EXPECT_EQ(pruned.config().moe->num_experts, 4);
  EXPECT_LT(r.params, r.source_params);
  std::vector<bool> out(8, true);
  for (int64_t e : keep) out[static_cast<size_t>(e)] = false;
  std::vector<std::vector<bool>> masked(static_cast<size_t>(src.config().num_layers));
  for (int64_t l = 0; l < src.config().num_layers; ++l)
    if (src.config().is_moe_layer(l)) masked[static_cast<size_t>(l)] = out;
  const auto want = logits_of(std::make_shared<MaskedExperts>(safetensors_weights(src), masked), toks);
  const auto got = logits_of(safetensors_weights(pruned), toks);
  // Same weights, same selections, same expert order: the only difference is the masked experts'
  // exact zeros in the routing normaliser (softmax) — nothing that rounds. Allow one float32 ulp of
  // the logits' scale per layer for a different summation grouping in the kernels.
  float scale = 0;
  for (float v : want) scale = std::max(scale, std::fabs(v));
  EXPECT_LE(max_abs_diff(got, want), 4 * 1.2e-7f * scale * static_cast<float>(src.config().num_layers))
      << GetParam();
  EXPECT_GT(max_abs_diff(got, base), 1e-3f) << "pruning changed nothing: the test would not see a wrong expert";
}

INSTANTIATE_TEST_SUITE_P(Families, Rewrite, ::testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"));

TEST(Rewrite, SlimmedExpertsEqualTheOriginalWithThoseNeuronsZeroed) {
  TempDir d;
  const Model src = Model::open(synth(d, "mixtral"));
  const int64_t I = src.config().moe->expert_intermediate, keep_w = I * 3 / 4;
  ExpertRewrite rw = edit_all_layers(src, {0, 1, 2, 3, 4, 5, 6, 7});
  rw.expert_intermediate = keep_w;
  auto base = safetensors_weights(src);
  auto overlay = std::make_shared<OverlayWeights>(base);
  for (auto& e : rw.layers)
    for (int64_t j = 0; j < 8; ++j) {
      std::vector<int64_t> ids;
      for (int64_t n = 0; n < I; ++n)
        if ((n * 7 + j + e.layer) % 4 != 0) ids.push_back(n);
      ids.resize(static_cast<size_t>(keep_w));
      // The original with the dropped neurons' down_proj columns zeroed.
      const auto wd = base->matrix(Role::ExpertDown, e.layer, j);
      Tensor z = Tensor::zeros(DType::F32, {wd->rows(), wd->cols()});
      wd->to_dense(z.as<float>());
      std::vector<bool> kept(static_cast<size_t>(I), false);
      for (int64_t n : ids) kept[static_cast<size_t>(n)] = true;
      for (int64_t h = 0; h < wd->rows(); ++h)
        for (int64_t n = 0; n < I; ++n)
          if (!kept[static_cast<size_t>(n)]) z.as<float>()[h * I + n] = 0.0f;
      overlay->set(Role::ExpertDown, e.layer, j, make_dense_matrix(z, "zeroed"));
      e.neurons.push_back(ids);
    }
  rewrite_experts(src, rw, d.file("slim"));
  const Model slim = Model::open(d.file("slim"));
  EXPECT_TRUE(slim.check().empty());
  EXPECT_EQ(slim.config().moe->expert_intermediate, keep_w);
  const auto toks = testing::random_tokens(40, src.config().vocab_size, 6);
  const auto want = logits_of(overlay, toks), got = logits_of(safetensors_weights(slim), toks);
  // down_proj sums I' products instead of I (the others exactly 0): float32 reassociation only, a
  // relative 2^-24 · I per product sum; 1e-5 of the logits' scale is well above that and far below
  // a wrong neuron (checked: ≥ 1e-2).
  float scale = 0;
  for (float v : want) scale = std::max(scale, std::fabs(v));
  EXPECT_LE(max_abs_diff(got, want), 1e-5f * scale);
  EXPECT_GT(max_abs_diff(got, logits_of(base, toks)), 1e-2f);
}

TEST(Rewrite, BadEditsAreOneLineAndLeaveNothing) {
  TempDir d;
  const Model src = Model::open(synth(d, "qwen2_moe"));
  auto expect = [&](ExpertRewrite rw, const std::string& needle) {
    const std::string e = testing::error_of([&] { rewrite_experts(src, rw, d.file("out")); });
    EXPECT_NE(e.find(needle), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    EXPECT_FALSE(std::filesystem::exists(d.file("out")));
  };
  expect(edit_all_layers(src, {0, 9}), "expert 9 out of range");
  expect(edit_all_layers(src, {3, 3}), "expert 3 listed twice");
  expect(edit_all_layers(src, {3}), "cannot serve 2 experts per token");
  ExpertRewrite rw = edit_all_layers(src, {0, 1});
  rw.layers.pop_back();
  expect(rw, "layer edits for");
  rw = edit_all_layers(src, {0, 1});
  rw.expert_intermediate = 8;
  expect(rw, "no neurons chosen");
  TempDir dd;
  SynthOptions so;
  so.family = "llama";
  synth_model(dd.file("dense"), so);
  const std::string e = testing::error_of([&] {
    rewrite_experts(Model::open(dd.file("dense")), ExpertRewrite{}, dd.file("out"));
  });
  EXPECT_NE(e.find("expected a Mixture-of-Experts model"), std::string::npos) << e;
}

}  // namespace
}  // namespace moetool
