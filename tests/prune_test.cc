// tests/prune_test.cc — the prune job (compress/prune.h) end to end: the written model equals the
// original with the dropped experts' router logits at −∞; the plan, metadata and dry run agree;
// calibration statistics keep the new fields and refuse another model's; dynamic top-k skips what it
// says; bad input from the command line is one line, exit 2, nothing written; and on tinymoe-3domain a
// synthetic super expert is detected, protected, and costs far more to prune than an ordinary one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "compress/expert_rewrite.h"
#include "compress/prune.h"
#include "core/error.h"
#include "engine/calibrate.h"
#include "engine/engine.h"
#include "engine/masked_experts.h"
#include "engine/text.h"
#include "formats/safetensors.h"
#include "core/fs.h"
#include "formats/synth.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::RunResult;
using testing::run_moetool;
using testing::TempDir;
using testing::mean_kld;

std::string synth(const TempDir& d, const std::string& name, const std::string& family, uint64_t seed,
                  const std::string& preset = "small") {
  return testing::synth_in(d, name, family, seed, preset);
}
std::string write_text(const TempDir& d, uint64_t seed, int words = 1500) {
  return testing::seeded_text(d, seed, words);
}

std::vector<std::vector<bool>> mask_of(const ModelConfig& c, const std::vector<LayerPrunePlan>& plans) {
  std::vector<std::vector<bool>> m(static_cast<size_t>(c.num_layers));
  for (const auto& p : plans) {
    m[static_cast<size_t>(p.layer)].assign(static_cast<size_t>(c.moe->num_experts), true);
    for (int64_t e : p.keep) m[static_cast<size_t>(p.layer)][static_cast<size_t>(e)] = false;
  }
  return m;
}

bool kept(const std::vector<LayerPrunePlan>& plans, int64_t layer, int64_t expert) {
  for (const auto& p : plans)
    if (p.layer == layer) return std::find(p.keep.begin(), p.keep.end(), expert) != p.keep.end();
  return false;
}

class PruneMethods : public ::testing::TestWithParam<std::string> {};

// The job's output is the original with the other experts masked (what the rewriter guarantees, here
// through the job: its plan, its metadata and its file agree), for every scoring method.
TEST_P(PruneMethods, OutputEqualsMaskedRoutingAndMetadataNamesTheKeptExperts) {
  TempDir d;
  const std::string src = synth(d, "src", "qwen2_moe", 41);
  prune::Options o;
  o.model = src;
  o.output = d.file("out");
  o.keep = 4;
  o.method = GetParam();
  o.seed = 3;
  o.ctx = 64;
  o.calib_texts = {write_text(d, 1, 600)};
  o.max_measure_tokens = 128;  // --method reconstruct re-runs every layer per candidate: keep it short
  const prune::Result r = prune::run(o);
  ASSERT_TRUE(r.written);
  const Model orig = Model::open(src);
  int64_t moe_layers = 0;
  for (int64_t l = 0; l < orig.config().num_layers; ++l) moe_layers += orig.config().is_moe_layer(l) ? 1 : 0;
  ASSERT_GT(moe_layers, 1);
  ASSERT_EQ(static_cast<int64_t>(r.layers.size()), moe_layers) << "one plan per MoE layer";
  const Model m = Model::open(o.output);
  EXPECT_TRUE(m.check().empty());
  EXPECT_EQ(m.config().moe->num_experts, 4);
  EXPECT_EQ(m.config().moe->top_k, Model::open(src).config().moe->top_k);
  for (const auto& p : r.layers) EXPECT_EQ(p.keep.size(), 4u);

  // Provenance: method and kept ids per layer in the safetensors metadata.
  const auto st = std::find_if(r.files.begin(), r.files.end(),
                               [](const std::string& n) { return n.ends_with(".safetensors"); });
  ASSERT_NE(st, r.files.end());
  const auto f = SafetensorsFile::open(path_join(o.output, *st));
  EXPECT_EQ(f->metadata().at("moetool.prune.method"), r.method);
  const auto kj = nlohmann::json::parse(f->metadata().at("moetool.prune.kept_experts"));
  for (const auto& p : r.layers) EXPECT_EQ(kj.at(std::to_string(p.layer)).get<std::vector<int64_t>>(), p.keep);

  const auto toks = testing::random_tokens(40, orig.config().vocab_size, 9);
  const auto want =
      Engine(std::make_shared<MaskedExperts>(safetensors_weights(orig), mask_of(orig.config(), r.layers))).logits(toks);
  const auto got = Engine(safetensors_weights(m)).logits(toks);
  float scale = 0, diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    diff = std::max(diff, std::fabs(want[i] - got[i]));
  }
  // Same bound as tests/expert_rewrite_test.cc (identical weights and selections; only the masked
  // experts' exact zeros in the routing softmax and summation grouping differ).
  EXPECT_LE(diff, 4 * 1.2e-7f * scale * static_cast<float>(orig.config().num_layers)) << GetParam();
}

