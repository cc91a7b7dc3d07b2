// tests/bit_alloc_kld_test.cc — the end-to-end sensitivity of the bit allocation
// (compress/bit_alloc_kld.h) and the calibration-coverage guard (compress/expert_pool.h): the KLD
// against a float64 computation from logits, an allocation against a brute force over every width
// assignment of a small MoE, the pool's even sampling and its Hessians against direct sums.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <nlohmann/json.hpp>

#include "compress/bit_alloc.h"
#include "compress/bit_alloc_kld.h"
#include "compress/expert_pool.h"
#include "core/error.h"
#include "engine/engine.h"
#include "engine/overlay_weights.h"
#include "formats/ggml_quants.h"
#include "kernels/linear.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

std::vector<std::vector<int32_t>> chunks(int64_t vocab, int n, int64_t len, uint64_t seed) {
  std::vector<std::vector<int32_t>> c;
  for (int i = 0; i < n; ++i) c.push_back(testing::random_tokens(len, vocab, seed + static_cast<uint64_t>(i)));
  return c;
}

std::vector<QuantCandidate> widths(std::initializer_list<int> bits) {
  std::vector<QuantCandidate> out;
  for (int b : bits) {
    QuantCandidate c;
    c.spec = {b, 32, true};
    c.name = str("int", b);
    out.push_back(c);
  }
  return out;
}

// KLD of an engine against the float one, in float64 from both logit arrays.
double direct_kld(const Engine& ref, const Engine& q, const std::vector<std::vector<int32_t>>& cs) {
  double s = 0;
  int64_t n = 0;
  for (const auto& c : cs) {
    s += testing::mean_kld(ref.logits(c), q.logits(c), ref.config().vocab_size) * static_cast<double>(c.size());
    n += static_cast<int64_t>(c.size());
  }
  return s / static_cast<double>(n);
}

TEST(AllocKld, ReferenceKldMatchesAFloat64ComputationFromLogits) {
  testing::TempDir tmp;
  auto w = testing::synth_weights(tmp, "mixtral", 41);
  Engine eng(w);
  const auto cal = chunks(eng.config().vocab_size, 3, 48, 7);
  const KldReference ref(eng, cal, 1 << 20);
  EXPECT_EQ(ref.tokens(), 144);
  // The float model against itself: 0 up to the float rounding of the stored probabilities.
  EXPECT_LT(std::abs(ref.kld(eng)), 1e-6);
  AllocOptions ao;
  ao.candidates = widths({2, 4});
  auto units = measure_alloc_units(eng, cal, ao);
  AllocOverlay ov(w, units, ao.candidates);
  for (int k : {0, 1}) {
    std::vector<int> choice(units.size(), k);
    const auto q = ov.engine(choice);
    const double want = direct_kld(eng, *q, cal), got = ref.kld(*q);
    EXPECT_GT(want, 1e-4);
    EXPECT_NEAR(got, want, 1e-5 + 1e-4 * want) << "int" << (k ? 4 : 2);
  }
  // A change in the last layer only: the run from the kept stream of layer 2 gives the same KLD.
  std::vector<int> last(units.size(), -1);
  for (size_t i = 0; i < units.size(); ++i)
    if (units[i].layer == 2) last[i] = 0;
  const auto q2 = ov.engine(last);
  const double from0 = ref.kld(*q2, 0), from2 = ref.kld(*q2, 2);
  EXPECT_GT(from0, 1e-4);
  EXPECT_NEAR(from2, from0, 1e-9 + 1e-6 * from0);
  EXPECT_NEAR(from0, direct_kld(eng, *q2, cal), 1e-5 + 1e-4 * from0);
  // The token limit keeps whole chunks, at least one.
  EXPECT_EQ(KldReference(eng, cal, 60).tokens(), 48);
  EXPECT_EQ(KldReference(eng, cal, 1).tokens(), 48);
}

