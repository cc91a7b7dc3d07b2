// tests/svd_test.cc — the svd job (compress/lowrank.h) end to end on synthetic models: full rank
// reproduces the model for every method (and a low rank does not — the check is not vacuous); the
// low-rank layout and its --materialize twin give the same logits; --ratio keeps the parameter budget
// and the file shrinks; saved `calibrate --gram` statistics give the same factors as their text; every
// MoE family factors, loads back clean and runs; bad input from the command line is one line, exit 2,
// nothing written.
#include <gtest/gtest.h>

#include <Eigen/Dense>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "compress/lowrank.h"
#include "core/fs.h"
#include "engine/calibrate_job.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;

svd::Options options(const std::string& src, const std::string& out, const std::string& method,
                     const std::string& text) {
  svd::Options o;
  o.model = src;
  o.output = out;
  o.method = method;
  o.ctx = 64;
  if (!text.empty()) o.calib_texts = {text};
  return o;
}

// max |a − b| / max |a| over the logits of the same tokens.
double relative_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double scale = 0, diff = 0;
  for (size_t i = 0; i < a.size(); ++i)
    scale = std::max(scale, std::fabs(double(a[i]))), diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
  return diff / scale;
}

std::vector<float> logits_of(const std::string& dir, const std::vector<int32_t>& toks) {
  return Engine(safetensors_weights(Model::open(dir))).logits(toks);
}

uint64_t dir_bytes(const std::string& dir) {
  uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") n += e.file_size();
  return n;
}

uint64_t stored_params(const std::string& dir) {
  const Checkpoint c = Checkpoint::open(dir);
  uint64_t n = 0;
  for (const auto& name : c.names()) n += static_cast<uint64_t>(c.get(name).numel());
  return n;
}

// Full rank: U·V = W (plain, whitened: W·S·S⁻¹), the shared basis spans the hidden side, base + a
// full-rank delta is the expert. Bound: the factors are float32 (relative rounding 6e-8 per element,
// the SVD's backward error a few ulps of ‖W‖ in double before rounding), so each product U·V differs
// from W by ~1e-6 relative; through 3 layers of residual stream the logits move by well under 1e-4 of
// their scale. A rank of a quarter of the full one must move them by far more (the test can fail).
TEST(Svd, FullRankReproducesTheModelForEveryMethod) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 21, "tiny");
  const std::string text = testing::seeded_text(d, 22, 400);
  const Model orig = Model::open(src);
  const int64_t full = std::min(orig.config().hidden_size, orig.config().moe->expert_intermediate);
  const auto toks = testing::random_tokens(32, orig.config().vocab_size, 23);
  const auto ref = Engine(safetensors_weights(orig)).logits(toks);
  for (const std::string method : {"plain", "whitened", "shared-basis", "delta"}) {
    auto o = options(src, d.file("full-" + method), method, method == "plain" ? "" : text);
    o.rank = full;
    const svd::Result r = svd::run(o);
    ASSERT_TRUE(r.written);
    const Model m = Model::open(o.output);
    EXPECT_TRUE(m.check().empty()) << method;
    ASSERT_TRUE(m.lowrank_layout().has_value()) << method;
    EXPECT_LT(relative_diff(ref, logits_of(o.output, toks)), 1e-4) << method;
    // err²(full) is ‖W‖² − Σσ², a cancellation of sums whose terms carry float32 rounding (σ² relative
    // error ≲ 2·6e-8 each): a few 1e-7 of ‖W‖² at most, against ≥ 1e-3 at a quarter of the rank.
    for (const auto& t : r.targets) EXPECT_LT(t.rel_error, 1e-6) << method << " " << t.module;

    auto lo = options(src, d.file("low-" + method), method, method == "plain" ? "" : text);
    lo.rank = full / 4;
    svd::run(lo);
    EXPECT_GT(relative_diff(ref, logits_of(lo.output, toks)), 1e-3) << method;
  }
}