INSTANTIATE_TEST_SUITE_P(Methods, PruneMethods,
                         ::testing::Values("reap", "easy-ep", "frequency", "random", "reconstruct"));

TEST(Prune, DryRunWritesNothingAndSameSeedSameExperts) {
  TempDir d;
  const std::string src = synth(d, "src", "mixtral", 5);
  prune::Options o;
  o.model = src;
  o.output = d.file("out");
  o.keep = 3;
  o.method = "random";
  o.protect = "off";
  o.dry_run = true;
  o.seed = 11;
  const prune::Result a = prune::run(o), b = prune::run(o);
  EXPECT_FALSE(a.written);
  EXPECT_FALSE(std::filesystem::exists(o.output));
  for (size_t l = 0; l < a.layers.size(); ++l) EXPECT_EQ(a.layers[l].keep, b.layers[l].keep);
  int64_t total = 0;
  for (int64_t k : a.budget) total += k;
  EXPECT_EQ(total, 3 * static_cast<int64_t>(a.layers.size())) << "the per-layer budget keeps the same total";
  bool differs = false;
  for (uint64_t s = 12; s < 20 && !differs; ++s) {
    o.seed = s;
    const prune::Result c = prune::run(o);
    for (size_t l = 0; l < c.layers.size(); ++l) differs |= c.layers[l].keep != a.layers[l].keep;
  }
  EXPECT_TRUE(differs) << "--seed has no effect";
  const auto j = a.to_json();
  EXPECT_EQ(j.at("keep"), 3);
  EXPECT_EQ(j.at("layers").size(), a.layers.size());
}

TEST(Prune, SlimWritesNarrowerExpertsThatRun) {
  TempDir d;
  const std::string src = synth(d, "src", "mixtral", 6);
  prune::Options o;
  o.model = src;
  o.output = d.file("out");
  o.keep = 6;
  o.slim = 0.25;
  o.ctx = 64;
  o.calib_texts = {write_text(d, 2)};
  const prune::Result r = prune::run(o);
  const int64_t I = Model::open(src).config().moe->expert_intermediate;
  EXPECT_EQ(r.slim_intermediate, std::llround(0.75 * static_cast<double>(I)));
  const Model m = Model::open(o.output);
  EXPECT_TRUE(m.check().empty());
  EXPECT_EQ(m.config().moe->expert_intermediate, r.slim_intermediate);
  EXPECT_EQ(m.config().moe->num_experts, 6);
  const auto lg = Engine(safetensors_weights(m)).logits(testing::random_tokens(16, m.config().vocab_size, 2));
  for (float v : lg) ASSERT_TRUE(std::isfinite(v));
}