// Around an anchor (uniform int2 here), a unit's KLD is the whole model's with that unit alone
// changed — measured from the anchor's kept streams, so a later layer's unit starts there — and at
// the anchor's own candidate the anchor's KLD; afterwards the reference holds the float streams again.
TEST(AllocKld, AnchoredKldsAreTheModelsWithOneUnitChanged) {
  testing::TempDir tmp;
  auto w = testing::synth_weights(tmp, "mixtral", 42);
  Engine eng(w);
  const auto cal = chunks(eng.config().vocab_size, 3, 48, 17);
  KldReference ref(eng, cal, 1 << 20, /*max_bytes=*/1 << 20);
  AllocOptions ao;
  ao.candidates = widths({2, 4, 8});
  ao.all_weights = true;  // attention units measured too
  std::vector<AllocUnit> units = measure_alloc_units(eng, cal, ao);
  AllocOverlay ov(w, units, ao.candidates);
  const std::vector<int> anchor(units.size(), 0);
  const double at_anchor = direct_kld(eng, *ov.engine(anchor), cal);
  ASSERT_GT(at_anchor, 1e-3);
  measure_unit_kld(eng, ref, ao, units, anchor);
  int checked_late = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    EXPECT_NEAR(units[i].error[0], at_anchor, 1e-5 + 1e-4 * at_anchor) << units[i].name;
    if (i % 3 != 0) continue;  // a third of the units, every layer
    for (int k : {1, 2}) {
      std::vector<int> ch = anchor;
      ch[i] = k;
      const double want = direct_kld(eng, *ov.engine(ch), cal);
      EXPECT_NEAR(units[i].error[static_cast<size_t>(k)], want, 1e-5 + 1e-4 * want) << units[i].name << " int" << (k == 1 ? 4 : 8);
      EXPECT_NE(want, at_anchor);
      checked_late += units[i].layer == 2;
    }
  }
  EXPECT_GT(checked_late, 0);
  // Without the anchor cache (every pass rounds the anchor's matrices again, as dense round trips):
  // the same KLDs to float rounding (the cache multiplies the stored form in place).
  std::vector<AllocUnit> uncached = measure_alloc_units(eng, cal, ao);
  AllocOptions no_cache = ao;
  no_cache.anchor_cache_bytes = 0;
  measure_unit_kld(eng, ref, no_cache, uncached, anchor);
  for (size_t i = 0; i < units.size(); ++i)
    for (size_t k = 0; k < 3; ++k)
      EXPECT_NEAR(uncached[i].error[k], units[i].error[k], 1e-6 + 1e-5 * units[i].error[k]) << units[i].name << " " << k;
  // A unit raised from int2 lowers the anchor's KLD for most units (int8 is nearly float).
  int lower = 0;
  for (const auto& u : units) lower += u.error[2] < at_anchor;
  EXPECT_GT(lower, static_cast<int>(units.size()) / 2);
  // Float streams restored: a last-layer change measured from layer 2 equals the whole run.
  std::vector<int> last(units.size(), -1);
  for (size_t i = 0; i < units.size(); ++i)
    if (units[i].layer == 2) last[i] = 0;
  const auto q = ov.engine(last);
  EXPECT_NEAR(ref.kld(*q, 2), direct_kld(eng, *q, cal), 1e-5);
  EXPECT_LT(std::abs(ref.kld(eng, 1)), 1e-6);
  EXPECT_THROW(measure_unit_kld(eng, ref, ao, units, std::vector<int>(2, 0)), Error);
}

