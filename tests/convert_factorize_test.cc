// tests/convert_factorize_test.cc — `convert factorize`: with top-k = N and a zero router (ties ⇒
// equal weights 1/N) every split reproduces the dense model (mean KLD < 1e-6, same top-1 everywhere,
// float32), with and without shared neurons, on synthetic models and TinyStories; the splits are
// balanced partitions and deterministic per seed; the ridge router reports R² per layer and routes
// better than the centroid and random routers on calibration text; calibration from text or a saved
// statistics file; bad options and impossible targets are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "convert/factorize.h"
#include "convert/router_fit.h"
#include "convert/split.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "tests/convert_test_util.h"
#include "engine/calibrate.h"
#include "engine/engine.h"
#include "verify/metrics.h"
#include "engine/text.h"
#include "engine/weights.h"

namespace moetool {
namespace {

using testing::TempDir;
namespace fs = std::filesystem;

using testing::Agreement;
using testing::expect_clean;

std::string tiny() { return testing::tinystories(); }
std::string calib() { return testing::tinystories_calib(); }
std::string synth(const TempDir& d, const std::string& family) { return testing::synth_dense(d, family, 4); }
std::vector<std::vector<int32_t>> token_chunks(int64_t vocab, int n, int len, uint64_t seed = 99) {
  return testing::token_chunks(vocab, n, len, seed);
}
std::vector<std::vector<int32_t>> text_chunks(int n, int ctx) { return testing::tinystories_chunks(n, ctx); }
Agreement compare(const std::string& base, const std::string& cand, const std::vector<std::vector<int32_t>>& chunks) {
  return testing::agreement(base, cand, chunks);
}

// A calibration statistics file of the synthetic model (hidden states + activations).
std::string synth_stats(const TempDir& d, const std::string& model) {
  Engine e(open_weights(model), false);
  CalibrationOptions co;
  co.router = false;
  co.hidden = true;
  co.ffn_activations = true;
  co.second_moments = false;
  const std::string path = d.file("stats.safetensors");
  calibrate(e, token_chunks(e.config().vocab_size, 4, 48, 7), co).save(path, {});
  return path;
}

FactorizeOptions options(const std::string& to, int64_t N, int64_t K, SplitMethod s, FactorRouter r) {
  FactorizeOptions o;
  o.to = to;
  o.experts = N;
  o.top_k = K;
  o.split = s;
  o.router = r;
  o.seed = 21;
  return o;
}

TEST(ConvertFactorize, BalancedPartitions) {
  std::vector<int64_t> neurons(96);
  for (int64_t i = 0; i < 96; ++i) neurons[static_cast<size_t>(i)] = 2 * i + 1;
  auto check_partition = [&](const NeuronGroups& g, size_t groups) {
    ASSERT_EQ(g.size(), groups);
    std::multiset<int64_t> all;
    for (const auto& x : g) {
      EXPECT_EQ(x.size(), neurons.size() / groups);
      EXPECT_TRUE(std::is_sorted(x.begin(), x.end()));
      all.insert(x.begin(), x.end());
    }
    EXPECT_EQ(all, std::multiset<int64_t>(neurons.begin(), neurons.end()));
  };
  const auto r1 = split_random(neurons, 8, 5), r2 = split_random(neurons, 8, 5), r3 = split_random(neurons, 8, 6);
  check_partition(r1, 8);
  EXPECT_EQ(r1, r2);
  EXPECT_NE(r1, r3);
  // k-means recovers planted clusters: rows near 4 orthogonal directions.
  const int64_t dim = 16;
  std::vector<float> rows(static_cast<size_t>(200 * dim));
  const auto noise = testing::random_normal(rows.size(), 3);
  for (int64_t i = 0; i < 200; ++i)
    for (int64_t j = 0; j < dim; ++j)
      rows[static_cast<size_t>(i * dim + j)] = (j == (i % 4) ? 5.0f : 0.0f) + 0.1f * noise[static_cast<size_t>(i * dim + j)];
  const auto k = split_kmeans(rows.data(), dim, neurons, 4, 9);
  check_partition(k, 4);
  for (const auto& g : k)
    for (int64_t v : g) EXPECT_EQ(v % 4, g.front() % 4);
  EXPECT_EQ(k, split_kmeans(rows.data(), dim, neurons, 4, 9));
  // balanced_assign respects capacities even when every point prefers cluster 0.
  std::vector<float> sc = {9, 1, 8, 2, 7, 3, 6, 4};
  const auto lab = balanced_assign(sc, 4, 2);
  EXPECT_EQ(std::count(lab.begin(), lab.end(), 0), 2);
  EXPECT_EQ(lab[0], 0);
  EXPECT_EQ(lab[1], 0);
}

TEST(ConvertFactorize, CoactivationGraphAndSharedNeurons) {
  // 4 neurons active in pairs {0, 2} and {1, 3}; neuron 3 is almost always on.
  const int64_t T = 6, I = 4;
  const std::vector<float> A = {1, 0, 1, 0.5f, 0, 1, 0, 1, 2, 0, 2, 0.6f, 0, 3, 0, 3, -1, 0, -1, 0.4f, 0, 1, 0, 1};
  const std::vector<int64_t> all = {0, 1, 2, 3};
  const auto C = coactivation_matrix(A.data(), T, I, all);
  double brute = 0;
  for (int64_t t = 0; t < T; ++t) brute += std::max(0.0f, A[static_cast<size_t>(t * I + 0)] * A[static_cast<size_t>(t * I + 2)]);
  EXPECT_NEAR(C[0 * 4 + 2], brute, 1e-9);
  EXPECT_EQ(C[0 * 4 + 1], 0.0);
  double within = 0;
  const auto g = split_coactivation(C, all, 2, 1, &within);
  ASSERT_EQ(g.size(), 2u);
  std::set<std::vector<int64_t>> got(g.begin(), g.end());
  EXPECT_EQ(got, (std::set<std::vector<int64_t>>{{0, 2}, {1, 3}}));
  EXPECT_GT(within, 0.8);
  const auto sh = most_active_neurons(A.data(), T, I, 1);
  EXPECT_EQ(sh, std::vector<int64_t>{3});
}

TEST(ConvertFactorize, RidgeRecoversALinearMap) {
  const int64_t T = 400, H = 8, E = 3;
  const auto X = testing::random_normal(static_cast<size_t>(T * H), 1);
  std::vector<double> Y(static_cast<size_t>(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      double s = 10.0;  // an offset shared by all experts: invisible to the softmax, removed by centring
      for (int64_t h = 0; h < H; ++h) s += X[static_cast<size_t>(t * H + h)] * ((h + e) % 3 == 0 ? 1.0 : -0.5) * (e + 1);
      Y[static_cast<size_t>(t * E + e)] = s;
    }
  const RidgeRouter r = fit_ridge_router(X, T, H, Y, E);
  EXPECT_GT(r.r2, 0.999);
  ASSERT_EQ(r.W.size(), static_cast<size_t>(E * H));
}

TEST(ConvertFactorize, SyntheticAllExpertsActiveIsExact) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  const std::string stats = synth_stats(d, llama);
  const auto chunks = token_chunks(512, 2, 40);
  struct Case {
    std::string to;
    int64_t N;
    SplitMethod split;
    double shared;
  };
  const std::vector<Case> cases = {{"mixtral", 4, SplitMethod::Random, 0},     {"mixtral", 8, SplitMethod::KMeans, 0},
                                   {"qwen2_moe", 4, SplitMethod::Coactivation, 0},
                                   {"qwen2_moe", 4, SplitMethod::KMeans, 25},  {"qwen2_moe", 8, SplitMethod::Random, 10},
                                   {"mixtral", 2, SplitMethod::Coactivation, 0}};
  int i = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(str(c.to, " N=", c.N, " ", split_method_name(c.split), " shared=", c.shared));
    FactorizeOptions o = options(c.to, c.N, c.N, c.split, FactorRouter::Zero);
    o.shared_neurons_pct = c.shared;
    if (c.split == SplitMethod::Coactivation || c.shared > 0) o.calib_stats = stats;
    const std::string out = d.file(str("f", i++));
    const ConvertReport r = factorize(llama, out, o);
    expect_clean(out, c.to);
    int64_t total = r.per_layer[0].shared_size;
    for (auto s : r.per_layer[0].expert_sizes) total += s;
    EXPECT_EQ(total, 128);
    if (c.shared > 0) {
      EXPECT_GT(r.per_layer[0].shared_size, 0);
      EXPECT_EQ((128 - r.per_layer[0].shared_size) % c.N, 0);
    }
    const Agreement a = compare(llama, out, chunks);
    EXPECT_LT(a.kld, 1e-6);
    EXPECT_EQ(a.top1, 1.0);
  }
  // qwen3 → qwen3_moe.
  const std::string qwen3 = synth(d, "qwen3");
  factorize(qwen3, d.file("q3"), options("qwen3_moe", 4, 4, SplitMethod::KMeans, FactorRouter::Zero));
  expect_clean(d.file("q3"), "qwen3_moe");
  const Agreement a = compare(qwen3, d.file("q3"), chunks);
  EXPECT_LT(a.kld, 1e-6);
  EXPECT_EQ(a.top1, 1.0);
}

TEST(ConvertFactorize, DeterministicPerSeed) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  FactorizeOptions o = options("mixtral", 4, 2, SplitMethod::KMeans, FactorRouter::Centroid);
  factorize(llama, d.file("a"), o);
  factorize(llama, d.file("b"), o);
  EXPECT_EQ(read_file(d.file("a/model.safetensors")), read_file(d.file("b/model.safetensors")));
  o.split = SplitMethod::Random;
  factorize(llama, d.file("c"), o);
  o.seed = 22;
  factorize(llama, d.file("e"), o);
  EXPECT_NE(read_file(d.file("c/model.safetensors")), read_file(d.file("e/model.safetensors")));
}

