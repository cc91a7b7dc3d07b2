// tests/expert_refit_test.cc — the closed-form refit of factorized experts' down projections
// (convert/expert_refit.h): equal to a float64 least-squares solution of the same ridge problem, never
// above the construction's calibration error (which is the routing probe's reconstruction error),
// experts no token reaches keep their columns, and on TinyStories-656K (vendored) the refitted top-2
// MoE is closer to the dense model on held-out text than without the refit.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <random>

#include "convert/expert_refit.h"
#include "convert/factorize.h"
#include "convert/router_fit.h"
#include "tests/test_util.h"
#include "verify/verify_job.h"

namespace moetool {
namespace {

struct Case {
  int64_t T = 200, I = 24, H = 8, E = 4, k = 2;
  std::vector<float> A, down, X, R;
  NeuronGroups groups;
  std::vector<int64_t> shared;
  std::vector<std::vector<int32_t>> sel;
  std::vector<std::vector<float>> w;
};

// Correlated activations, 4 experts of 5 neurons and 4 shared, routing from a random router (its
// inputs have the hidden width H, as in a model: the probe reads down as [H, I]).
Case make_case(uint64_t seed) {
  Case c;
  const int64_t Hx = c.H;
  const auto base = testing::random_normal(static_cast<size_t>(c.T * c.I), seed);
  const auto mix = testing::random_normal(static_cast<size_t>(c.I * c.I), seed + 1);
  c.A.assign(static_cast<size_t>(c.T * c.I), 0.0f);
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t i = 0; i < c.I; ++i)
      for (int64_t j = 0; j <= i; ++j) c.A[t * c.I + i] += base[t * c.I + j] * mix[i * c.I + j] / std::sqrt(float(i + 1));
  c.down = testing::random_normal(static_cast<size_t>(c.H * c.I), seed + 2);
  std::vector<int64_t> perm(c.I);
  for (int64_t i = 0; i < c.I; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed));
  c.shared.assign(perm.begin(), perm.begin() + 4);
  for (int64_t e = 0; e < c.E; ++e) c.groups.emplace_back(perm.begin() + 4 + 5 * e, perm.begin() + 9 + 5 * e);
  c.X = testing::random_normal(static_cast<size_t>(c.T * Hx), seed + 3);
  c.R = testing::random_normal(static_cast<size_t>(c.E * Hx), seed + 4);
  RoutingProbe probe(c.X, c.T, Hx, c.A.data(), c.I, c.down.data(), c.groups, c.shared);
  probe.routing(c.R, c.k, c.sel, c.w);
  return c;
}

TEST(ExpertRefit, EqualsFloat64LeastSquares) {
  const Case c = make_case(11);
  const DownRefit r = refit_down(c.A.data(), c.T, c.I, c.down.data(), c.H, c.groups, c.shared, c.sel, c.w, c.k, 0.3);
  // The same ridge problem as one least-squares system, [Z; √λ·I]·Gᵀ = [Y; √λ·G0ᵀ], solved by QR.
  using M = Eigen::MatrixXd;
  M Z = M::Zero(c.T, c.I), Y(c.T, c.H), G0(c.H, c.I);
  for (int64_t h = 0; h < c.H; ++h)
    for (int64_t i = 0; i < c.I; ++i) G0(h, i) = c.down[h * c.I + i];
  for (size_t e = 0; e < c.groups.size(); ++e)
    for (int64_t i : c.groups[e]) G0.col(i) *= double(c.k);
  for (int64_t t = 0; t < c.T; ++t) {
    for (int64_t h = 0; h < c.H; ++h) {
      double y = 0;
      for (int64_t i = 0; i < c.I; ++i) y += double(c.down[h * c.I + i]) * c.A[t * c.I + i];
      Y(t, h) = y;
    }
    for (int64_t i : c.shared) Z(t, i) = c.A[t * c.I + i];
    for (int64_t j = 0; j < c.k; ++j)
      for (int64_t i : c.groups[c.sel[t][j]]) Z(t, i) = double(c.w[t][j]) * c.A[t * c.I + i];
  }
  M lhs(c.T + c.I, c.I), rhs(c.T + c.I, c.H);
  lhs << Z, std::sqrt(r.lambda) * M::Identity(c.I, c.I);
  rhs << Y, std::sqrt(r.lambda) * G0.transpose();
  const M G = lhs.colPivHouseholderQr().solve(rhs).transpose();
  double scale = 0, diff = 0;
  for (int64_t h = 0; h < c.H; ++h)
    for (int64_t i = 0; i < c.I; ++i) {
      scale = std::max(scale, std::abs(G(h, i)));
      diff = std::max(diff, std::abs(G(h, i) - double(r.G[h * c.I + i])));
    }
  // The result is stored as float (relative rounding 6e-8); the normal equations in double add about
  // cond(ZᵀZ + λI)·1e-16, far below that: 1e-5 of the largest entry leaves room for both.
  EXPECT_LT(diff, 1e-5 * scale) << diff << " vs " << scale;
  const double yy = Y.squaredNorm();
  EXPECT_NEAR(r.err_after, (Y - Z * G.transpose()).squaredNorm() / yy, 1e-6);
}