// The factored layout (V then U in the engine) and --materialize (W' = U·V written dense, which stock
// loaders read) are the same model: only the float32 order of the products differs.
TEST(Svd, MaterializedEqualsFactored) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 31, "tiny");
  const std::string text = testing::seeded_text(d, 32, 400);
  const auto toks = testing::random_tokens(32, Model::open(src).config().vocab_size, 33);
  for (const std::string method : {"whitened", "shared-basis", "delta"}) {
    auto a = options(src, d.file("f-" + method), method, text);
    a.ratio = 0.5;
    auto b = a;
    b.output = d.file("m-" + method);
    b.materialize = true;
    svd::run(a);
    svd::run(b);
    const Model mb = Model::open(b.output);
    EXPECT_FALSE(mb.lowrank_layout().has_value()) << "materialized experts are standard dense tensors";
    EXPECT_TRUE(mb.check().empty());
    EXPECT_LT(relative_diff(logits_of(a.output, toks), logits_of(b.output, toks)), 1e-5) << method;
  }
}

// --ratio P: the stored parameters of the targets stay within P of theirs, the ranks differ between
// matrices (a knapsack, not one rank), the checkpoint holds exactly the original's parameters less the
// ones removed (the reported count is what is stored), its file is smaller, and the config's ranks are
// the ones reported.
TEST(Svd, RatioKeepsTheBudgetAndTheFileShrinks) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 41, "tiny");
  const std::string text = testing::seeded_text(d, 42, 600);
  for (const std::string method : {"plain", "whitened", "shared-basis", "delta"}) {
    auto o = options(src, d.file("r-" + method), method, method == "plain" ? "" : text);
    o.ratio = 0.4;
    const svd::Result r = svd::run(o);
    EXPECT_LE(r.kept_params, 0.4 * r.target_params + 1e-6) << method;
    EXPECT_GT(r.kept_params, 0.3 * r.target_params) << method << ": the budget is used";
    EXPECT_EQ(stored_params(o.output), stored_params(src) - static_cast<uint64_t>(r.target_params - r.kept_params))
        << method;
    EXPECT_LT(dir_bytes(o.output), dir_bytes(src)) << method;
    const Model m = Model::open(o.output);
    ASSERT_TRUE(m.lowrank_layout().has_value());
    const auto cfg = nlohmann::json::parse(read_file(path_join(o.output, "config.json")));
    const auto& ranks = cfg.at("lowrank").at("ranks");
    std::set<int64_t> distinct;
    for (const auto& t : r.targets) {
      if (t.rank < 0) continue;
      distinct.insert(t.rank);
      // A shared basis is reported once ("experts.shared"); the config names each expert's rank.
      std::string mod = t.module;
      if (const auto k = mod.find(".shared."); k != std::string::npos) mod.replace(k, 8, ".0.");
      ASSERT_TRUE(ranks.contains(mod)) << method << " " << mod;
      EXPECT_EQ(ranks.at(mod).get<int64_t>(), t.rank) << mod;
    }
    if (method != "shared-basis") EXPECT_GT(distinct.size(), 1u) << method << ": ranks per matrix";
  }
}

// Whitening minimises the error on the calibration inputs: at the same budget, the whitened model's
// logits on the calibration text are closer to the original's than the plain model's.
TEST(Svd, WhitenedIsCloserThanPlainOnItsCalibrationText) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 51, "tiny");
  const std::string text = testing::seeded_text(d, 52, 600);
  const Model orig = Model::open(src);
  const auto toks = load_tokenizer(src)->encode(read_file(text));
  const std::vector<int32_t> chunk(toks.begin(), toks.begin() + std::min<size_t>(64, toks.size()));
  const auto ref = Engine(safetensors_weights(orig)).logits(chunk);
  double err[2];
  int i = 0;
  for (const std::string method : {"plain", "whitened"}) {
    auto o = options(src, d.file(method), method, text);
    o.ratio = 0.3;
    svd::run(o);
    const auto l = logits_of(o.output, chunk);
    double s = 0;
    for (size_t k = 0; k < l.size(); ++k) s += (double(l[k]) - ref[k]) * (double(l[k]) - ref[k]);
    err[i++] = s;
  }
  EXPECT_LT(err[1], err[0]);
  // shared-basis: calibrated, the basis of gate/up is whitened on the layer's pooled routed inputs (and the
  // experts weighted by their routing shares); uncalibrated, plain with equal shares.
  double shared[2];
  for (int k = 0; k < 2; ++k) {
    auto o = options(src, d.file(str("shared", k)), "shared-basis", k ? text : "");
    o.ratio = 0.3;
    svd::run(o);
    const auto l = logits_of(o.output, chunk);
    shared[k] = 0;
    for (size_t q = 0; q < l.size(); ++q) shared[k] += (double(l[q]) - ref[q]) * (double(l[q]) - ref[q]);
  }
  EXPECT_LT(shared[1], shared[0]);
}

