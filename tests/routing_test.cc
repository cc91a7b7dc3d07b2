// tests/routing_test.cc — routing fidelity of `moetool verify` (verify/routing.h): a hand-worked
// small case of the metrics; a model against itself and against an exact f32 GGUF conversion (sets
// identical, router KL 0); a perturbed expert checked against an independent computation from both
// engines' router outputs; the expert mapping through prune and merge provenance; "no mapping" when
// the candidate has fewer experts and no provenance, where --max-route-mismatch cannot pass.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "compress/merge.h"
#include "core/fs.h"
#include "compress/prune.h"
#include "compress/quantize_job.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/model.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"
#include "verify/report.h"
#include "verify/routing.h"
#include "verify/verify_job.h"

namespace moetool {
namespace {

using testing::TempDir;

// Hand-worked: E = 4 base experts, a pruned candidate keeping {0, 2, 3} (slots 0, 1, 2), top-2,
// two tokens.
TEST(RoutingComparison, MatchesAHandComputation) {
  ExpertMapping m;
  m.source = "moetool.prune.kept_experts";
  m.layers[0] = {{0}, {2}, {3}};
  RoutingComparison cmp(m);
  const float bz[] = {1, 0, 0, 0,   0, 2, 1, 0};  // base logits, two tokens
  const int32_t bs[] = {0, 1,   1, 2};            // token 0 chose {0, 1}; token 1 {1, 2}
  const float cz[] = {1, 0, 0,   0, 1, 0};        // candidate logits over slots {0, 2, 3}
  const int32_t cs[] = {0, 1,   1, 0};            // token 0 {slot 0, 1} = base {0, 2}; token 1 {slot 1, 0}
  cmp.add(0, bz, bs, 4, 2, cz, cs, 3, 2, 2);
  const RoutingFidelity f = cmp.finish();
  ASSERT_EQ(f.layers.size(), 1u);
  const LayerRouting& l = f.layers[0];
  EXPECT_EQ(l.mapping, "prune");
  // φ(S_b): token 0 {0} (expert 1 dropped), token 1 {slot 1}; S_c: {0, 1}, {0, 1}.
  // same set: neither; Jaccard: 1/2 and 1/2.
  EXPECT_DOUBLE_EQ(l.same_set, 0.0);
  EXPECT_DOUBLE_EQ(l.jaccard, 0.5);
  EXPECT_DOUBLE_EQ(f.mismatch, 1.0);
  // Router KL, token 0: p_b = softmax(1,0,0,0); carried to slots {0,2,3}: (e, 1, 1)/(e+2);
  // p_c = softmax(1,0,0) = the same: KL 0. Token 1: p_b ∝ (1, e², e, 1) → slots (1, e, 1)/(e+2);
  // p_c = softmax(0,1,0) = (1, e, 1)/(e+2): KL 0 too.
  EXPECT_NEAR(l.router_kl, 0.0, 1e-15);
  // Loads: base slots 0:1, 1:2, 2:1 of 4 → 0.25, 0.5, 0.25; dropped expert 1 carries 0.5.
  EXPECT_DOUBLE_EQ(l.base_load[1], 0.5);
  EXPECT_DOUBLE_EQ(l.dropped_share, 0.5);
  EXPECT_DOUBLE_EQ(l.base_load_mapped[0], 0.25);
  EXPECT_DOUBLE_EQ(l.base_load_mapped[1], 0.25);
  EXPECT_DOUBLE_EQ(l.base_load_mapped[2], 0.0);
  EXPECT_DOUBLE_EQ(l.cand_load[0], 0.5);
  EXPECT_DOUBLE_EQ(l.cand_load[1], 0.5);

  // A candidate whose router moved: token 0 logits (0, 1, 0) over the same slots.
  RoutingComparison c2(m);
  const float cz2[] = {0, 1, 0,   0, 1, 0};
  c2.add(0, bz, bs, 4, 2, cz2, cs, 3, 2, 2);
  const double e = std::exp(1.0);
  const double q0 = e / (e + 2), q1 = 1 / (e + 2), pc0 = 1 / (e + 2), pc1 = e / (e + 2);
  const double kl0 = q0 * std::log(q0 / pc0) + q1 * std::log(q1 / pc1) + q1 * std::log(q1 / pc0);
  EXPECT_NEAR(c2.finish().layers[0].router_kl, kl0 / 2, 1e-14);
}

TEST(RoutingComparison, MappingThatDoesNotFitIsReportedNotGuessed) {
  ExpertMapping m;
  m.source = "moetool.merge.groups";
  m.layers[0] = {{0, 1}, {1, 2}};  // expert 1 in two groups
  RoutingComparison cmp(m);
  const float z[] = {0, 0, 0, 0};
  const int32_t s[] = {0, 1};
  cmp.add(0, z, s, 4, 2, z, s, 2, 2, 1);
  cmp.add(1, z, s, 4, 2, z, s, 2, 2, 1);  // no entry for layer 1 and 4 ≠ 2 experts
  const RoutingFidelity f = cmp.finish();
  EXPECT_FALSE(f.layers[0].mapped());
  EXPECT_NE(f.layers[0].note.find("base expert 1 in two slots"), std::string::npos) << f.layers[0].note;
  EXPECT_FALSE(f.layers[1].mapped());
  EXPECT_NE(f.layers[1].note.find("no entry for this layer"), std::string::npos) << f.layers[1].note;
  EXPECT_TRUE(std::isnan(f.mismatch));
  EXPECT_TRUE(std::isnan(f.layers[0].same_set));
}

TEST(RoutingComparison, BadProvenanceIsAnErrorNamingTheModel) {
  const std::string e = testing::error_of([] {
    expert_mapping_from_metadata({{"moetool.prune.kept_experts", "{\"0\": [0, \"x\"]}"}}, "cand/");
  });
  EXPECT_NE(e.find("cand/"), std::string::npos) << e;
  EXPECT_NE(e.find("moetool.prune.kept_experts"), std::string::npos) << e;
}

struct Fixture {
  TempDir d;
  std::string base = testing::synth_in(d, "base", "mixtral", 7);
  std::string text = testing::seeded_text(d, 5, 700);
  verify::Options opts(const std::string& cand) const {
    verify::Options o;
    o.base = base;
    o.candidate = cand;
    o.text = text;
    o.ctx = 64;
    o.chunks = 4;
    return o;
  }
};

void expect_faithful(const RoutingFidelity& f, const std::string& mapping) {
  ASSERT_FALSE(f.empty());
  for (const LayerRouting& l : f.layers) {
    EXPECT_EQ(l.mapping, mapping) << "layer " << l.layer;
    EXPECT_EQ(l.same_set, 1.0) << "layer " << l.layer;
    EXPECT_EQ(l.jaccard, 1.0) << "layer " << l.layer;
    // Identical router logits give exactly 0; logits that differ by rounding δ (~1e-6 relative, a
    // different summation order) give KL ≈ δ²/2 per term, ~1e-12: 1e-10 bounds it.
    EXPECT_NEAR(l.router_kl, 0.0, 1e-10) << "layer " << l.layer;
    EXPECT_EQ(l.dropped_share, 0.0);
    for (size_t j = 0; j < l.cand_load.size(); ++j) EXPECT_NEAR(l.cand_load[j], l.base_load_mapped[j], 1e-15);
  }
  EXPECT_EQ(f.mismatch, 0.0);
}

TEST(RoutingFidelity, ModelAgainstItselfAndAnExactConversion) {
  Fixture fx;
  const verify::Result self = verify::run(fx.opts(fx.base));
  expect_faithful(self.report.routing, "identity");
  EXPECT_EQ(self.report.routing.layers.size(), 4u);  // every layer of the small Mixtral routes
  EXPECT_EQ(self.report.routing.layers[0].tokens, 4 * 64);
  EXPECT_EQ(self.report.stats.route_mismatch, 0.0);

  quantize::Options q;
  q.model = fx.base;
  q.output = fx.d.file("f32.gguf");
  q.type = "f32";
  quantize::run(q);
  auto o = fx.opts(q.output);
  o.thresholds.max_route_mismatch = 0.0;
  const verify::Result conv = verify::run(o);
  expect_faithful(conv.report.routing, "identity");
  EXPECT_TRUE(conv.missed.empty());
  EXPECT_EQ(verdict_name(conv.report), "pass");
}

// Rewrites the f32 tensor `name` of a single-file checkpoint in place: t += scale · N(0, 1).
void perturb_tensor(const std::string& dir, const std::string& name, double scale, uint64_t seed) {
  const std::string path = dir + "/model.safetensors";
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t hlen = 0;
  f.read(reinterpret_cast<char*>(&hlen), 8);
  std::string h(hlen, '\0');
  f.read(h.data(), static_cast<std::streamsize>(hlen));
  const auto j = nlohmann::json::parse(h).at(name);
  ASSERT_EQ(j.at("dtype"), "F32");
  const auto off = j.at("data_offsets").get<std::vector<uint64_t>>();
  const size_t n = (off[1] - off[0]) / 4;
  std::vector<float> v(n);
  f.seekg(static_cast<std::streamoff>(8 + hlen + off[0]));
  f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(n * 4));
  const std::vector<float> noise = testing::random_normal(n, seed);
  for (size_t i = 0; i < n; ++i) v[i] += static_cast<float>(scale) * noise[i];
  f.seekp(static_cast<std::streamoff>(8 + hlen + off[0]));
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(n * 4));
}