TEST(ConvertFactorize, RefusalsAndBadOptions) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  auto refused = [&](const FactorizeOptions& o, const std::string& needle) {
    const std::string out = d.file("x");
    try {
      factorize(llama, out, o);
      ADD_FAILURE() << "expected moetool::Error containing " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out));
  };
  refused(options("mixtral", 4, 4, SplitMethod::Coactivation, FactorRouter::Zero), "needs calibration");
  refused(options("mixtral", 4, 2, SplitMethod::KMeans, FactorRouter::Fit), "needs calibration");
  refused(options("mixtral", 3, 3, SplitMethod::KMeans, FactorRouter::Zero), "does not split into 3");
  refused(options("qwen3_moe", 4, 4, SplitMethod::KMeans, FactorRouter::Zero), "q/k RMSNorm");
  refused(options("deepseek_v3", 4, 4, SplitMethod::KMeans, FactorRouter::Zero), "MLA");
  FactorizeOptions o = options("mixtral", 4, 4, SplitMethod::KMeans, FactorRouter::Zero);
  o.shared_neurons_pct = 25;
  o.calib_stats = synth_stats(d, llama);
  refused(o, "no shared expert");
  o = options("mixtral", 4, 4, SplitMethod::KMeans, FactorRouter::Zero);
  o.calib_stats = d.file("missing.safetensors");
  EXPECT_THROW(factorize(llama, d.file("y"), o), Error);
}