// `moetool calibrate --gram` statistics of the same text, context and chunking are the numbers the text
// sweep sees: same routing shares, same Grams, so the same factors tensor for tensor.
TEST(Svd, SavedStatisticsGiveTheFactorsOfTheirText) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 61, "tiny");
  const std::string text = testing::seeded_text(d, 62, 600);
  calibration::Options co;
  co.model = src;
  co.text = text;
  co.output = d.file("stats.safetensors");
  co.ctx = 64;
  co.collect.gram = true;
  calibration::run(co);
  for (const std::string method : {"whitened", "delta", "shared-basis", "whitened all-linears"}) {
    const bool all = method == "whitened all-linears";
    auto a = options(src, d.file("a-" + std::to_string(all) + method.substr(0, 5)), all ? "whitened" : method, text);
    a.ratio = 0.5;
    if (all) a.targets = "all-linears";  // attention's and the router's inputs from the statistics too
    auto b = a;
    b.output = a.output + "-stats";
    b.calib_texts.clear();
    b.calib_stats = co.output;
    const svd::Result ra = svd::run(a), rb = svd::run(b);
    EXPECT_EQ(ra.calib_tokens, rb.calib_tokens);
    for (const auto* r : {&ra, &rb})  // every linear whitened: both sources hold every input Gram
      for (const auto& w : r->warnings) EXPECT_EQ(w.find("no calibration inputs"), std::string::npos) << w;
    const Checkpoint ca = Checkpoint::open(a.output), cb = Checkpoint::open(b.output);
    ASSERT_EQ(ca.names(), cb.names()) << method;
    for (const auto& n : ca.names()) {
      const Tensor x = ca.get(n), y = cb.get(n);
      ASSERT_EQ(x.nbytes(), y.nbytes()) << n;
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes()), 0) << method << ": " << n;
    }
  }
}

// Every MoE family: routed experts factor (shared experts stay dense), the output checks clean, runs,
// and inspect reports the low-rank summary.
class SvdFamilies : public ::testing::TestWithParam<std::string> {};

TEST_P(SvdFamilies, FactorLoadAndRun) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", GetParam(), 71, "tiny");
  const std::string text = testing::seeded_text(d, 72, 300);
  for (const std::string method : {"whitened", "shared-basis", "delta"}) {
    auto o = options(src, d.file(method), method, text);
    o.ratio = 0.6;
    svd::run(o);
    const Model m = Model::open(o.output);
    EXPECT_TRUE(m.check().empty()) << method;
    ASSERT_TRUE(m.lowrank_layout().has_value());
    const auto logits = Engine(safetensors_weights(m)).logits(testing::random_tokens(16, m.config().vocab_size, 5));
    EXPECT_TRUE(std::all_of(logits.begin(), logits.end(), [](float v) { return std::isfinite(v); })) << method;
  }
  const auto ins = testing::run_moetool({"inspect", d.file("delta")});
  ASSERT_EQ(ins.exit_code, 0) << ins.err;
  EXPECT_NE(ins.out.find("low-rank"), std::string::npos) << ins.out;
}

INSTANTIATE_TEST_SUITE_P(Families, SvdFamilies,
                         ::testing::Values("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v3"));