// Every assignment of int2 / int4 to the 12 routed experts of a tiny 3-layer, 4-expert Mixtral,
// measured end to end: the allocation at each budget fits it, is never worse than the best uniform
// width within the budget (on the calibration tokens, and on held-out tokens), and is the
// brute-force optimum (within 5 %).
// AllocOptions::encoded replaces a candidate's rounding wherever it has bytes: a unit's KLD at that
// candidate is the model's with exactly those decoded bytes in place (here: the ggml rounding of
// 0.9·W, which no rounding of W gives), alone and around an anchor (the anchor's stored form comes
// from the encoder too); units it has no bytes for keep the candidate's rounding.
TEST(AllocKld, EncodedCandidatesReplaceTheRounding) {
  testing::TempDir tmp;
  auto w = testing::synth_weights(tmp, "llama", 43);
  Engine eng(w);
  const auto cal = chunks(eng.config().vocab_size, 2, 48, 27);
  KldReference ref(eng, cal, 1 << 20);
  AllocOptions ao;
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q8_0}) {
    QuantCandidate c;
    c.ggml = true, c.type = t, c.name = ggml_type_name(t);
    ao.candidates.push_back(c);
  }
  ao.all_weights = true;
  ao.sensitivity = "kld";
  std::vector<AllocUnit> units = measure_alloc_units(eng, cal, ao);
  std::vector<AllocUnit> plain = units;
  measure_unit_kld(eng, ref, ao, plain);
  // Bytes for the layer-1 linears at Q4_0 only: the ggml rounding of 0.9·W.
  int calls = 0;
  const auto scaled = [&](Role r, int64_t l, int64_t e) {
    const auto W = w->matrix(r, l, e);
    std::vector<float> d(static_cast<size_t>(W->rows() * W->cols()));
    W->to_dense(d.data());
    for (float& x : d) x *= 0.9f;
    std::vector<uint8_t> b(static_cast<size_t>(W->rows()) * ggml_row_size(GGMLType::Q4_0, W->cols()));
    quantize_rows(GGMLType::Q4_0, d.data(), b.data(), W->rows(), W->cols());
    return b;
  };
  ao.encoded = [&](size_t k, Role r, int64_t l, int64_t e) -> std::optional<std::vector<uint8_t>> {
    if (k != 0 || l != 1) return std::nullopt;
#pragma omp atomic
    ++calls;
    return scaled(r, l, e);
  };
  std::vector<AllocUnit> enc = units;
  measure_unit_kld(eng, ref, ao, enc);
  EXPECT_GT(calls, 0);
  int checked = 0;
  for (size_t i = 0; i < enc.size(); ++i) {
    SCOPED_TRACE(enc[i].name);
    EXPECT_EQ(enc[i].error[1], plain[i].error[1]);  // Q8_0: no bytes, the same rounding
    if (enc[i].layer != 1) {
      EXPECT_EQ(enc[i].error[0], plain[i].error[0]);
      continue;
    }
    auto ov = std::make_shared<OverlayWeights>(w);
    for (Role r : enc[i].roles) {
      const auto W = w->matrix(r, 1, -1);
      const auto b = scaled(r, 1, -1);
      Tensor d = Tensor::zeros(DType::F32, {W->rows(), W->cols()});
      dequantize_rows(GGMLType::Q4_0, b.data(), d.as<float>(), W->rows(), W->cols());
      ov->set(r, 1, -1, make_dense_matrix(d, "want"));
    }
    const double want = direct_kld(eng, Engine(ov), cal);
    EXPECT_NEAR(enc[i].error[0], want, 1e-5 + 1e-4 * want);
    EXPECT_GT(std::fabs(enc[i].error[0] - plain[i].error[0]), 1e-4 * want);  // not the rounding of W
    ++checked;
  }
  EXPECT_EQ(checked, 7);
  // Around the uniform Q4_0 anchor: the anchor's layer-1 matrices come from the encoder as well.
  AllocOverlay ovl(w, units, ao.candidates, ao.encoded);
  const std::vector<int> anchor(units.size(), 0);
  const double at_anchor = direct_kld(eng, *ovl.engine(anchor), cal);
  std::vector<AllocUnit> around = units;
  measure_unit_kld(eng, ref, ao, around, anchor);
  for (const auto& u : around) EXPECT_NEAR(u.error[0], at_anchor, 1e-5 + 1e-4 * at_anchor) << u.name;
}