// Router logits and choices of every layer, every chunk, as the engine reports them.
struct RouterLog final : LayerObserver {
  struct Call {
    int64_t layer, n, E, k;
    std::vector<float> z;
    std::vector<int32_t> sel;
  };
  std::vector<Call> calls;
  unsigned needs() const override { return kObserveRouter; }
  void on_router(int64_t l, const float* z, const int32_t* sel, const float*, int64_t n, int64_t E,
                 int64_t k) override {
    calls.push_back({l, n, E, k, std::vector<float>(z, z + n * E), std::vector<int32_t>(sel, sel + n * k)});
  }
};

// One expert perturbed on disk (layer 0's expert 3): the report's numbers equal a direct computation
// from both models' router outputs on the same chunks (identity mapping).
TEST(RoutingFidelity, PerturbedExpertMatchesADirectComputation) {
  Fixture fx;
  const std::string cand = fx.d.file("cand");
  std::filesystem::copy(fx.base, cand);
  perturb_tensor(cand, "model.layers.0.block_sparse_moe.experts.3.w2.weight", 0.5, 11);
  const verify::Result r = verify::run(fx.opts(cand));

  const Engine eb(open_weights(fx.base)), ec(open_weights(cand));
  auto tok = load_tokenizer(fx.base);
  const auto chunks = make_chunks(*tok, read_file(fx.text), 64, 4, true, fx.text);
  RouterLog lb, lc;
  for (const auto& c : chunks) {
    eb.logits(c, &lb);
    ec.logits(c, &lc);
  }
  ASSERT_EQ(lb.calls.size(), lc.calls.size());
  std::map<int64_t, double> same, jac, kl, tokens;
  for (size_t i = 0; i < lb.calls.size(); ++i) {
    const auto& b = lb.calls[i];
    const auto& c = lc.calls[i];
    for (int64_t t = 0; t < b.n; ++t) {
      std::set<int32_t> sb(b.sel.begin() + t * b.k, b.sel.begin() + (t + 1) * b.k);
      std::set<int32_t> sc(c.sel.begin() + t * c.k, c.sel.begin() + (t + 1) * c.k);
      std::set<int32_t> un = sb, in;
      un.insert(sc.begin(), sc.end());
      for (int32_t e : sb) if (sc.count(e)) in.insert(e);
      same[b.layer] += sb == sc;
      jac[b.layer] += static_cast<double>(in.size()) / static_cast<double>(un.size());
      double zb = 0, zc = 0, k = 0;
      for (int64_t e = 0; e < b.E; ++e) zb += std::exp(b.z[t * b.E + e]), zc += std::exp(c.z[t * c.E + e]);
      for (int64_t e = 0; e < b.E; ++e) {
        const double p = std::exp(b.z[t * b.E + e]) / zb, q = std::exp(c.z[t * c.E + e]) / zc;
        k += p * std::log(p / q);
      }
      kl[b.layer] += k;
      tokens[b.layer] += 1;
    }
  }
  double all_same = 0, all_tokens = 0;
  ASSERT_EQ(r.report.routing.layers.size(), tokens.size());
  for (const LayerRouting& l : r.report.routing.layers) {
    const double n = tokens[l.layer];
    EXPECT_EQ(l.tokens, static_cast<int64_t>(n));
    EXPECT_DOUBLE_EQ(l.same_set, same[l.layer] / n) << l.layer;
    EXPECT_NEAR(l.jaccard, jac[l.layer] / n, 1e-12) << l.layer;
    // Both in double from the same float logits; the production code shifts by the row maximum and sums
    // in another order (~1e-15 relative per term): 1e-6 relative plus 1e-9 absolute is ample.
    EXPECT_NEAR(l.router_kl, kl[l.layer] / n, 1e-9 + 1e-6 * kl[l.layer] / n) << l.layer;
    all_same += same[l.layer];
    all_tokens += n;
  }
  EXPECT_EQ(r.report.routing.layers[0].same_set, 1.0) << "layer 0's router sees the same input";
  EXPECT_LT(r.report.routing.layers[1].same_set, 1.0) << "expert 3's new output moves layer 1's choices";
  EXPECT_GT(r.report.routing.layers[1].router_kl, 1e-4);
  EXPECT_NEAR(r.report.stats.route_mismatch, 1.0 - all_same / all_tokens, 1e-15);

  auto o = fx.opts(cand);
  o.thresholds.max_route_mismatch = 0.0;
  const verify::Result gated = verify::run(o);
  ASSERT_EQ(gated.missed.size(), 1u);
  EXPECT_NE(gated.missed[0].find("route mismatch"), std::string::npos) << gated.missed[0];
  EXPECT_EQ(verdict_name(gated.report), "fail");
}

