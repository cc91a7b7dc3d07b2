// tests/metrics_test.cc — verify statistics (KLD, PPL, Δp, same-top, percentiles, thresholds, per-layer
// similarity) against float64 references written plainly here, and llama.cpp's KL-divergence base
// file (bit-exact row encoding, round trip, corrupted files).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/fs.h"
#include "tests/test_util.h"
#include "verify/kld_file.h"
#include "verify/metrics.h"

namespace moetool {
namespace {

using moetool::testing::random_normal;
using moetool::testing::TempDir;

std::vector<float> scaled(std::vector<float> v, float s) {
  for (float& x : v) x *= s;
  return v;
}

using testing::random_tokens;

// Plain float64 reference for one row: softmax by direct exponentiation (logits are moderate).
std::vector<double> ref_softmax(const float* l, int64_t V) {
  std::vector<double> p(static_cast<size_t>(V));
  double z = 0;
  for (int64_t j = 0; j < V; ++j) z += std::exp(static_cast<double>(l[j]));
  for (int64_t j = 0; j < V; ++j) p[j] = std::exp(static_cast<double>(l[j])) / z;
  return p;
}

struct RefRow {
  double kld, dp, nll, nll_base;
  bool same_top;
};

RefRow ref_row(const float* b, const float* c, int64_t V, int32_t tok) {
  const auto pb = ref_softmax(b, V), pc = ref_softmax(c, V);
  RefRow r{};
  for (int64_t j = 0; j < V; ++j) r.kld += pb[j] * std::log(pb[j] / pc[j]);
  r.dp = pc[tok] - pb[tok];
  r.nll = -std::log(pc[tok]);
  r.nll_base = -std::log(pb[tok]);
  r.same_top = std::max_element(pb.begin(), pb.end()) - pb.begin() == std::max_element(pc.begin(), pc.end()) - pc.begin();
  return r;
}

double ref_percentile(std::vector<double> v, double f) {
  std::sort(v.begin(), v.end());
  const double pos = f * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

// ------------------------------------------------------------------------------------------------

TEST(Metrics, IdenticalLogitsGiveZeroKld) {
  const int64_t n = 64, V = 50;
  const auto base = scaled(random_normal(n * V, 11), 3.0f);
  const auto tok = random_tokens(n, V, 12);
  VerifyAccumulator acc;
  acc.add_chunk(base.data(), base.data(), tok.data(), n, V, 0);
  const VerifyStats s = acc.finish();
  EXPECT_EQ(s.n_tokens, n - 1);
  EXPECT_EQ(s.n_chunks, 1);
  EXPECT_LT(std::abs(s.kld.value), 1e-12);
  EXPECT_EQ(quantile_value(s.kld_q, 1.0), 0.0);
  EXPECT_EQ(quantile_value(s.kld_q, 0.0), 0.0);
  EXPECT_EQ(s.same_top.value, 1.0);
  EXPECT_EQ(s.same_top.unc, 0.0);
  EXPECT_DOUBLE_EQ(s.ppl_ratio.value, 1.0);
  EXPECT_EQ(s.ln_ppl_ratio.value, 0.0);
  EXPECT_EQ(s.ppl_diff.value, 0.0);
  EXPECT_EQ(s.delta_p.value, 0.0);
  EXPECT_EQ(s.rms_delta_p.value, 0.0);
  EXPECT_EQ(s.rms_delta_p.unc, 0.0);
  EXPECT_NEAR(s.cor_ln_ppl, 1.0, 1e-9);
  EXPECT_DOUBLE_EQ(s.ppl_q.value, s.ppl_base.value);
  EXPECT_TRUE(s.kld_histogram.edges.empty());
  EXPECT_EQ(s.kld_histogram.below, n - 1);
}

// 3 tokens, 4-word vocabulary: rows 0 and 1 are scored. Logits are log-probabilities, so the
// softmax gives back the probabilities written here.
TEST(Metrics, HandComputedExample) {
  const double pb0[4] = {0.1, 0.2, 0.3, 0.4}, pc0[4] = {0.25, 0.25, 0.25, 0.25};
  const double pb1[4] = {0.7, 0.1, 0.1, 0.1}, pc1[4] = {0.4, 0.3, 0.2, 0.1};
  std::vector<float> base(12), cand(12);  // row 2 predicts nothing; fill it anyway (never zeros)
  for (int j = 0; j < 4; ++j) {
    base[j] = static_cast<float>(std::log(pb0[j]));
    cand[j] = static_cast<float>(std::log(pc0[j]));
    base[4 + j] = static_cast<float>(std::log(pb1[j]));
    cand[4 + j] = static_cast<float>(std::log(pc1[j]));
    base[8 + j] = cand[8 + j] = 0.5f + static_cast<float>(j);
  }
  const int32_t tokens[3] = {2, 3, 0};  // row 0 predicts token 3, row 1 predicts token 0
  VerifyAccumulator acc;
  acc.add_chunk(base.data(), cand.data(), tokens, 3, 4, 0);
  const VerifyStats s = acc.finish();
  ASSERT_EQ(s.n_tokens, 2);
  // KLD row 0 = Σ pb log(pb/0.25); row 1 = Σ pb log(pb/pc).
  const double kld0 = 0.1 * std::log(0.1 / 0.25) + 0.2 * std::log(0.2 / 0.25) + 0.3 * std::log(0.3 / 0.25) +
                      0.4 * std::log(0.4 / 0.25);
  const double kld1 = 0.7 * std::log(0.7 / 0.4) + 0.1 * std::log(0.1 / 0.3) + 0.1 * std::log(0.1 / 0.2) +
                      0.1 * std::log(0.1 / 0.1);
  EXPECT_NEAR(kld0, 0.1064401, 1e-6);  // by hand: 0.1·ln .4 + 0.2·ln .8 + 0.3·ln 1.2 + 0.4·ln 1.6
  EXPECT_NEAR(s.kld.value, (kld0 + kld1) / 2, 1e-6);
  EXPECT_NEAR(quantile_value(s.kld_q, 1.0), std::max(kld0, kld1), 1e-6);
  EXPECT_NEAR(quantile_value(s.kld_q, 0.0), std::min(kld0, kld1), 1e-6);
  EXPECT_NEAR(quantile_value(s.kld_q, 0.5), (kld0 + kld1) / 2, 1e-6);
  EXPECT_EQ(s.kld.unc, 0.0);  // llama.cpp reports no uncertainty for ≤ 10 values
  // PPL(Q) = exp(−(ln 0.25 + ln 0.4)/2) = 1/sqrt(0.1); PPL(base) = 1/sqrt(0.4·0.7).
  EXPECT_NEAR(s.ppl_q.value, 1.0 / std::sqrt(0.1), 1e-6);
  EXPECT_NEAR(s.ppl_base.value, 1.0 / std::sqrt(0.28), 1e-6);
  EXPECT_NEAR(s.ppl_ratio.value, std::sqrt(0.28 / 0.1), 1e-6);
  EXPECT_NEAR(s.ppl_diff.value, 1.0 / std::sqrt(0.1) - 1.0 / std::sqrt(0.28), 1e-6);
  EXPECT_NEAR(s.ln_ppl_ratio.value, 0.5 * std::log(2.8), 1e-6);
  // Δp: 0.25 − 0.4 and 0.4 − 0.7.
  EXPECT_NEAR(s.delta_p.value, (-0.15 - 0.3) / 2, 1e-6);
  EXPECT_NEAR(quantile_value(s.delta_p_q, 0.0), -0.3, 1e-6);
  EXPECT_NEAR(quantile_value(s.delta_p_q, 1.0), -0.15, 1e-6);
  EXPECT_NEAR(s.rms_delta_p.value, std::sqrt((0.15 * 0.15 + 0.3 * 0.3) / 2), 1e-6);
  // Top-1: row 0 base 3 vs candidate 0 (first of a tie), row 1 both 0.
  EXPECT_DOUBLE_EQ(s.same_top.value, 0.5);
}

TEST(Metrics, ShiftedCandidateLogitsGiveZeroKld) {
  const int64_t n = 40, V = 300;
  const auto base = scaled(random_normal(n * V, 21), 2.0f);
  auto cand = base;
  const auto shift = random_normal(n, 22);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < V; ++j) cand[i * V + j] += 4.0f * shift[i];
  const auto tok = random_tokens(n, V, 23);
  VerifyAccumulator acc;
  acc.add_chunk(base.data(), cand.data(), tok.data(), n, V, 0);
  const VerifyStats s = acc.finish();
  EXPECT_LT(std::abs(s.kld.value), 1e-10);
  EXPECT_LT(std::abs(quantile_value(s.kld_q, 1.0)), 1e-10);
  EXPECT_EQ(s.same_top.value, 1.0);
  EXPECT_NEAR(s.ppl_ratio.value, 1.0, 1e-6);
  EXPECT_LT(s.rms_delta_p.value, 1e-6);
}

TEST(Metrics, PerturbedMatchesFloat64Reference) {
  const int64_t n = 200, V = 97, first = 5;
  const auto base = scaled(random_normal(n * V, 31), 2.5f);
  auto cand = base;
  const auto noise = random_normal(n * V, 32);
  for (size_t k = 0; k < cand.size(); ++k) cand[k] += 0.7f * noise[k];
  const auto tok = random_tokens(n, V, 33);
  VerifyAccumulator acc;
  acc.add_chunk(base.data(), cand.data(), tok.data(), n, V, first);
  const VerifyStats s = acc.finish();

  std::vector<double> kld, dp;
  double nll = 0, nll2 = 0, nllb = 0, nllb2 = 0, nn = 0, same = 0;
  for (int64_t i = first; i < n - 1; ++i) {
    const RefRow r = ref_row(&base[i * V], &cand[i * V], V, tok[i + 1]);
    kld.push_back(r.kld);
    dp.push_back(r.dp);
    nll += r.nll;
    nll2 += r.nll * r.nll;
    nllb += r.nll_base;
    nllb2 += r.nll_base * r.nll_base;
    nn += r.nll * r.nll_base;
    same += r.same_top ? 1 : 0;
  }
  const double N = static_cast<double>(kld.size());
  ASSERT_EQ(s.n_tokens, static_cast<int64_t>(kld.size()));
  double sk = 0, sk2 = 0, sd = 0, sd2 = 0, sd4 = 0;
  for (size_t k = 0; k < kld.size(); ++k) {
    sk += kld[k];
    sk2 += kld[k] * kld[k];
    sd += dp[k];
    sd2 += dp[k] * dp[k];
    sd4 += dp[k] * dp[k] * dp[k] * dp[k];
  }
  const double mk = sk / N;
  EXPECT_GT(mk, 0.01);
  EXPECT_LT(rel(s.kld.value, mk), 1e-9);
  EXPECT_LT(rel(s.kld.unc, std::sqrt((sk2 / N - mk * mk) / (N - 1))), 1e-7);
  for (double q : kKldQuantiles) EXPECT_LT(rel(quantile_value(s.kld_q, q), ref_percentile(kld, q)), 1e-9) << q;
  for (double q : kDeltaPQuantiles)
    EXPECT_NEAR(quantile_value(s.delta_p_q, q), ref_percentile(dp, q), 1e-12) << q;
  EXPECT_NEAR(s.delta_p.value, sd / N, 1e-12);
  EXPECT_LT(rel(s.rms_delta_p.value, std::sqrt(sd2 / N)), 1e-9);
  const double mse_unc = std::sqrt((sd4 / N - (sd2 / N) * (sd2 / N)) / (N - 1));
  EXPECT_LT(rel(s.rms_delta_p.unc, 0.5 / std::sqrt(sd2 / N) * mse_unc), 1e-7);
  EXPECT_LT(rel(s.ppl_q.value, std::exp(nll / N)), 1e-9);
  EXPECT_LT(rel(s.ppl_base.value, std::exp(nllb / N)), 1e-9);
  EXPECT_LT(rel(s.ppl_ratio.value, std::exp(nll / N - nllb / N)), 1e-9);
  const double sq = std::sqrt((nll2 / N - (nll / N) * (nll / N)) / (N - 1));
  const double sb = std::sqrt((nllb2 / N - (nllb / N) * (nllb / N)) / (N - 1));
  const double cov = (nn / N - (nll / N) * (nllb / N)) / (N - 1);
  EXPECT_LT(rel(s.ppl_q.unc, std::exp(nll / N) * sq), 1e-7);
  EXPECT_LT(rel(s.cor_ln_ppl, cov / (sq * sb)), 1e-7);
  EXPECT_LT(rel(s.ln_ppl_ratio.unc, std::sqrt(sq * sq + sb * sb - 2 * cov)), 1e-7);
  EXPECT_DOUBLE_EQ(s.same_top.value, same / N);
  EXPECT_LT(rel(s.same_top.unc, std::sqrt(same / N * (1 - same / N) / (N - 1))), 1e-12);
  // The histogram holds every token.
  int64_t total = s.kld_histogram.below;
  for (int64_t c : s.kld_histogram.counts) total += c;
  EXPECT_EQ(total, s.n_tokens);
  EXPECT_EQ(s.kld_histogram.edges.size(), s.kld_histogram.counts.size() + 1);
}

TEST(Metrics, ChunksAccumulateLikeOneSequence) {
  const int64_t n = 32, V = 40;
  const auto b = scaled(random_normal(3 * n * V, 41), 2.0f);
  auto c = b;
  const auto noise = random_normal(3 * n * V, 42);
  for (size_t k = 0; k < c.size(); ++k) c[k] += 0.5f * noise[k];
  const auto tok = random_tokens(3 * n, V, 43);
  VerifyAccumulator acc;
  double sum = 0;
  int64_t count = 0;
  for (int64_t k = 0; k < 3; ++k) {
    acc.add_chunk(&b[k * n * V], &c[k * n * V], &tok[k * n], n, V, n / 2);
    for (int64_t i = n / 2; i < n - 1; ++i, ++count)
      sum += ref_row(&b[(k * n + i) * V], &c[(k * n + i) * V], V, tok[k * n + i + 1]).kld;
  }
  const VerifyStats s = acc.finish();
  EXPECT_EQ(s.n_chunks, 3);
  EXPECT_EQ(s.n_tokens, 3 * (n - 1 - n / 2));
  EXPECT_EQ(count, s.n_tokens);
  EXPECT_LT(rel(s.kld.value, sum / static_cast<double>(count)), 1e-9);
  ASSERT_EQ(s.chunks.size(), 3u);
  EXPECT_EQ(s.chunks[0].tokens, n - 1 - n / 2);
  EXPECT_DOUBLE_EQ(s.chunks[2].kld.value, s.kld.value);
  EXPECT_DOUBLE_EQ(s.chunks[2].same_top.value, s.same_top.value);
  EXPECT_EQ(first_scored_row(ScoredPositions::kSecondHalf, 512), 256);
  EXPECT_EQ(first_scored_row(ScoredPositions::kAllAfterFirst, 512), 0);
  EXPECT_EQ(parse_scored_positions("second-half"), ScoredPositions::kSecondHalf);
  EXPECT_THROW(parse_scored_positions("half"), Error);
}

TEST(Metrics, BaseLogProbsOverloadMatchesLogits) {
  const int64_t n = 30, V = 64, first = 3;
  const auto b = scaled(random_normal(n * V, 51), 2.0f);
  auto c = b;
  const auto noise = random_normal(n * V, 52);
  for (size_t k = 0; k < c.size(); ++k) c[k] += 0.4f * noise[k];
  const auto tok = random_tokens(n, V, 53);
  std::vector<float> lp((n - 1 - first) * V);
  for (int64_t i = first; i < n - 1; ++i) {
    const auto p = ref_softmax(&b[i * V], V);
    for (int64_t j = 0; j < V; ++j) lp[(i - first) * V + j] = static_cast<float>(std::log(p[j]));
  }
  VerifyAccumulator a1, a2;
  a1.add_chunk(b.data(), c.data(), tok.data(), n, V, first);
  a2.add_chunk(VerifyAccumulator::BaseLogProbs{lp.data(), -INFINITY}, c.data(), tok.data(), n, V, first);
  const VerifyStats s1 = a1.finish(), s2 = a2.finish();
  EXPECT_NEAR(s2.kld.value, s1.kld.value, 1e-6);
  EXPECT_NEAR(s2.ppl_base.value, s1.ppl_base.value, 1e-5 * s1.ppl_base.value);
  EXPECT_DOUBLE_EQ(s2.ppl_q.value, s1.ppl_q.value);
  EXPECT_DOUBLE_EQ(s2.same_top.value, s1.same_top.value);
}

TEST(Metrics, RejectsBadInput) {
  const int64_t n = 4, V = 5;
  auto b = scaled(random_normal(n * V, 61), 1.0f);
  std::vector<int32_t> tok = {1, 2, 3, 4};
  VerifyAccumulator acc;
  tok[2] = 5;
  EXPECT_THROW(acc.add_chunk(b.data(), b.data(), tok.data(), n, V, 0), Error);
  tok[2] = -1;
  EXPECT_THROW(acc.add_chunk(b.data(), b.data(), tok.data(), n, V, 0), Error);
  tok[2] = 3;
  EXPECT_THROW(acc.add_chunk(b.data(), b.data(), tok.data(), n, V, 4), Error);
  EXPECT_THROW(acc.add_chunk(b.data(), b.data(), tok.data(), n, V, -1), Error);
  auto nan = b;
  nan[7] = NAN;
  EXPECT_THROW(acc.add_chunk(b.data(), nan.data(), tok.data(), n, V, 0), Error);
  EXPECT_EQ(acc.n_tokens(), 0);
  // −inf (a masked token) is fine in the candidate and the base.
  auto masked = b;
  masked[2] = -INFINITY;
  acc.add_chunk(masked.data(), masked.data(), tok.data(), n, V, 0);
  EXPECT_EQ(acc.n_tokens(), 3);
  EXPECT_EQ(acc.finish().kld.value, 0.0);
}

TEST(Metrics, PercentilesOnKnownSequence) {
  std::vector<double> v;
  for (int i = 1; i <= 101; ++i) v.push_back(i);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 0.5), 51.0);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 1.0), 101.0);
  EXPECT_DOUBLE_EQ(percentile_sorted(v, 0.0), 1.0);
  EXPECT_NEAR(percentile_sorted(v, 0.999), 100.9, 1e-9);  // p = 99.9 → 100 + 0.9·1
  EXPECT_NEAR(percentile_sorted(v, 0.99), 100.0, 1e-9);
  EXPECT_NEAR(percentile_sorted(v, 0.001), 1.1, 1e-9);
  EXPECT_NEAR(percentile_sorted(v, 0.25), 26.0, 1e-9);
  EXPECT_DOUBLE_EQ(percentile_sorted({1, 2, 3, 4}, 0.5), 2.5);  // llama.cpp's even-count median
  EXPECT_DOUBLE_EQ(percentile_sorted({7}, 0.3), 7.0);
  EXPECT_THROW(percentile_sorted({}, 0.5), Error);
  EXPECT_EQ(quantile_key(0.999), "p99_9");
  EXPECT_EQ(quantile_key(0.05), "p5");
  EXPECT_EQ(quantile_key(0.001), "p0_1");
  EXPECT_EQ(quantile_key(0.5), "median");
  EXPECT_EQ(quantile_label(0.05), " 5.0%");
  EXPECT_EQ(quantile_label(0.999), "99.9%");
}