TEST(AllocKld, AllocationAgainstBruteForceOverWidthsOnASmallMoe) {
  testing::TempDir tmp;
  auto w = testing::synth_weights(tmp, "mixtral", 43);
  Engine eng(w);
  const int64_t V = eng.config().vocab_size;
  const auto cal = chunks(V, 2, 64, 11), held = chunks(V, 2, 64, 911);
  AllocOptions ao;
  ao.candidates = widths({2, 4});
  ao.sensitivity = "kld";
  KldReference ref(eng, cal, 1 << 20), ref_held(eng, held, 1 << 20);
  std::vector<AllocUnit> units = measure_alloc_units(eng, cal, ao);
  measure_unit_kld(eng, ref, ao, units);
  std::vector<size_t> routed;
  for (size_t i = 0; i < units.size(); ++i)
    if (units[i].routed) routed.push_back(i);
  ASSERT_EQ(routed.size(), 12u);
  for (size_t i : routed) EXPECT_GT(units[i].error[0], units[i].error[1]) << units[i].name;

  // Brute force: the matrices of every (unit, width) once, then all 2^12 assignments.
  AllocOverlay ov(w, units, ao.candidates);
  std::vector<std::vector<std::shared_ptr<OverlayWeights>>> mats(units.size());
  for (size_t i : routed)
    for (int k = 0; k < 2; ++k) {
      mats[i].push_back(std::make_shared<OverlayWeights>(w));
      ov.apply(i, k, *mats[i].back());
    }
  const size_t N = size_t{1} << routed.size();
  std::vector<double> kl(N), bits(N);
  double params = 0;
  for (size_t i : routed) params += static_cast<double>(units[i].params);
#pragma omp parallel for schedule(dynamic, 16)
  for (size_t m = 0; m < N; ++m) {
    auto o = std::make_shared<OverlayWeights>(w);
    double b = 0;
    for (size_t j = 0; j < routed.size(); ++j) {
      const size_t i = routed[j], k = (m >> j) & 1;
      const AllocUnit& u = units[i];
      for (Role r : u.roles) o->set(r, u.layer, u.expert, mats[i][k]->matrix(r, u.layer, u.expert));
      b += 8.0 * static_cast<double>(u.bytes[k]);
    }
    bits[m] = b / params;
    kl[m] = ref.kld(Engine(o));
  }
  const double lo = bits[0], hi = bits[N - 1];  // all int2, all int4
  auto mask = [&](const Allocation& a) {
    size_t m = 0;
    for (size_t j = 0; j < routed.size(); ++j) m |= static_cast<size_t>(a.choice[routed[j]] == 1) << j;
    return m;
  };
  for (double f : {0.25, 0.5, 0.75}) {
    ao.bpw = lo + f * (hi - lo);
    SCOPED_TRACE(str("budget ", ao.bpw, " bpw"));
    double best = INFINITY;
    for (size_t m = 0; m < N; ++m)
      if (bits[m] <= ao.bpw + 1e-9) best = std::min(best, kl[m]);
    Allocation a = solve_allocation(units, ao);
    // The second solution, measured around the uniform width nearest the budget: within the budget,
    // below uniform int2, and within 5 % of the optimum at the budget a quarter below its anchor int4
    // (measured: the optimum itself there). Around int2 it is linearised far from where it lands:
    // 1.054× the optimum a quarter of the way up, 1.42× halfway — the check keeps the float solution.
    const auto anchor = anchor_allocation(a, ao);
    ASSERT_TRUE(anchor.has_value());
    std::vector<AllocUnit> around = measure_alloc_units(eng, cal, ao);
    measure_unit_kld(eng, ref, ao, around, anchor->choice);
    const Allocation b = solve_allocation(around, ao);
    EXPECT_LE(b.bpw_scope, ao.bpw + 1e-9);
    const size_t mb = mask(b);
    EXPECT_LE(bits[mb], ao.bpw + 1e-9);
    EXPECT_LT(kl[mb], kl[0]);
    if (f == 0.75) EXPECT_LE(kl[mb], 1.05 * best);
    check_allocation(eng, ref, ao, a, {{"around", b}});
    EXPECT_LE(a.bpw_scope, ao.bpw + 1e-9);
    // The check's trials quantize attention too (at or above the routed average); the brute force
    // keeps it float: compare the experts' assignment through the brute-force table.
    ASSERT_GE(a.trials.size(), 2u);  // the allocation, the one around the anchor unless the same, uniform int2
    EXPECT_EQ(a.trials.back().name, "uniform int2");
    EXPECT_LT(a.trials[0].kld, a.trials.back().kld);
    EXPECT_NE(a.used, "uniform int2");
    const size_t m = mask(a);
    EXPECT_LE(bits[m], ao.bpw + 1e-9);
    EXPECT_LT(kl[m], kl[0]);  // the knapsack alone beats the only uniform width that fits
    std::printf("budget %.3f: allocation %.5f (used: %s; around %s: %.5f), brute-force optimum %.5f, uniform int2 %.5f\n",
                ao.bpw, kl[m], a.used.c_str(), anchor->used.c_str(), kl[mb], best, kl[0]);
    // Measured: the knapsack over additive per-unit KLDs finds the optimum itself at all three
    // budgets here; 5 % leaves room for a near-tie between two assignments.
    EXPECT_LE(kl[m], 1.05 * best);
    // Held-out tokens: still below uniform int2.
    std::vector<int> ch = a.choice;
    const double held_alloc = ref_held.kld(*ov.engine(ch));
    for (size_t i : routed) ch[i] = 0;
    EXPECT_LT(held_alloc, ref_held.kld(*ov.engine(ch)));
  }
}

