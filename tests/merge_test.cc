// tests/merge_test.cc — the merge job (compress/merge.h) end to end on synthetic models: K = E changes
// nothing (every group of one is copied, logits bit-identical); experts that are permuted copies of one
// expert merge back to that expert with unchanged logits when aligned (and change them when not — the
// check is not vacuous); every MoE family merges, loads back clean and runs; the groups are in the
// metadata; bad input from the command line is one line, exit 2, nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "compress/expert_rewrite.h"
#include "compress/merge.h"
#include "compress/merge_align.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/calibrate_job.h"
#include "engine/engine.h"
#include "formats/safetensors.h"
#include "formats/synth.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;

std::string synth(const TempDir& d, const std::string& name, const std::string& family, uint64_t seed,
                  const std::string& preset = "small") {
  return testing::synth_in(d, name, family, seed, preset);
}
std::string write_text(const TempDir& d, uint64_t seed, int words = 600) {
  return testing::seeded_text(d, seed, words);
}

std::pair<float, float> max_diff_and_scale(const std::vector<float>& a, const std::vector<float>& b) {
  float scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::fabs(a[i])), diff = std::max(diff, std::fabs(a[i] - b[i]));
  return {diff, scale};
}

merge::Options options(const std::string& src, const std::string& out, int64_t K, const std::string& text) {
  merge::Options o;
  o.model = src;
  o.output = out;
  o.experts = K;
  o.ctx = 64;
  o.calib_texts = {text};
  return o;
}

TEST(Merge, KeepingEveryExpertChangesNothing) {
  TempDir d;
  const std::string src = synth(d, "src", "mixtral", 5);
  const Model orig = Model::open(src);
  auto o = options(src, d.file("out"), orig.config().moe->num_experts, write_text(d, 1));
  const merge::Result r = merge::run(o);
  for (const auto& l : r.layers)
    for (const auto& g : l.groups) EXPECT_EQ(g.members.size(), 1u);
  const auto toks = testing::random_tokens(32, orig.config().vocab_size, 3);
  EXPECT_EQ(Engine(safetensors_weights(orig)).logits(toks), Engine(safetensors_weights(Model::open(o.output))).logits(toks));
}

// --router fit with K = E: each group is one expert, whose combined logit is its own logit, so the
// ridge fit recovers the router up to the per-token shift softmax ignores (R² ≈ 1, same choices).
TEST(Merge, FittedRouterRecoversTheRouterWhenNothingMerges) {
  TempDir d;
  const std::string src = synth(d, "src", "mixtral", 6);
  const Model orig = Model::open(src);
  auto o = options(src, d.file("out"), orig.config().moe->num_experts, write_text(d, 8, 600));
  o.router = "fit";
  const merge::Result r = merge::run(o);
  for (const auto& l : r.layers) EXPECT_GT(l.router_r2, 0.999) << "layer " << l.layer;
  const auto toks = testing::random_tokens(32, orig.config().vocab_size, 9);
  const auto a = Engine(safetensors_weights(orig)).logits(toks);
  const auto b = Engine(safetensors_weights(Model::open(o.output))).logits(toks);
  const int64_t V = orig.config().vocab_size;
  for (size_t t = 0; t < toks.size(); ++t)
    EXPECT_EQ(std::max_element(a.begin() + t * V, a.begin() + (t + 1) * V) - (a.begin() + t * V),
              std::max_element(b.begin() + t * V, b.begin() + (t + 1) * V) - (b.begin() + t * V));
}

// Saved statistics (`moetool calibrate --hidden` over the same text, chunking and context) give the same
// merge as the calibration text itself, tensor for tensor, for each grouping and router: frequencies,
// router logits and the MoE inputs (re-formed from the saved residual stream by the block's RMSNorm) are
// the same numbers the sweep sees.
TEST(Merge, SavedStatisticsMergeLikeTheirText) {
  TempDir d;
  const std::string src = synth(d, "src", "mixtral", 12);
  const std::string text = write_text(d, 13, 800);
  calibration::Options co;
  co.model = src;
  co.text = text;
  co.output = d.file("stats.safetensors");
  co.ctx = 64;
  co.collect.hidden = true;
  calibration::run(co);
  struct Variant { std::string method, router; };
  for (const Variant& v : {Variant{"msmoe", "leader"}, Variant{"hc", "fit"}, Variant{"sub-moe", "leader"}}) {
    auto a = options(src, d.file("a-" + v.method), 2, text);
    auto b = options(src, d.file("b-" + v.method), 2, text);
    a.method = b.method = v.method;
    a.router = b.router = v.router;
    b.calib_texts.clear();
    b.calib_stats = co.output;
    const merge::Result ra = merge::run(a), rb = merge::run(b);
    EXPECT_EQ(ra.calib_tokens, rb.calib_tokens);
    const Checkpoint ca = Checkpoint::open(a.output), cb = Checkpoint::open(b.output);
    ASSERT_EQ(ca.names(), cb.names());
    for (const auto& n : ca.names()) {
      const Tensor x = ca.get(n), y = cb.get(n);
      ASSERT_EQ(x.nbytes(), y.nbytes()) << n;
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << v.method << ": " << n;
    }
  }
}