TEST(Metrics, ThresholdsPassAndFail) {
  VerifyStats s;
  s.n_tokens = 1000;
  s.kld = {0.02, 0.001};
  s.same_top = {0.93, 0.01};
  s.ppl_ratio = {1.04, 0.01};
  Thresholds t;
  EXPECT_TRUE(check(s, t).empty());
  t.max_kld = 0.05;
  t.min_top1 = 0.9;
  t.max_ppl_ratio = 1.05;
  EXPECT_TRUE(check(s, t).empty());
  auto r = evaluate(s, t);
  ASSERT_EQ(r.size(), 3u);
  EXPECT_TRUE(r[0].passed && r[1].passed && r[2].passed);
  t.max_kld = 0.01;
  t.min_top1 = 0.95;
  auto lines = check(s, t);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("mean KLD"), std::string::npos);
  EXPECT_NE(lines[0].find("max_kld"), std::string::npos);
  EXPECT_NE(lines[1].find("same top p"), std::string::npos);
  EXPECT_NE(lines[1].find("min_top1"), std::string::npos);
  // Boundary values pass; nothing scored fails.
  t = {};
  t.max_kld = 0.02;
  EXPECT_TRUE(check(s, t).empty());
  VerifyStats empty;
  lines = check(empty, t);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "no tokens were scored");
  EXPECT_TRUE(check(VerifyAccumulator().finish(), Thresholds{}).size() == 1);
}