TEST(ExpertRefit, NeverAboveTheConstructionWhoseErrorIsTheProbes) {
  for (uint64_t seed : {1, 2, 3, 4}) {
    const Case c = make_case(seed);
    RoutingProbe probe(c.X, c.T, c.H, c.A.data(), c.I, c.down.data(), c.groups, c.shared);
    const double probe_err = probe.recon_error(c.R, 1.0, c.k);
    for (double ridge : {0.0, 1e-3, 0.3, 10.0}) {
      const DownRefit r = refit_down(c.A.data(), c.T, c.I, c.down.data(), c.H, c.groups, c.shared, c.sel, c.w, c.k, ridge);
      EXPECT_NEAR(r.err_before, probe_err, 1e-9 + 1e-6 * probe_err) << seed;
      EXPECT_LE(r.err_after, r.err_before * (1 + 1e-9)) << seed << " ridge " << ridge;
      EXPECT_LT(r.err_after, r.err_before) << "the refit should help on correlated activations";
    }
  }
}

TEST(ExpertRefit, ExpertsNoTokenReachesKeepTheirColumns) {
  Case c = make_case(5);
  for (auto& s : c.sel)  // expert 3 never chosen
    for (auto& e : s)
      if (e == 3) e = s[0] == 3 ? (s[1] == 0 ? 1 : 0) : s[0] == 0 ? 1 : 0;
  for (auto& s : c.sel)
    if (s[0] == s[1]) s[1] = s[0] == 0 ? 1 : 0;
  const DownRefit r = refit_down(c.A.data(), c.T, c.I, c.down.data(), c.H, c.groups, c.shared, c.sel, c.w, c.k, 0.3);
  for (int64_t h = 0; h < c.H; ++h)
    for (int64_t i : c.groups[3]) EXPECT_FLOAT_EQ(r.G[h * c.I + i], float(c.k) * c.down[h * c.I + i]);
}

// TinyStories-656K top-2 of 8 (vendored model and texts; calibration and evaluation texts disjoint).
TEST(ExpertRefit, TinyStoriesTopTwoIsCloserToTheDenseModel) {
  testing::TempDir d;
  const std::string src = std::string(MOETOOL_SOURCE_DIR) + "/examples/models/tinystories-656k";
  const std::string texts = std::string(MOETOOL_SOURCE_DIR) + "/examples/texts/";
  auto kld = [&](bool refit) {
    FactorizeOptions o;
    o.to = "mixtral";
    o.experts = 8;
    o.top_k = 2;
    o.split = SplitMethod::Coactivation;
    o.router = FactorRouter::Fit;
    o.calib_text = texts + "stories-calib.txt";
    o.ctx = 128;
    o.refit = refit;
    const std::string out = d.file(refit ? "refit" : "plain");
    const ConvertReport r = factorize(src, out, o);
    for (const auto& l : r.per_layer) {
      EXPECT_EQ(l.refit_err_after.has_value(), refit);
      if (refit) EXPECT_LT(*l.refit_err_after, *l.refit_err_before);
    }
    verify::Options v;
    v.base = src;
    v.candidate = out;
    v.text = texts + "stories-eval.txt";
    v.ctx = 128;
    return verify::run(v).report.stats.kld.value;
  };
  const double plain = kld(false), refit = kld(true);
  EXPECT_LT(refit, 0.8 * plain) << "refit " << refit << " vs " << plain;
}

}  // namespace
}  // namespace moetool