// --targets all-linears: attention and the routed experts are factored (plain): each non-expert factor
// pair is a near-best rank-R approximation of its W — ‖W − U·V‖²_F between Σ_{i>R} σ_i² of a float64
// SVD (Eckart–Young: nothing can be lower; 1e-5 slack for the factors' float32 rounding) and 1.01 times
// it (the randomized SVD's contract, kernels/lowrank.h; observed ≤ 1.003 here) —, the checkpoint is
// consistent, the budget counts every linear, and factored = materialized.
TEST(Svd, AllLinearsFactorsAttentionOptimally) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 91, "tiny");
  auto o = options(src, d.file("all"), "plain", "");
  o.targets = "all-linears";
  o.rank = 4;
  const svd::Result r = svd::run(o);
  const Model orig = Model::open(src), m = Model::open(o.output);
  EXPECT_TRUE(m.check().empty());
  int attention = 0;
  for (const auto& t : r.targets) {
    if (t.role != Role::Q && t.role != Role::K && t.role != Role::V && t.role != Role::O) continue;
    ++attention;
    const auto lr = m.lowrank(t.role, t.layer, -1);
    ASSERT_TRUE(lr) << t.module;
    ASSERT_EQ(lr->rank, 4);
    const auto W = orig.weight(t.role, t.layer).to_f32();
    const auto U = m.checkpoint().get(lr->u).to_f32(), V = m.checkpoint().get(lr->v).to_f32();
    Eigen::MatrixXd Wd(t.rows, t.cols), Ud(t.rows, 4), Vd(4, t.cols);
    for (int64_t i = 0; i < t.rows; ++i)
      for (int64_t k = 0; k < t.cols; ++k) Wd(i, k) = W[static_cast<size_t>(i * t.cols + k)];
    for (int64_t i = 0; i < t.rows; ++i)
      for (int64_t k = 0; k < 4; ++k) Ud(i, k) = U[static_cast<size_t>(i * 4 + k)];
    for (int64_t i = 0; i < 4; ++i)
      for (int64_t k = 0; k < t.cols; ++k) Vd(i, k) = V[static_cast<size_t>(i * t.cols + k)];
    const Eigen::VectorXd sv = Eigen::JacobiSVD<Eigen::MatrixXd>(Wd).singularValues();
    double optimal = 0;
    for (int64_t i = 4; i < sv.size(); ++i) optimal += sv(i) * sv(i);
    const double got = (Wd - Ud * Vd).squaredNorm();
    EXPECT_LE(got, 1.01 * optimal) << t.module;
    EXPECT_GE(got, (1 - 1e-5) * optimal) << t.module;
  }
  EXPECT_EQ(attention, 4 * orig.config().num_layers);
  double params = 0;
  for (const auto& s : orig.family().tensors(orig.config()))
    if (s.shape.size() == 2 && s.role != Role::Embed && s.role != Role::LmHead && s.role != Role::Router)
      params += static_cast<double>(s.shape[0] * s.shape[1]);
  EXPECT_DOUBLE_EQ(r.target_params, params);
  auto mo = o;
  mo.output = d.file("all-m");
  mo.materialize = true;
  svd::run(mo);
  const auto toks = testing::random_tokens(24, orig.config().vocab_size, 92);
  EXPECT_LT(relative_diff(logits_of(o.output, toks), logits_of(mo.output, toks)), 1e-5);
}

// A dense model factors with --targets all-linears: the budget holds, and whitening on the calibration
// text errs less on that text than plain SVD at the same ratio.
TEST(Svd, AllLinearsOnADenseModelWhitenedBeatsPlain) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "llama", 93, "tiny");
  const std::string text = testing::seeded_text(d, 94, 600);
  const Model orig = Model::open(src);
  const auto toks = load_tokenizer(src)->encode(read_file(text));
  const std::vector<int32_t> first(toks.begin(), toks.begin() + std::min<size_t>(toks.size(), 64));
  const auto ref = logits_of(src, first);
  double diff[2];
  int i = 0;
  for (const std::string method : {"plain", "whitened"}) {
    auto o = options(src, d.file("dense-" + method), method, text);
    o.targets = "all-linears";
    o.ratio = 0.5;
    const svd::Result r = svd::run(o);
    EXPECT_LE(r.kept_params, 0.5 * r.target_params + 1e-6) << method;
    EXPECT_TRUE(Model::open(o.output).check().empty()) << method;
    diff[i++] = relative_diff(ref, logits_of(o.output, first));
  }
  EXPECT_LT(diff[1], diff[0]);
  EXPECT_GT(diff[1], 0.0);
}