// Every expert of every layer a permuted copy of that layer's expert 0 (the same function): merging
// them, aligned, gives back expert 0's function, so the logits do not change (mixtral renormalises
// the top-k weights, so any K identical experts compute the same block output).
TEST(Merge, PermutedCopiesMergeBackWhenAligned) {
  TempDir d;
  const std::string base = synth(d, "base", "mixtral", 7);
  const Model bm = Model::open(base);
  const ModelConfig& c = bm.config();
  const int64_t E = c.moe->num_experts, I = c.moe->expert_intermediate, H = c.hidden_size;
  ExpertRewrite rw;
  rw.num_experts = E;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    std::vector<int64_t> all(static_cast<size_t>(E));
    std::iota(all.begin(), all.end(), 0);
    rw.layers.push_back({l, all, {}});
  }
  rw.replace_expert = [&](Role role, int64_t l, int64_t e) -> std::optional<std::vector<float>> {
    ExpertMatrices x{I, H, bm.weight(Role::ExpertGate, l, 0).to_f32(), bm.weight(Role::ExpertUp, l, 0).to_f32(),
                     bm.weight(Role::ExpertDown, l, 0).to_f32()};
    std::vector<int64_t> p(static_cast<size_t>(I));
    std::iota(p.begin(), p.end(), 0);
    std::mt19937_64 g(static_cast<uint64_t>(100 * l + e));
    if (e > 0) std::shuffle(p.begin(), p.end(), g);
    x = permute_neurons(x, p);
    return role == Role::ExpertGate ? x.gate : role == Role::ExpertUp ? x.up : x.down;
  };
  const std::string src = d.file("copies");
  rewrite_experts(bm, rw, src);
  const Model orig = Model::open(src);
  const auto toks = testing::random_tokens(32, c.vocab_size, 4);
  const auto want = Engine(safetensors_weights(orig)).logits(toks);
  const std::string text = write_text(d, 2);
  for (const std::string method : {"msmoe", "hc", "sub-moe"}) {
    auto o = options(src, d.file("aligned-" + method), 2, text);
    o.method = method;
    o.rank_fraction = 1.0;  // sub-moe at full rank: the average of the aligned (identical) members
    merge::run(o);
    const auto [diff, scale] = max_diff_and_scale(want, Engine(safetensors_weights(Model::open(o.output))).logits(toks));
    // The merged weights are the average of values that alignment made identical (double, rounded
    // once: exact); only the engine's summation over fewer experts differs — one float32 ulp of the
    // logits' scale per layer, as for pruning.
    // sub-moe goes through a float32 SVD: its reconstruction error (≈ 1e-5 of the weights, see
    // tests/merge_svd_test.cc) bounds it instead.
    EXPECT_LE(diff, (method == "sub-moe" ? 1e-4f : 4 * 1.2e-7f) * scale * static_cast<float>(c.num_layers)) << method;
  }
  auto o = options(src, d.file("unaligned"), 2, text);
  o.align = "none";
  merge::run(o);
  const auto [diff, scale] = max_diff_and_scale(want, Engine(safetensors_weights(Model::open(o.output))).logits(toks));
  EXPECT_GT(diff, 1e-3f * scale) << "averaging unaligned permuted copies must change the function";
}

class MergeFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(MergeFamilies, MergesLoadsBackAndRuns) {
  TempDir d;
  // tiny deepseek_v3 has 4 experts in 2 routing groups: halving leaves one per group, which its router
  // cannot score (top-2 per group), so it takes the small preset (8 experts).
  const std::string src = synth(d, "src", GetParam(), 11, GetParam() == "deepseek_v3" ? "small" : "tiny");
  const Model orig = Model::open(src);
  const int64_t E = orig.config().moe->num_experts;
  const int64_t K = std::max<int64_t>(orig.config().moe->top_k, E / 2);
  for (const std::string by : {"router-logits", "outputs", "weights"}) {
    auto o = options(src, d.file("out-" + by), K, write_text(d, 3, 300));
    o.group_by = by;
    o.method = by == "outputs" ? "hc" : "msmoe";
    const merge::Result r = merge::run(o);
    const Model m = Model::open(o.output);
    EXPECT_TRUE(m.check().empty()) << by;
    EXPECT_EQ(m.config().moe->num_experts, K);
    const auto st = std::find_if(r.files.begin(), r.files.end(), [](const std::string& n) { return n.ends_with(".safetensors"); });
    ASSERT_NE(st, r.files.end());
    const auto meta = SafetensorsFile::open(path_join(o.output, *st))->metadata();
    const auto gj = nlohmann::json::parse(meta.at("moetool.merge.groups"));
    for (const auto& l : r.layers) {
      ASSERT_EQ(gj.at(std::to_string(l.layer)).size(), static_cast<size_t>(K));
      size_t n = 0;
      for (const auto& g : l.groups) n += g.members.size();
      EXPECT_EQ(n, static_cast<size_t>(E)) << "every expert is in one group";
      const auto& mc = *orig.config().moe;
      if (mc.n_group > 1 && mc.routing == RoutingKind::SigmoidGroupLimited)
        for (const auto& g : l.groups)
          for (int64_t e : g.members) EXPECT_EQ(e / (E / mc.n_group), g.leader / (E / mc.n_group)) << "across routing groups";
    }
    const auto logits = Engine(safetensors_weights(m)).logits(testing::random_tokens(16, m.config().vocab_size, 5));
    EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); }));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, MergeFamilies,
                         ::testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"));

TEST(MergeCli, BadInputIsOneLineExitTwoAndNoOutput) {
  TempDir d;
  const std::string moe = synth(d, "moe", "mixtral", 1, "tiny");
  const std::string dense = synth(d, "dense", "llama", 1, "tiny");
  const std::string ds = synth(d, "ds", "deepseek_v3", 1, "small");
  const std::string text = write_text(d, 4, 200);
  const std::string out = d.file("out");
  // Statistics without the MoE inputs (no --hidden), and statistics of another model.
  const std::string stats = d.file("stats.safetensors"), other_stats = d.file("other.safetensors");
  ASSERT_EQ(testing::run_moetool({"calibrate", moe, "--text", text, "-o", stats, "--ctx", "64", "-q"}).exit_code, 0);
  ASSERT_EQ(testing::run_moetool({"calibrate", synth(d, "moe2", "mixtral", 2, "tiny"), "--text", text, "--ctx", "64", "-o",
                                  other_stats, "-q"}).exit_code, 0);
  testing::expect_bad_input({
      {{"merge", dense, "-o", out, "--experts", "2", "--calib-text", text}, "dense"},
      {{"merge", moe, "-o", out, "--experts", "1", "--calib-text", text}, "--experts 1"},
      {{"merge", moe, "-o", out, "--experts", "99", "--calib-text", text}, "--experts 99"},
      {{"merge", moe, "-o", out, "--experts", "2"}, "--calib-text"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-text", text, "--method", "magic"}, "--method"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-text", text, "--group-by", "vibes"}, "--group-by"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-text", d.file("missing.txt")}, "missing.txt"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-text", text, "--router", "oracle"}, "--router"},
      {{"merge", ds, "-o", out, "--experts", "4", "--calib-text", text, "--router", "fit"}, "sigmoid"},
      {{"merge", ds, "-o", out, "--experts", "5", "--calib-text", text}, "routing groups"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-text", text, "--calib-stats", stats}, "not both"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-stats", stats, "--method", "hc"}, "calibrate --hidden"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-stats", stats, "--method", "msmoe", "--router", "fit"},
       "--router fit needs"},
      {{"merge", moe, "-o", out, "--experts", "2", "--calib-stats", other_stats, "--method", "msmoe"}, other_stats},
  }, {out});
  // An existing output is refused before calibrating; --dry-run writes nothing and prints the groups.
  std::filesystem::create_directories(out);
  testing::write_bytes(path_join(out, "keep.txt"), "x");
  EXPECT_EQ(testing::run_moetool({"merge", moe, "-o", out, "--experts", "2", "--calib-text", text}).exit_code, 2);
  const auto dry = testing::run_moetool({"merge", moe, "-o", d.file("dry"), "--experts", "2", "--calib-text", text,
                                         "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_FALSE(std::filesystem::exists(d.file("dry")));
  EXPECT_FALSE(nlohmann::json::parse(dry.out).at("layers").empty());
}

}  // namespace
}  // namespace moetool