// Prune: the mapping is the kept ids. The first MoE layer sees the base's residual stream, so its
// candidate router logits are the base's restricted to the kept experts: router KL 0, and a token
// keeps its expert set exactly when the base chose no dropped expert.
TEST(RoutingFidelity, MapsThroughPruneProvenance) {
  Fixture fx;
  prune::Options p;
  p.model = fx.base;
  p.output = fx.d.file("pruned");
  p.keep = 5;
  p.method = "frequency";
  p.ctx = 64;
  p.calib_texts = {testing::seeded_text(fx.d, 99, 600)};  // not the evaluation text
  const prune::Result pr = prune::run(p);
  const verify::Result r = verify::run(fx.opts(p.output));
  const RoutingFidelity& f = r.report.routing;
  EXPECT_EQ(f.mapping_source, "moetool.prune.kept_experts");
  ASSERT_EQ(f.layers.size(), pr.layers.size());
  const LayerRouting& l0 = f.layers[0];
  EXPECT_EQ(l0.mapping, "prune");
  EXPECT_EQ(l0.cand_experts, 5);
  EXPECT_NEAR(l0.router_kl, 0.0, 1e-9);
  for (const LayerRouting& l : f.layers) {
    double dropped = 0, mapped = 0;
    for (int64_t e = 0; e < l.base_experts; ++e) {
      const auto& keep = pr.layers[static_cast<size_t>(&l - &f.layers[0])].keep;
      if (std::find(keep.begin(), keep.end(), e) == keep.end()) dropped += l.base_load[static_cast<size_t>(e)];
    }
    for (double x : l.base_load_mapped) mapped += x;
    EXPECT_NEAR(l.dropped_share, dropped, 1e-12);
    EXPECT_NEAR(mapped + l.dropped_share, 1.0, 1e-12);
  }
  // Layer 0 directly from the base's choices: tokens whose top-2 avoided the dropped experts.
  const Engine eb(open_weights(fx.base));
  auto tok = load_tokenizer(fx.base);
  RouterLog lb;
  for (const auto& c : make_chunks(*tok, read_file(fx.text), 64, 4, true, fx.text)) eb.logits(c, &lb);
  double kept_all = 0, n = 0;
  const auto& keep0 = pr.layers[0].keep;
  for (const auto& c : lb.calls) {
    if (c.layer != l0.layer) continue;
    for (int64_t t = 0; t < c.n; ++t, ++n) {
      bool ok = true;
      for (int64_t i = 0; i < c.k; ++i)
        ok = ok && std::find(keep0.begin(), keep0.end(), c.sel[t * c.k + i]) != keep0.end();
      kept_all += ok;
    }
  }
  EXPECT_DOUBLE_EQ(l0.same_set, kept_all / n);
}