TEST(ConvertFactorize, TinyStoriesExactAndFittedRouter) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  const auto eval = text_chunks(3, 128);
  // K = N with a zero router: exact for every split, with and without shared neurons.
  FactorizeOptions o = options("qwen2_moe", 8, 8, SplitMethod::Coactivation, FactorRouter::Zero);
  o.shared_neurons_pct = 25;
  o.calib_text = calib();
  o.ctx = 128;
  o.chunks = 8;
  const ConvertReport r = factorize(tiny(), d.file("exact"), o);
  expect_clean(d.file("exact"), "qwen2_moe");
  EXPECT_EQ(r.per_layer[0].shared_size, 96);
  EXPECT_EQ(r.per_layer[0].expert_sizes, std::vector<int64_t>(8, 36));
  ASSERT_TRUE(r.per_layer[0].coactivation_within.has_value());
  EXPECT_GT(*r.per_layer[0].coactivation_within, 1.0 / 8);
  Agreement a = compare(tiny(), d.file("exact"), eval);
  EXPECT_LT(a.kld, 1e-6);
  EXPECT_EQ(a.top1, 1.0);
  factorize(tiny(), d.file("exact2"), options("mixtral", 8, 8, SplitMethod::KMeans, FactorRouter::Zero));
  a = compare(tiny(), d.file("exact2"), eval);
  EXPECT_LT(a.kld, 1e-6);
  EXPECT_EQ(a.top1, 1.0);

  // Top-2 of 8: the ridge router has R² per layer in the report, and reconstructs the calibration
  // FFN outputs better than the centroid router, which beats a random one.
  std::map<FactorRouter, std::vector<double>> err;
  for (FactorRouter fr : {FactorRouter::Fit, FactorRouter::Centroid, FactorRouter::Random}) {
    FactorizeOptions q = options("mixtral", 8, 2, SplitMethod::KMeans, fr);
    q.calib_text = calib();
    q.ctx = 128;
    q.chunks = 8;
    const std::string out = d.file(str("k2-", factor_router_name(fr)));
    const ConvertReport rr = factorize(tiny(), out, q);
    expect_clean(out, "mixtral");
    for (const auto& l : rr.per_layer) {
      ASSERT_TRUE(l.recon_rel_err.has_value());
      err[fr].push_back(*l.recon_rel_err);
      if (fr == FactorRouter::Fit) {
        ASSERT_TRUE(l.router_r2.has_value());
        EXPECT_GT(*l.router_r2, 0.2);
        EXPECT_LE(*l.router_r2, 1.0);
      }
    }
    if (fr == FactorRouter::Fit) {
      const auto j = rr.to_json();
      EXPECT_TRUE(j["per_layer"][0].contains("router_r2"));
    }
  }
  for (size_t l = 0; l < 2; ++l) {
    EXPECT_LT(err[FactorRouter::Fit][l], err[FactorRouter::Centroid][l]) << "layer " << l;
    EXPECT_LT(err[FactorRouter::Centroid][l], err[FactorRouter::Random][l]) << "layer " << l;
  }
  // On held-out text the fitted router's model is closer to the dense one than the random router's.
  const auto held = [] {
    auto tok = load_tokenizer(tiny());
    auto all = make_chunks(*tok, read_file(calib()), 128, 0, true, calib());
    return std::vector<std::vector<int32_t>>(all.end() - 3, all.end());
  }();
  EXPECT_LT(compare(tiny(), d.file("k2-fit"), held).kld, compare(tiny(), d.file("k2-random"), held).kld);
}

TEST(ConvertFactorize, CliWithCalibrationStats) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  auto c = testing::run_moetool({"calibrate", tiny(), "--text", calib(), "--ctx", "128", "--chunks", "6", "--hidden",
                                 "--activations", "--no-router", "-o", d.file("stats.safetensors"), "-q"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  auto r = testing::run_moetool({"convert", "factorize", tiny(), "-o", d.file("out"), "--experts", "4", "--top-k",
                                 "2", "--split", "coactivation", "--router", "fit", "--to", "mixtral", "--calib-stats",
                                 d.file("stats.safetensors"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["split"], "coactivation");
  EXPECT_TRUE(j["per_layer"][1]["router_r2"].is_number());
  EXPECT_EQ(j["calibration_tokens"], 6 * 128);
  EXPECT_NE(r.err.find("[2/2] layer 1"), std::string::npos);
  auto v = testing::run_moetool({"verify", tiny(), d.file("out"), "--text", calib(), "--ctx", "128", "--chunks", "2",
                                 "-q", "--json"});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  auto bad = testing::run_moetool({"convert", "factorize", tiny(), "-o", d.file("bad"), "--to", "mixtral", "--split",
                                   "spectral"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("spectral"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace moetool