// Rows scored elsewhere (the GPU's path: add_rows) accumulate exactly like add_chunk's own rows.
TEST(Metrics, RowsScoredElsewhereAccumulateLikeChunks) {
  const int64_t n = 120, V = 61;
  VerifyAccumulator a, b;
  for (uint64_t chunk = 0; chunk < 3; ++chunk) {
    const auto base = scaled(random_normal(n * V, 40 + chunk), 2.0f);
    auto cand = base;
    const auto noise = random_normal(n * V, 50 + chunk);
    for (size_t k = 0; k < cand.size(); ++k) cand[k] += 0.5f * noise[k];
    const auto tok = random_tokens(n, V, 60 + chunk);
    a.add_chunk(base.data(), cand.data(), tok.data(), n, V, 0);
    std::vector<ScoredRow> rows;
    for (int64_t i = 0; i + 1 < n; ++i) {
      const RefRow r = ref_row(&base[i * V], &cand[i * V], V, tok[i + 1]);
      rows.push_back({r.kld, r.dp, r.nll, r.nll_base, r.same_top});
    }
    b.add_rows(rows);
  }
  const VerifyStats sa = a.finish(), sb = b.finish();
  EXPECT_EQ(sa.n_tokens, sb.n_tokens);
  EXPECT_EQ(sa.n_chunks, 3);
  EXPECT_EQ(sb.n_chunks, 3);
  EXPECT_GT(sa.kld.value, 0.01);
  EXPECT_LT(rel(sb.kld.value, sa.kld.value), 1e-9);
  EXPECT_LT(rel(sb.ppl_q.value, sa.ppl_q.value), 1e-9);
  EXPECT_LT(rel(sb.ppl_base.value, sa.ppl_base.value), 1e-9);
  EXPECT_LT(rel(sb.rms_delta_p.value, sa.rms_delta_p.value), 1e-9);
  EXPECT_EQ(sb.same_top.value, sa.same_top.value);
  for (double q : kKldQuantiles) EXPECT_LT(rel(quantile_value(sb.kld_q, q), quantile_value(sa.kld_q, q)), 1e-9) << q;
  ASSERT_EQ(sb.chunks.size(), 3u);
  EXPECT_EQ(sb.chunks[1].tokens, 2 * (n - 1));
}