TEST(RoutingFidelity, MapsThroughMergeGroupsAndSaysWhenNoMappingExists) {
  Fixture fx;
  merge::Options m;
  m.model = fx.base;
  m.output = fx.d.file("merged");
  m.experts = 4;
  m.ctx = 64;
  m.calib_texts = {testing::seeded_text(fx.d, 98, 600)};
  const merge::Result mr = merge::run(m);
  const verify::Result r = verify::run(fx.opts(m.output));
  EXPECT_EQ(r.report.routing.mapping_source, "moetool.merge.groups");
  for (const LayerRouting& l : r.report.routing.layers) {
    EXPECT_EQ(l.mapping, "merge");
    EXPECT_EQ(l.cand_experts, 4);
    EXPECT_EQ(l.dropped_share, 0.0);  // every base expert is in a group
    // The base load of candidate expert j is the load of group j's members.
    const auto& groups = mr.layers[static_cast<size_t>(&l - &r.report.routing.layers[0])].groups;
    for (size_t j = 0; j < groups.size(); ++j) {
      double want = 0;
      for (int64_t e : groups[j].members) want += l.base_load[static_cast<size_t>(e)];
      EXPECT_NEAR(l.base_load_mapped[j], want, 1e-12);
    }
  }
  EXPECT_FALSE(std::isnan(r.report.stats.route_mismatch));

  // The merged model as GGUF carries no provenance: fewer experts, no mapping, the gate cannot pass.
  quantize::Options q;
  q.model = m.output;
  q.output = fx.d.file("merged.gguf");
  q.type = "f32";
  quantize::run(q);
  auto o = fx.opts(q.output);
  o.thresholds.max_route_mismatch = 0.5;
  const verify::Result g = verify::run(o);
  for (const LayerRouting& l : g.report.routing.layers) {
    EXPECT_FALSE(l.mapped());
    EXPECT_NE(l.note.find("no expert mapping"), std::string::npos) << l.note;
    EXPECT_EQ(l.cand_load.size(), 4u);  // loads are still reported
  }
  EXPECT_TRUE(std::isnan(g.report.stats.route_mismatch));
  ASSERT_EQ(g.missed.size(), 1u);
  EXPECT_NE(g.missed[0].find("route mismatch is undefined"), std::string::npos) << g.missed[0];
  const auto j = to_json(g.report);
  EXPECT_TRUE(j["routing"]["layers"][0]["mapping"].is_null());
  EXPECT_NE(to_html(g.report).find("no expert mapping"), std::string::npos);
}

// The command line: no thresholds is "unchecked" with exit 0; the routing gate's option is checked.
TEST(RoutingFidelity, CliUncheckedAndRouteGate) {
  Fixture fx;
  const std::vector<std::string> base = {"verify", fx.base, fx.base, "--text", fx.text, "--ctx", "64", "--chunks", "2", "-q"};
  auto r = testing::run_moetool(base);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Verdict: UNCHECKED"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("====== Routing fidelity ======"), std::string::npos) << r.out;
  auto args = base;
  args.insert(args.end(), {"--max-route-mismatch", "0"});
  r = testing::run_moetool(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("Verdict: PASS"), std::string::npos) << r.out;
  args.back() = "1.5";
  r = testing::run_moetool(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--max-route-mismatch"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

}  // namespace
}  // namespace moetool