// The statistics prune reads survive a save/load, and statistics of another model are refused even
// when every shape matches (the fingerprint).
TEST(Prune, StatisticsRoundTripAndAnotherModelsAreRefused) {
  TempDir d;
  const auto wa = safetensors_weights(Model::open(synth(d, "a", "mixtral", 1)));
  const auto wb = safetensors_weights(Model::open(synth(d, "b", "mixtral", 2)));
  std::vector<std::vector<int32_t>> chunks = {testing::random_tokens(48, wa->config().vocab_size, 4),
                                              testing::random_tokens(48, wa->config().vocab_size, 5)};
  CalibrationOptions co;
  const CalibrationStats st = calibrate(Engine(wa), chunks, co);
  st.save(d.file("st.safetensors"), {});
  const CalibrationStats back = CalibrationStats::load(d.file("st.safetensors"));
  EXPECT_EQ(back.fingerprint, st.fingerprint);
  EXPECT_FALSE(st.fingerprint.empty());
  for (size_t l = 0; l < st.layers.size(); ++l) {
    EXPECT_EQ(back.layers[l].easy_ep, st.layers[l].easy_ep);
    EXPECT_EQ(back.layers[l].max_abs_output, st.layers[l].max_abs_output);
    double sum = 0;
    for (double v : st.layers[l].easy_ep) sum += v;
    EXPECT_GT(sum, 0) << "layer " << l << ": no EASY-EP score collected";
  }
  check_stats_model(back, *wa, "st.safetensors");  // its own model: accepted
  const std::string e = testing::error_of([&] { check_stats_model(back, *wb, "st.safetensors"); });
  EXPECT_NE(e.find("st.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("fingerprint"), std::string::npos) << e;
}

// --dynamic-topk: a threshold nothing falls below changes nothing (bit for bit); 0.5 with top-2 skips
// every second choice (its normalised weight is ≤ 1/2) and changes the logits.
TEST(DynamicTopk, SkipsWhatItSaysAndNothingElse) {
  TempDir d;
  const auto w = safetensors_weights(Model::open(synth(d, "m", "mixtral", 8)));
  ASSERT_EQ(w->config().moe->top_k, 2);
  const auto toks = testing::random_tokens(64, w->config().vocab_size, 1);
  const auto base = Engine(w).logits(toks);
  Engine tiny(w);
  tiny.set_dynamic_topk(1e-12);
  EXPECT_EQ(tiny.logits(toks), base);
  EXPECT_EQ(tiny.routing_counts().skipped, 0);
  EXPECT_GT(tiny.routing_counts().routed, 0);
  Engine half(w);
  half.set_dynamic_topk(0.5);
  const auto lg = half.logits(toks);
  const auto rc = half.routing_counts();
  EXPECT_NEAR(static_cast<double>(rc.skipped) / static_cast<double>(rc.routed), 0.5, 0.02);
  EXPECT_GT(mean_kld(base, lg, w->config().vocab_size), 1e-6);
  Engine mid(w);
  mid.set_dynamic_topk(0.3);
  mid.logits(toks);
  EXPECT_GT(mid.routing_counts().skipped, 0);
  EXPECT_LT(mid.routing_counts().skipped, rc.skipped);
}

// Bad input from the command line: one line naming the problem, exit 2, nothing written.
TEST(PruneCli, BadInputIsOneLineExitTwoAndNoOutput) {
  TempDir d;
  const std::string moe = synth(d, "moe", "mixtral", 1, "tiny"), other = synth(d, "other", "mixtral", 2, "tiny");
  const std::string dense = synth(d, "dense", "llama", 1, "tiny");
  const int64_t E = Model::open(moe).config().moe->num_experts;
  const std::string text = write_text(d, 3, 400);
  ASSERT_EQ(run_moetool({"calibrate", other, "--text", text, "--ctx", "64", "-o", d.file("other-stats.safetensors"), "-q"})
                .exit_code,
            0);
  const std::string out = d.file("out");
  auto expect = [&](std::vector<std::string> args, const std::string& needle) {
    std::vector<std::string> full = {"prune"};
    full.insert(full.end(), args.begin(), args.end());
    const RunResult r = run_moetool(full);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("moetool: error:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "expected '" << needle << "' in: " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << needle;
    for (const auto& e : std::filesystem::directory_iterator(d.path()))
      EXPECT_EQ(e.path().filename().string().find("out.tmp"), std::string::npos) << "staging left behind";
  };
  expect({dense, "-o", out, "--keep", "2", "--method", "random"}, "dense");
  expect({moe, "-o", out, "--keep", "1", "--method", "random"}, "top-k");
  expect({moe, "-o", out, "--keep", std::to_string(E), "--method", "random"}, "nothing to prune");
  expect({moe, "-o", out, "--keep", "2", "--keep-fraction", "0.5", "--method", "random"}, "not both");
  expect({moe, "-o", out, "--keep", "2", "--method", "magic"}, "magic");
  expect({moe, "-o", out, "--keep", "2", "--method", "reap"}, "calibration");
  expect({moe, "-o", out, "--keep", "2", "--calib-stats", d.file("other-stats.safetensors")}, "other-stats.safetensors");
  expect({moe, "-o", out, "--keep", "2", "--method", "random", "--protect-super-experts", "0:" + std::to_string(E)},
         "expert");
  expect({moe, "-o", out, "--keep", "2", "--method", "random", "--protect-super-experts", "99:0"}, "99");
  expect({moe, "-o", out, "--keep", "2", "--method", "random", "--slim", "1.5"}, "--slim");
  expect({moe, "-o", out, "--keep", "2", "--calib-text", d.file("missing.txt")}, "missing.txt");
  // An existing output is refused before any work, and left as it was.
  std::filesystem::create_directories(d.file("taken"));
  testing::write_bytes(d.file("taken/keep.txt"), "x");
  const RunResult r = run_moetool({"prune", moe, "-o", d.file("taken"), "--keep", "2", "--method", "random", "-q"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--force"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(d.file("taken/keep.txt")));
  // And a good run writes the model, whose JSON summary names the file.
  const RunResult ok = run_moetool({"prune", moe, "-o", out, "--keep", "2", "--method", "random", "--json", "-q"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(nlohmann::json::parse(ok.out).at("keep"), 2);
  EXPECT_EQ(Model::open(out).config().moe->num_experts, 2);
}

// A super expert (Su et al.): on tinymoe-3domain, make layer 0's expert 7 emit massive activations in
// one hidden channel by scaling that row of its down_proj by 1000. Detection finds exactly it; pruning
// it costs far more than pruning any ordinary expert of its layer; `auto` protects it where the same
// plan without protection drops it.
TEST(PruneSuperExpert, DetectedProtectedAndCostlyToPrune) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  const std::string tiny = testing::shared_path("models/tinymoe-3domain");
  const Model src = Model::open(tiny);
  constexpr int64_t kLayer = 0, kSuper = 7;
  constexpr float kScale = 1000.0f;
  constexpr int64_t kChannel = 17;
  ExpertRewrite rw;
  rw.num_experts = 8;
  for (int64_t l = 0; l < 2; ++l) rw.layers.push_back({l, {0, 1, 2, 3, 4, 5, 6, 7}, {}});
  rw.replace_expert = [&](Role role, int64_t l, int64_t e) -> std::optional<std::vector<float>> {
    if (role != Role::ExpertDown || l != kLayer || e != kSuper) return std::nullopt;
    std::vector<float> w = src.weight(role, l, e).to_f32();  // [H, I]
    const int64_t I = src.config().moe->expert_intermediate;
    for (int64_t j = 0; j < I; ++j) w[static_cast<size_t>(kChannel * I + j)] *= kScale;
    return w;
  };
  const std::string super = d.file("super");
  rewrite_experts(src, rw, super);

  prune::Options o;
  o.model = super;
  o.output = d.file("out");
  o.keep = 4;
  o.dry_run = true;
  o.method = "random";
  o.ctx = 128;
  o.chunks = 4;
  o.calib_texts = {testing::shared_path("data/moe3-calib-code.txt")};
  const prune::Result r = prune::run(o);
  ASSERT_EQ(r.super_experts.size(), 1u);
  EXPECT_EQ(r.super_experts[0].id, (ExpertId{kLayer, kSuper}));
  EXPECT_GT(r.super_experts[0].ratio, 10);
  // The unmodified model has none (no false alarm on a real trained MoE).
  o.model = tiny;
  EXPECT_TRUE(prune::run(o).super_experts.empty());
  o.model = super;

  // Find a seed whose unprotected random plan drops the super expert; `auto` keeps it under that seed.
  uint64_t seed = 0;
  o.protect = "off";
  for (uint64_t s = 1; s < 64 && seed == 0; ++s) {
    o.seed = s;
    if (!kept(prune::run(o).layers, kLayer, kSuper)) seed = s;
  }
  ASSERT_NE(seed, 0u);
  o.protect = "auto";
  const prune::Result p = prune::run(o);
  EXPECT_TRUE(kept(p.layers, kLayer, kSuper));
  for (const auto& l : p.layers) EXPECT_EQ(l.keep.size(), 4u);

  // Pruning it hurts far more than pruning an ordinary expert.
  const auto w = safetensors_weights(Model::open(super));
  auto tok = load_tokenizer(tiny);
  std::vector<int32_t> toks = tok->encode(read_file(testing::shared_path("data/moe3-calib-prose.txt")));
  toks.resize(256);
  const auto base = Engine(w).logits(toks);
  auto without = [&](int64_t e) {
    std::vector<std::vector<bool>> m(2);
    m[kLayer].assign(8, false);
    m[kLayer][static_cast<size_t>(e)] = true;
    return mean_kld(base, Engine(std::make_shared<MaskedExperts>(w, m)).logits(toks), src.config().vocab_size);
  };
  // "Far more", quantified: more than 5x the costliest ordinary expert of the layer and 10x their
  // mean (measured: super 5.0, ordinary 0.03 to 0.77, mean 0.48; the bounds leave ~30 % / ~5 % margin).
  const double k_super = without(kSuper);
  double worst = 0, mean = 0;
  for (int64_t e = 0; e < 8; ++e) {
    if (e == kSuper) continue;
    const double k = without(e);
    worst = std::max(worst, k);
    mean += k / 7;
  }
  EXPECT_GT(worst, 1e-2) << "no ordinary expert matters: a vacuous comparison";
  EXPECT_GT(k_super, 5 * worst) << "super " << k_super << " costliest ordinary " << worst;
  EXPECT_GT(k_super, 10 * mean) << "super " << k_super << " mean ordinary " << mean;
}

}  // namespace
}  // namespace moetool