// Rows compared elsewhere (the GPU's path: add_rows of row_similarities) equal add().
TEST(Metrics, RowSimilaritiesFeedTheLayerComparison) {
  const int64_t n = 17, H = 40;
  auto a = random_normal(n * H, 81), b = random_normal(n * H, 82);
  std::fill(a.begin(), a.begin() + H, 0.0f);  // row 0: base zero (cosine 0)
  std::fill(a.begin() + H, a.begin() + 2 * H, 0.0f);
  std::fill(b.begin() + H, b.begin() + 2 * H, 0.0f);  // row 1: both zero (cosine 1)
  HiddenStateComparison x, y;
  x.add(2, a.data(), b.data(), n, H);
  const auto rows = row_similarities(a.data(), b.data(), n, H);
  ASSERT_EQ(rows.size(), static_cast<size_t>(n));
  EXPECT_EQ(rows[0].cosine, 0.0);
  EXPECT_EQ(rows[1].cosine, 1.0);
  EXPECT_EQ(rows[1].err2, 0.0);
  y.add_rows(2, H, rows);
  const auto lx = x.finish(), ly = y.finish();
  ASSERT_EQ(ly.size(), 1u);
  EXPECT_EQ(ly[0].rows, n);
  EXPECT_EQ(ly[0].mean_cosine, lx[0].mean_cosine);
  EXPECT_EQ(ly[0].min_cosine, lx[0].min_cosine);
  EXPECT_EQ(ly[0].nmse, lx[0].nmse);
  EXPECT_THROW(y.add_rows(2, H + 1, rows), Error);
}