TEST(AllocKld, CheckKeepsAUniformWidthThatMeasuresBetter) {
  testing::TempDir tmp;
  auto w = testing::synth_weights(tmp, "mixtral", 47);
  Engine eng(w);
  const auto cal = chunks(eng.config().vocab_size, 2, 64, 13);
  AllocOptions ao;
  ao.candidates = widths({2, 4, 8});
  ao.sensitivity = "kld";
  KldReference ref(eng, cal, 1 << 20);
  std::vector<AllocUnit> units = measure_alloc_units(eng, cal, ao);
  measure_unit_kld(eng, ref, ao, units);
  // Costs that invert the measured ones make the knapsack pick the worst assignment it can afford.
  for (auto& u : units)
    for (auto& e : u.error) e = 1.0 / (1e-9 + e);
  ao.bpw = 5.5;  // room for uniform int4, not int8
  Allocation a = solve_allocation(units, ao);
  check_allocation(eng, ref, ao, a);
  ASSERT_GE(a.trials.size(), 2u);
  EXPECT_EQ(a.used, "uniform int4");
  double best = INFINITY;
  for (const auto& t : a.trials) best = std::min(best, t.kld);
  for (const auto& t : a.trials)
    if (t.name == "uniform int4") EXPECT_EQ(t.kld, best);
  EXPECT_LE(a.bpw_scope, ao.bpw + 1e-9);
  for (size_t i = 0; i < a.units.size(); ++i)
    if (a.units[i].routed) EXPECT_EQ(a.choice[i], 1) << a.units[i].name;
  ASSERT_FALSE(a.notes.empty());
  EXPECT_NE(a.notes.back().find("uniform int4"), std::string::npos) << a.notes.back();
}