TEST(SvdCli, BadInputIsOneLineExitTwoAndNoOutput) {
  TempDir d;
  const std::string moe = testing::synth_in(d, "moe", "mixtral", 1, "tiny");
  const std::string dense = testing::synth_in(d, "dense", "llama", 1, "tiny");
  const std::string text = testing::seeded_text(d, 4, 200);
  const std::string out = d.file("out");
  // Statistics without Gram matrices, and the Grams of a model of another hidden size.
  const std::string stats = d.file("stats.safetensors"), other = d.file("other.safetensors");
  ASSERT_EQ(testing::run_moetool({"calibrate", moe, "--text", text, "-o", stats, "--ctx", "64", "-q"}).exit_code, 0);
  ASSERT_EQ(testing::run_moetool({"calibrate", testing::synth_in(d, "big", "mixtral", 2, "small"), "--text", text,
                                  "--ctx", "64", "--gram", "-o", other, "-q"}).exit_code, 0);
  testing::expect_bad_input({
      {{"svd", dense, "-o", out, "--ratio", "0.5", "--method", "plain"}, "dense"},
      {{"svd", dense, "-o", out, "--ratio", "0.5", "--method", "delta", "--targets", "all-linears"}, "delta"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--method", "plain", "--targets", "attention"}, "--targets"},
      {{"svd", moe, "-o", out, "--ratio", "0", "--method", "plain"}, "neither"},
      {{"svd", moe, "-o", out, "--ratio", "1.5", "--method", "plain"}, "--ratio 1.5"},
      {{"svd", moe, "-o", out, "--ratio", "-0.5", "--method", "plain"}, "--ratio"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--rank", "8", "--method", "plain"}, "not both"},
      {{"svd", moe, "-o", out, "--method", "plain"}, "neither"},
      {{"svd", moe, "-o", out, "--rank", "65", "--method", "plain"}, "--rank 65"},
      {{"svd", moe, "-o", out, "--rank", "65", "--method", "shared-basis"}, "--rank 65"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--method", "whitened"}, "--method whitened needs"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--method", "magic"}, "--method"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--calib-text", d.file("missing.txt")}, "missing.txt"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--calib-text", text, "--calib-stats", stats}, "not both"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--calib-stats", stats}, "Gram"},
      {{"svd", moe, "-o", out, "--ratio", "0.5", "--calib-stats", other}, other},
      {{"svd", moe, "-o", out, "--ratio", "0.05", "--method", "delta"}, "delta"},
  }, {out});
  // An existing output is refused; --dry-run writes nothing and prints the ranks as JSON.
  std::filesystem::create_directories(out);
  testing::write_bytes(path_join(out, "keep.txt"), "x");
  EXPECT_EQ(testing::run_moetool({"svd", moe, "-o", out, "--ratio", "0.5", "--method", "plain"}).exit_code, 2);
  EXPECT_TRUE(std::filesystem::exists(path_join(out, "keep.txt")));
  const auto dry = testing::run_moetool({"svd", moe, "-o", d.file("dry"), "--ratio", "0.5", "--calib-text", text,
                                         "--dry-run", "--json"});
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_FALSE(std::filesystem::exists(d.file("dry")));
  const auto j = nlohmann::json::parse(dry.out);
  EXPECT_FALSE(j.at("targets").empty());
  EXPECT_LE(j.at("kept_params").get<double>(), 0.5 * j.at("target_params").get<double>());
}

}  // namespace
}  // namespace moetool