TEST(Metrics, LayerCosineAndNmse) {
  HiddenStateComparison h;
  const float a1[6] = {1, 0, 0, 1, 2, 3}, b1[6] = {0, 1, 0, 2, 4, 6};
  h.add(3, a1, b1, 2, 3);  // row 0: orthogonal (cos 0, err 2, ref 1); row 1: parallel (cos 1, err 14, ref 14)
  const float a0[2] = {3, 4}, b0[2] = {3, 4};
  h.add(0, a0, b0, 1, 2);
  const float z[2] = {0, 0}, w[2] = {1, -1};
  h.add(0, a0, w, 1, 2);  // cos (3 − 4)/(5·√2), err (2² + 5²), ref 25
  h.add(7, z, z, 1, 2);   // both zero: cos 1, NMSE 0
  const auto L = h.finish();
  ASSERT_EQ(L.size(), 3u);
  EXPECT_EQ(L[0].layer, 0);
  EXPECT_EQ(L[0].rows, 2);
  EXPECT_NEAR(L[0].mean_cosine, (1.0 + (-1.0 / (5 * std::sqrt(2.0)))) / 2, 1e-12);
  EXPECT_NEAR(L[0].min_cosine, -1.0 / (5 * std::sqrt(2.0)), 1e-12);
  EXPECT_NEAR(L[0].nmse, (0.0 + 4 + 25) / (25 + 25), 1e-12);
  EXPECT_EQ(L[1].layer, 3);
  EXPECT_NEAR(L[1].mean_cosine, 0.5, 1e-12);
  EXPECT_NEAR(L[1].nmse, 16.0 / 15.0, 1e-12);
  EXPECT_EQ(L[2].layer, 7);
  EXPECT_EQ(L[2].mean_cosine, 1.0);
  EXPECT_EQ(L[2].nmse, 0.0);
  EXPECT_THROW(h.add(3, a0, b0, 1, 2), Error);  // width changed
}