// The command: --bpw measures KLDs by default and reports the check's trials; --sensitivity output
// and --no-alloc-check restore the previous behaviour.
TEST(AllocKld, CommandLineReportsTheCheck) {
  testing::TempDir tmp;
  const std::string src = testing::synth_in(tmp, "m", "mixtral", 53, "tiny");
  const std::string text = testing::seeded_text(tmp, 3, 600);
  auto r = testing::run_moetool({"quantize", src, "-o", tmp.file("q"), "--format", "gptq", "--bpw", "4.5", "--bpw-all",
                                 "--group-size", "32", "--calib-text", text, "--ctx", "64", "--dry-run", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out)["allocation"];
  EXPECT_EQ(j["sensitivity"], "kld");
  ASSERT_GE(j["trials"].size(), 2u);
  EXPECT_EQ(j["trials"][0]["name"], "allocation");
  double best = INFINITY;
  for (const auto& t : j["trials"]) {
    EXPECT_LE(t["bpw_scope"].get<double>(), 4.5 + 1e-9);
    best = std::min(best, t["calib_kld"].get<double>());
  }
  for (const auto& t : j["trials"])
    if (t["name"] == j["used"]) EXPECT_EQ(t["calib_kld"].get<double>(), best);
  for (const auto& u : j["units"])
    for (const auto& [name, e] : u["error_by_candidate"].items()) EXPECT_GE(e.get<double>(), 0) << name;
  // The second solution, measured around the uniform width nearest 4.5 bpw (int3 g32 at 4.13; int4
  // g32 is 5.13), is a trial.
  bool around = false;
  for (const auto& t : j["trials"]) around = around || t["name"] == "allocation around uniform int3";
  EXPECT_TRUE(around) << j["trials"].dump();
  for (const auto& [args, what] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--kld-anchor", "median"}, "--kld-anchor median: expected float or both"},
           {{"--kld-anchor", "float", "--sensitivity", "output"}, "--kld-anchor applies to --sensitivity kld"}}) {
    std::vector<std::string> a = {"quantize", src, "-o", tmp.file("bad"), "--format", "gptq", "--bpw", "4.5",
                                  "--calib-text", text, "--ctx", "64", "--dry-run"};
    a.insert(a.end(), args.begin(), args.end());
    const auto b = testing::run_moetool(a);
    EXPECT_EQ(b.exit_code, 2);
    EXPECT_NE(b.err.find(what), std::string::npos) << b.err;
  }
  r = testing::run_moetool({"quantize", src, "-o", tmp.file("q"), "--format", "gptq", "--bpw", "4.5", "--bpw-all",
                            "--group-size", "32", "--calib-text", text, "--ctx", "64", "--dry-run", "--json", "-q",
                            "--kld-anchor", "float"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const auto& t : nlohmann::json::parse(r.out)["allocation"]["trials"])
    EXPECT_EQ(t["name"].get<std::string>().find("around"), std::string::npos);
  r = testing::run_moetool({"quantize", src, "-o", tmp.file("q"), "--format", "gptq", "--bpw", "4.5", "--group-size",
                            "32", "--calib-text", text, "--ctx", "64", "--dry-run", "--json", "-q", "--sensitivity",
                            "output", "--no-alloc-check"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out)["allocation"];
  EXPECT_EQ(j["sensitivity"], "output");
  EXPECT_TRUE(j["trials"].empty());
  EXPECT_EQ(j["used"], "allocation");
}

TEST(ExpertPool, KeepsAnEvenlySpacedSampleOfEveryRow) {
  ExpertPool p(64);
  std::mt19937_64 g(5);
  int64_t next = 0;
  while (next < 1000) {  // rows whose one column is their index, in chunks of random sizes
    const int64_t n = 1 + static_cast<int64_t>(g() % 37);
    std::vector<float> X;
    for (int64_t i = 0; i < n; ++i) X.push_back(static_cast<float>(next++));
    p.add(X.data(), n, 1);
  }
  ASSERT_GE(p.rows(), 32);
  ASSERT_LE(p.rows(), 64);
  const int64_t stride = static_cast<int64_t>(p.data()[1] - p.data()[0]);
  EXPECT_EQ(stride, 16);  // 1000 rows into 64: halved four times
  for (int64_t r = 0; r < p.rows(); ++r) EXPECT_EQ(p.data()[static_cast<size_t>(r)], static_cast<float>(r * stride));
  EXPECT_GT(p.data().back(), 1000 - 2 * stride);  // reaches the end of the set
  EXPECT_EQ(p.prob(3, 0), 1.0f);  // no logits: every probability 1
  EXPECT_THROW(p.add(std::vector<float>(2).data(), 1, 2), Error);
}

TEST(ExpertPool, HessiansOfTheExpertOnThePooledRows) {
  testing::TempDir tmp;
  auto w = testing::synth_weights(tmp, "mixtral", 49);
  const int64_t H = w->config().hidden_size;
  std::mt19937_64 g(9);
  std::normal_distribution<float> nd;
  ExpertPool p;
  const int64_t E = 4;
  std::vector<float> X(static_cast<size_t>(40 * H)), Z(static_cast<size_t>(40 * E)), P(Z.size());
  for (auto& x : X) x = nd(g);
  for (auto& z : Z) z = 2 * nd(g);
  for (int64_t t = 0; t < 40; ++t) {  // softmax in double
    double s = 0;
    for (int64_t e = 0; e < E; ++e) s += std::exp(static_cast<double>(Z[static_cast<size_t>(t * E + e)]));
    for (int64_t e = 0; e < E; ++e)
      P[static_cast<size_t>(t * E + e)] = static_cast<float>(std::exp(static_cast<double>(Z[static_cast<size_t>(t * E + e)])) / s);
  }
  p.add(X.data(), 25, H, Z.data(), E);
  p.add(X.data() + 25 * H, 15, H, Z.data() + 25 * E, E);
  const auto Hg = pooled_hessian(p, *w, Role::ExpertGate, 1, 2);
  const auto Hd = pooled_hessian(p, *w, Role::ExpertDown, 1, 2);
  // Direct sums in double.
  const auto gm = w->matrix(Role::ExpertGate, 1, 2), um = w->matrix(Role::ExpertUp, 1, 2);
  const int64_t I = gm->rows();
  std::vector<float> Wg(static_cast<size_t>(I * H)), Wu(Wg.size());
  gm->to_dense(Wg.data());
  um->to_dense(Wu.data());
  std::vector<double> A(static_cast<size_t>(40 * I));
  for (int64_t t = 0; t < 40; ++t)
    for (int64_t i = 0; i < I; ++i) {
      double a = 0, b = 0;
      for (int64_t h = 0; h < H; ++h) {
        a += static_cast<double>(Wg[static_cast<size_t>(i * H + h)]) * X[static_cast<size_t>(t * H + h)];
        b += static_cast<double>(Wu[static_cast<size_t>(i * H + h)]) * X[static_cast<size_t>(t * H + h)];
      }
      A[static_cast<size_t>(t * I + i)] = a / (1 + std::exp(-a)) * b;
    }
  double eg = 0, ed = 0, ng = 0, n_d = 0;
  for (int64_t i = 0; i < H; ++i)
    for (int64_t j = 0; j < H; ++j) {
      double s = 0;
      for (int64_t t = 0; t < 40; ++t)
        s += static_cast<double>(P[static_cast<size_t>(t * E + 2)]) * X[static_cast<size_t>(t * H + i)] * X[static_cast<size_t>(t * H + j)];
      eg = std::max(eg, std::abs(s - Hg[static_cast<size_t>(i * H + j)]));
      ng = std::max(ng, std::abs(s));
    }
  for (int64_t i = 0; i < I; ++i)
    for (int64_t j = 0; j < I; ++j) {
      double s = 0;
      for (int64_t t = 0; t < 40; ++t)
        s += static_cast<double>(P[static_cast<size_t>(t * E + 2)]) * A[static_cast<size_t>(t * I + i)] * A[static_cast<size_t>(t * I + j)];
      ed = std::max(ed, std::abs(s - Hd[static_cast<size_t>(i * I + j)]));
      n_d = std::max(n_d, std::abs(s));
    }
  // The rows weighted by the router's float32 probability of expert 2: relative 1e-6.
  EXPECT_LT(eg, 1e-6 * ng);
  // The activations are computed in float32 by the engine's matmul: relative 1e-5.
  EXPECT_NEAR(p.prob(7, 2), P[7 * E + 2], 1e-6);
  EXPECT_LT(ed, 1e-5 * n_d);
  EXPECT_GT(n_d, 0);
}

}  // namespace
}  // namespace moetool