TEST(Metrics, LayerSimilarityOfRandomVectors) {
  const int64_t n = 20, H = 33;
  const auto a = random_normal(n * H, 71), noise = random_normal(n * H, 72);
  std::vector<float> b(a.size());
  for (size_t k = 0; k < a.size(); ++k) b[k] = a[k] + 0.1f * noise[k];
  HiddenStateComparison h;
  h.add(1, a.data(), b.data(), n, H);
  double cs = 0, e = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t j = 0; j < H; ++j) {
      const double x = a[i * H + j], y = b[i * H + j];
      ab += x * y;
      aa += x * x;
      bb += y * y;
      e += (x - y) * (x - y);
    }
    r += aa;
    cs += ab / std::sqrt(aa * bb);
  }
  const auto L = h.finish();
  EXPECT_NEAR(L[0].mean_cosine, cs / n, 1e-12);
  EXPECT_NEAR(L[0].nmse, e / r, 1e-12);
}

// ------------------------------------------------------------------------------------------------
// llama.cpp KL-divergence base file.

// llama.cpp's row encoding, transcribed plainly from tools/perplexity/perplexity.cpp
// (log_softmax(n_vocab, logits, uint16_t* log_prob, tok) and nearest_int).
int llama_nearest_int(float fval) {
  volatile float val = fval + 12582912.f;
  float v = val;
  int i;
  std::memcpy(&i, &v, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}
std::vector<uint16_t> llama_encode_row(const float* logits, int n_vocab) {
  std::vector<uint16_t> out(2 * ((n_vocab + 1) / 2) + 4, 0);
  float max_logit = logits[0], min_logit = logits[0];
  for (int i = 1; i < n_vocab; ++i) {
    max_logit = std::max(max_logit, logits[i]);
    min_logit = std::min(min_logit, logits[i]);
  }
  min_logit = std::max(min_logit, max_logit - 16);
  double sum_exp = 0.0;
  for (int i = 0; i < n_vocab; ++i) sum_exp += expf(logits[i] - max_logit);
  const float log_sum_exp = log(sum_exp);
  const float min_log_prob = min_logit - max_logit - log_sum_exp;
  const float scale = (max_logit - min_logit) / 65535.f;
  std::memcpy(out.data(), &scale, 4);
  std::memcpy(out.data() + 2, &min_log_prob, 4);
  if (scale) {
    const float inv_scale = 1 / scale;
    for (int i = 0; i < n_vocab; ++i) {
      volatile float t = inv_scale * (logits[i] - min_logit);
      out[4 + i] = logits[i] > min_logit ? llama_nearest_int(t) : 0;
    }
  }
  return out;
}

TEST(KldFile, RowEncodingIsBitExactWithLlamaCpp) {
  for (int V : {1, 2, 7, 37, 1000}) {
    const auto l = scaled(random_normal(V, 80 + V), 6.0f);  // wide: exercises the 16-nat clamp
    std::vector<uint16_t> w(kld_row_words(V));
    kld_encode_row(l.data(), V, w.data());
    EXPECT_EQ(w, llama_encode_row(l.data(), V)) << "n_vocab " << V;
  }
  EXPECT_EQ(kld_row_words(32000), 32004);
  EXPECT_EQ(kld_row_words(32001), 32006);
  EXPECT_EQ(kld_rows_per_chunk(512), 255);
  EXPECT_EQ(kld_first_row(512), 256);
  EXPECT_EQ(kld_rows_per_chunk(3), 1);
}

TEST(KldFile, WriteReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("base.kld");
  const int64_t n_ctx = 16, V = 37, n_chunk = 3, rows = kld_rows_per_chunk(n_ctx);
  const auto logits = scaled(random_normal(n_chunk * n_ctx * V, 91), 5.0f);
  const auto tokens = random_tokens(n_chunk * n_ctx, V, 92);
  {
    KldBaseWriter w(path, n_ctx, V, tokens);
    EXPECT_EQ(w.n_chunk(), n_chunk);
    w.add_chunk(&logits[0], n_ctx);                                    // whole chunk
    w.add_chunk(&logits[1 * n_ctx * V], n_ctx);
    w.add_chunk(&logits[(2 * n_ctx + kld_first_row(n_ctx)) * V], rows);  // stored rows only
    EXPECT_FALSE(file_exists(path));  // not in place before finish()
    w.finish();
  }
  ASSERT_TRUE(file_exists(path));
  EXPECT_EQ(file_size(path), static_cast<uint64_t>(20 + 4 * n_ctx * n_chunk + n_chunk * rows * kld_row_words(V) * 2));
  const KldBaseFile f = KldBaseFile::open(path);
  EXPECT_EQ(f.n_ctx(), n_ctx);
  EXPECT_EQ(f.n_vocab(), V);
  EXPECT_EQ(f.n_chunk(), n_chunk);
  EXPECT_EQ(f.first_row(), 8);
  EXPECT_EQ(f.rows_per_chunk(), 7);
  EXPECT_EQ(f.tokens(), tokens);
  EXPECT_EQ(f.chunk_tokens(2)[5], tokens[2 * n_ctx + 5]);
  // Raw bytes equal llama.cpp's encoding.
  const std::string bytes = read_file(path);
  EXPECT_EQ(bytes.compare(0, 8, "_logits_"), 0);
  int64_t clamped = 0;
  for (int64_t c = 0; c < n_chunk; ++c) {
    const auto lp = f.log_probs(c);
    ASSERT_EQ(lp.size(), static_cast<size_t>(rows * V));
    for (int64_t r = 0; r < rows; ++r) {
      const float* l = &logits[(c * n_ctx + f.first_row() + r) * V];
      const auto words = llama_encode_row(l, static_cast<int>(V));
      ASSERT_EQ(std::memcmp(words.data(), f.row_words(c, r), words.size() * 2), 0);
      // Decoded log-probabilities vs float64 log-softmax within the quantization bound.
      double mx = l[0], mn = l[0], z = 0;
      for (int64_t j = 0; j < V; ++j) {
        mx = std::max(mx, static_cast<double>(l[j]));
        mn = std::min(mn, static_cast<double>(l[j]));
      }
      for (int64_t j = 0; j < V; ++j) z += std::exp(l[j] - mx);
      const double lo = std::max(mn, mx - 16), scale = (mx - lo) / 65535;
      float min_log_prob;
      std::memcpy(&min_log_prob, f.row_words(c, r) + 2, 4);
      for (int64_t j = 0; j < V; ++j) {
        const double truth = l[j] - mx - std::log(z);
        const double got = lp[r * V + j];
        if (l[j] > lo) {
          EXPECT_LE(std::abs(got - truth), scale / 2 + 2e-5) << c << " " << r << " " << j;
        } else {
          ++clamped;
          EXPECT_EQ(got, min_log_prob);
          EXPECT_LE(truth, got + 2e-5);
        }
      }
    }
  }
  EXPECT_GT(clamped, 0);  // the data reached the 16-nat clamp
  // Partial row ranges decode the same values.
  std::vector<float> part(2 * V);
  f.log_probs(1, 3, 2, part.data());
  const auto all1 = f.log_probs(1);
  EXPECT_TRUE(std::equal(part.begin(), part.end(), all1.begin() + 3 * V));
}

TEST(KldFile, ScoresLikeLogitsWithinQuantization) {
  TempDir dir;
  const std::string path = dir.file("b.kld");
  const int64_t n_ctx = 64, V = 200, n_chunk = 2;
  const auto base = scaled(random_normal(n_chunk * n_ctx * V, 101), 2.0f);
  auto cand = base;
  const auto noise = random_normal(cand.size(), 102);
  for (size_t k = 0; k < cand.size(); ++k) cand[k] += 0.5f * noise[k];
  const auto tokens = random_tokens(n_chunk * n_ctx, V, 103);
  KldBaseWriter w(path, n_ctx, V, tokens);
  for (int64_t c = 0; c < n_chunk; ++c) w.add_chunk(&base[c * n_ctx * V], n_ctx);
  w.finish();
  const KldBaseFile f = KldBaseFile::open(path);
  VerifyAccumulator from_file, from_logits;
  for (int64_t c = 0; c < n_chunk; ++c) {
    const auto lp = f.log_probs(c);
    from_file.add_chunk(VerifyAccumulator::BaseLogProbs{lp.data()}, &cand[c * n_ctx * V], f.chunk_tokens(c), n_ctx, V,
                        f.first_row());
    from_logits.add_chunk(&base[c * n_ctx * V], &cand[c * n_ctx * V], &tokens[c * n_ctx], n_ctx, V,
                          first_scored_row(ScoredPositions::kSecondHalf, n_ctx));
  }
  const VerifyStats a = from_file.finish(), b = from_logits.finish();
  EXPECT_EQ(a.n_tokens, b.n_tokens);
  EXPECT_EQ(a.n_tokens, n_chunk * (n_ctx - 1 - n_ctx / 2));
  EXPECT_NEAR(a.kld.value, b.kld.value, 1e-3 * b.kld.value + 1e-5);
  EXPECT_NEAR(a.ppl_base.value, b.ppl_base.value, 1e-3 * b.ppl_base.value);
  EXPECT_DOUBLE_EQ(a.ppl_q.value, b.ppl_q.value);
  EXPECT_NEAR(a.same_top.value, b.same_top.value, 0.02);
}

std::string error_of(const std::string& path) {
  try {
    KldBaseFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(KldFile, CorruptedFilesRaiseErrors) {
  TempDir dir;
  const std::string good = dir.file("good.kld");
  const int64_t n_ctx = 8, V = 11;
  const auto logits = scaled(random_normal(2 * n_ctx * V, 111), 3.0f);
  const auto tokens = random_tokens(2 * n_ctx, V, 112);
  {
    KldBaseWriter w(good, n_ctx, V, tokens);
    w.add_chunk(&logits[0], n_ctx);
    w.add_chunk(&logits[n_ctx * V], n_ctx);
    w.finish();
  }
  const std::string bytes = read_file(good);
  ASSERT_EQ(error_of(good), "");
  auto variant = [&](const std::string& name, std::string b) {
    const std::string p = dir.file(name);
    moetool::testing::write_bytes(p, b);
    const std::string e = error_of(p);
    EXPECT_NE(e, "") << name;
    EXPECT_NE(e.find(p), std::string::npos) << name << ": " << e;
    return e;
  };
  std::string b = bytes;
  b[0] = 'X';
  EXPECT_NE(variant("magic.kld", b).find("magic"), std::string::npos);
  EXPECT_NE(variant("short.kld", bytes.substr(0, bytes.size() - 1)).find("truncated"), std::string::npos);
  EXPECT_NE(variant("header.kld", bytes.substr(0, 14)).find("truncated"), std::string::npos);
  variant("magic-only.kld", "_logits_");
  variant("empty.kld", "");
  EXPECT_NE(variant("trailing.kld", bytes + "x").find("trailing"), std::string::npos);
  auto put32 = [](std::string s, size_t off, int32_t v) {
    char le[4];
    std::memcpy(le, &v, 4);
    s.replace(off, 4, le, 4);
    return s;
  };
  variant("vocab0.kld", put32(bytes, 12, 0));
  variant("vocab-neg.kld", put32(bytes, 12, -5));
  variant("vocab-big.kld", put32(bytes, 12, 100));  // sizes no longer add up
  variant("chunks.kld", put32(bytes, 16, 3));         // announces a chunk that is not there
  variant("chunks0.kld", put32(bytes, 16, 0));
  variant("ctx.kld", put32(bytes, 8, 2));
  variant("huge.kld", put32(put32(bytes, 8, 0x7fffffff), 16, 0x7fffffff));
  EXPECT_NE(variant("token.kld", put32(bytes, 20 + 4 * 3, static_cast<int32_t>(V))).find("token id"),
            std::string::npos);
  EXPECT_NE(error_of(dir.file("missing.kld")).find("missing.kld"), std::string::npos);
  // A row header with a NaN scale is caught when the chunk is decoded.
  std::string nan_scale = bytes;
  const float qnan = NAN;
  std::memcpy(nan_scale.data() + 20 + 4 * 2 * n_ctx, &qnan, 4);
  moetool::testing::write_bytes(dir.file("nan.kld"), nan_scale);
  const KldBaseFile f = KldBaseFile::open(dir.file("nan.kld"));
  EXPECT_THROW(f.log_probs(0), Error);
  EXPECT_NO_THROW(f.log_probs(1));
  EXPECT_THROW(f.chunk_tokens(2), Error);
}

TEST(KldFile, WriterChecksItsInput) {
  TempDir dir;
  const std::string path = dir.file("w.kld");
  const auto tokens = random_tokens(16, 10, 121);
  EXPECT_THROW(KldBaseWriter(path, 5, 10, tokens), Error);  // 16 tokens is not a multiple of 5
  EXPECT_THROW(KldBaseWriter(path, 2, 10, tokens), Error);  // n_ctx 2 has no scored row
  EXPECT_THROW(KldBaseWriter(path, 8, 5, tokens), Error);   // token ids ≥ 5
  const auto logits = scaled(random_normal(8 * 10, 122), 1.0f);
  {
    KldBaseWriter w(path, 8, 10, tokens);
    EXPECT_THROW(w.add_chunk(logits.data(), 5), Error);  // neither 8 nor 3 rows
    w.add_chunk(logits.data(), 8);
    EXPECT_THROW(w.finish(), Error);  // one chunk of two
  }
  EXPECT_FALSE(file_exists(path));
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    ADD_FAILURE() << "left behind: " << e.path();
}

}  // namespace
}  // namespace moetool
