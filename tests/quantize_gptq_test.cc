// tests/quantize_gptq_test.cc — whole-checkpoint GPTQ / importance / RTN quantization into the
// GPTQ safetensors layout: the output is a consistent checkpoint the checker runs directly; its
// logits follow the original within what the width allows; GPTQ beats RTN at the same width;
// experts without calibration tokens fall back to plain rounding with a warning, never zeros; the
// --bpw allocation keeps its budget and its constraint; the command line.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "compress/bit_alloc.h"
#include "compress/quantize_int.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/gptq.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "test_util.h"
#include "engine/engine.h"
#include "engine/text.h"

namespace moetool {
namespace {

// Text-like token ids: skewed towards a few frequent tokens (u³ over the vocabulary), so that
// the layers' inputs have the correlated, anisotropic second moments GPTQ exploits — uniform
// random ids on a random model give near-isotropic Hessians, where GPTQ cannot beat rounding.
std::vector<int32_t> tokens(int64_t vocab, size_t n, uint64_t seed) {
  std::vector<int32_t> t(n);
  uint64_t s = seed * 6364136223846793005ULL + 1442695040888963407ULL;
  for (auto& x : t) {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    const double u = static_cast<double>(s >> 11) / 9007199254740992.0;
    x = static_cast<int32_t>(std::min<int64_t>(vocab - 1, static_cast<int64_t>(u * u * u * static_cast<double>(vocab))));
  }
  return t;
}

// Mean KL(p_base ‖ p_cand) per position and top-1 agreement, from the checker's logits.
std::pair<double, double> kld_top1(const std::string& base, const std::string& cand, const std::vector<int32_t>& ids) {
  Engine a(open_weights(base)), b(open_weights(cand));
  const auto la = a.logits(ids), lb = b.logits(ids);
  const int64_t V = a.config().vocab_size, n = static_cast<int64_t>(ids.size());
  double kld = 0, top = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* x = la.data() + t * V;
    const float* y = lb.data() + t * V;
    double mx = x[0], my = y[0];
    int64_t ax = 0, ay = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (x[v] > mx) mx = x[v], ax = v;
      if (y[v] > my) my = y[v], ay = v;
    }
    double zx = 0, zy = 0;
    for (int64_t v = 0; v < V; ++v) zx += std::exp(x[v] - mx), zy += std::exp(y[v] - my);
    double k = 0;
    for (int64_t v = 0; v < V; ++v) {
      const double lpx = x[v] - mx - std::log(zx), lpy = y[v] - my - std::log(zy);
      k += std::exp(lpx) * (lpx - lpy);
    }
    kld += k;
    top += ax == ay;
  }
  return {kld / static_cast<double>(n), top / static_cast<double>(n)};
}

std::string synth(const testing::TempDir& tmp, const std::string& fam, uint64_t seed = 3) {
  const std::string dir = tmp.file("src-" + fam);
  SynthOptions so;
  so.family = fam;
  so.seed = seed;
  synth_model(dir, so);
  return dir;
}

std::vector<std::vector<int32_t>> calib(int64_t vocab, int n_chunks, size_t len, uint64_t seed) {
  std::vector<std::vector<int32_t>> c;
  for (int i = 0; i < n_chunks; ++i) c.push_back(tokens(vocab, len, seed + static_cast<uint64_t>(i)));
  return c;
}

TEST(QuantizeGPTQ, OutputIsAConsistentCheckpointTheCheckerRuns) {
  testing::TempDir tmp;
  for (const char* fam : {"llama", "mixtral", "qwen2_moe"}) {
    SCOPED_TRACE(fam);
    const std::string src = synth(tmp, fam);
    Model m = Model::open(src);
    IntQuantOptions o;
    o.spec = {8, 32, true};
    o.method = "gptq";
    const auto cal = calib(m.config().vocab_size, 4, 64, 11);
    const std::string out = tmp.file(std::string("q8-") + fam);
    const IntQuantReport rep = quantize_to_gptq(m, out, cal, o);
    Model q = Model::open(out);
    for (const auto& i : q.check()) ADD_FAILURE() << i.message();
    auto qc = gptq_config_of(q.config().raw, out);
    ASSERT_TRUE(qc.has_value());
    EXPECT_EQ(qc->bits, 8);
    EXPECT_EQ(qc->group_size, 32);
    // Every quantizable linear was quantized (the synth shapes all fit 32-column groups).
    for (const auto& r : rep.linears) EXPECT_EQ(r.bits, 8) << r.module;
    EXPECT_GT(rep.quantized_params, 0);
    // 8 bits + a f16 scale and an 8-bit zero per 32 weights + a 32-bit g_idx entry per input column.
    EXPECT_GT(rep.bpw_quantized(), 8.7);
    EXPECT_LT(rep.bpw_quantized(), 9.6);
    // The checker reads GPTQ tensors as such.
    auto w = open_weights(out);
    EXPECT_NE(w->matrix(Role::Q, 0)->storage().find("GPTQ"), std::string::npos);
    const auto ids = tokens(m.config().vocab_size, 48, 99);
    auto [kld, top1] = kld_top1(src, out, ids);
    // Random tiny MoEs are sensitive: one flipped expert choice moves a position's whole output
    // (int8 RTN of the synth mixtral measures 2.8e-3 on text); a broken layout gives KLD ≫ 0.1.
    EXPECT_LT(kld, 1e-2);
    EXPECT_GE(top1, 0.85);
  }
}

TEST(QuantizeGPTQ, GptqBeatsRtnAndImportanceAtFourAndThreeBits) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "llama", 5);
  Model m = Model::open(src);
  const auto cal = calib(m.config().vocab_size, 8, 96, 21);
  const auto ids = tokens(m.config().vocab_size, 96, 77);  // held-out
  for (int bits : {4, 3}) {
    SCOPED_TRACE(bits);
    double kl[3];
    const char* methods[3] = {"rtn", "imatrix", "gptq"};
    for (int i = 0; i < 3; ++i) {
      IntQuantOptions o;
      o.spec = {bits, 32, true};
      o.method = methods[i];
      const std::string out = tmp.file(str("b", bits, "-", methods[i]));
      const auto rep = quantize_to_gptq(m, out, o.method == "rtn" ? decltype(cal){} : cal, o);
      kl[i] = kld_top1(src, out, ids).first;
      if (o.method == "gptq")
        for (const auto& r : rep.linears) {
          EXPECT_GE(r.rel_error, 0.0) << r.module;
          EXPECT_EQ(r.tokens, 8 * 96) << r.module;
        }
    }
    EXPECT_LT(kl[2], kl[0]) << "gptq " << kl[2] << " rtn " << kl[0];
    EXPECT_LE(kl[1], kl[0] * 1.05) << "imatrix " << kl[1] << " rtn " << kl[0];
  }
}

TEST(QuantizeGPTQ, ExpertsWithoutCalibrationTokensFallBackWithAWarningNeverZeros) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "mixtral", 7);
  Model m = Model::open(src);
  // 6 tokens with top-2 of 4 experts: at most 12 selections; with min_tokens 8 at least one
  // expert per layer has too few and must fall back.
  const auto cal = calib(m.config().vocab_size, 1, 6, 31);
  IntQuantOptions o;
  o.spec = {4, 32, true};
  o.min_tokens = 8;
  o.pool_rows = 0;  // the coverage guard off: RTN fallback (ExpertsWithFewTokensGetPooledHessians)
  const std::string out = tmp.file("q");
  const auto rep = quantize_to_gptq(m, out, cal, o);
  int fallbacks = 0;
  for (const auto& r : rep.linears) {
    if (r.expert < 0) continue;
    if (r.tokens < 8) {
      ++fallbacks;
      EXPECT_EQ(r.method.rfind("rtn (fallback", 0), 0u) << r.module << " " << r.method;
      bool warned = false;
      for (const auto& w : rep.warnings) warned = warned || w.find(r.module) != std::string::npos;
      EXPECT_TRUE(warned) << r.module;
    } else {
      EXPECT_EQ(r.method, "gptq") << r.module;
    }
  }
  EXPECT_GT(fallbacks, 0);
  // The fallback experts hold their weights (within RTN's error), not zeros.
  auto wq = open_weights(out), wf = open_weights(src);
  for (const auto& r : rep.linears) {
    if (r.expert < 0 || r.tokens >= 8) continue;
    std::vector<float> a(static_cast<size_t>(r.rows * r.cols)), b(a.size());
    wf->matrix(r.role, r.layer, r.expert)->to_dense(a.data());
    wq->matrix(r.role, r.layer, r.expert)->to_dense(b.data());
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += a[i] * a[i];
    EXPECT_LT(std::sqrt(num / den), 0.15) << r.module;
  }
  for (const auto& i : Model::open(out).check()) ADD_FAILURE() << i.message();
}

// The coverage guard: experts below min_tokens get GPTQ with their own rows plus the layer's pooled
// rows (every calibration token here: the pool holds up to 4096), recorded and warned; their weights
// differ from the RTN fallback's and stay within 3-bit rounding of the float ones. (Quality on real
// text: PooledHessiansBeatTheRtnFallbackOnTinyMoe.)
TEST(QuantizeGPTQ, ExpertsWithFewTokensGetPooledHessians) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "mixtral", 7);
  Model m = Model::open(src);
  const auto cal = calib(m.config().vocab_size, 2, 48, 31);
  IntQuantOptions o;
  o.spec = {3, 32, true};
  o.min_tokens = 40;  // 96 tokens, top-2 of 4: about 48 rows per expert, some below 40
  const auto rep = quantize_to_gptq(m, tmp.file("pooled"), cal, o);
  o.pool_rows = 0;
  const auto rtn = quantize_to_gptq(m, tmp.file("rtn"), cal, o);
  int pooled = 0;
  for (const auto& r : rep.linears) {
    if (r.expert < 0) continue;
    if (r.tokens < 40) {
      ++pooled;
      EXPECT_EQ(r.method, "gptq (pooled Hessian)") << r.module;
      EXPECT_EQ(r.pooled, 96) << r.module;
      bool warned = false;
      for (const auto& w : rep.warnings) warned = warned || w.find(r.module) != std::string::npos;
      EXPECT_TRUE(warned) << r.module;
    } else {
      EXPECT_EQ(r.method, "gptq") << r.module;
      EXPECT_EQ(r.pooled, 0) << r.module;
    }
  }
  EXPECT_GT(pooled, 0);
  auto wp = open_weights(tmp.file("pooled")), wr = open_weights(tmp.file("rtn")), wf = open_weights(src);
  for (const auto& r : rep.linears) {
    if (r.expert < 0 || r.tokens >= 40) continue;
    std::vector<float> f(static_cast<size_t>(r.rows * r.cols)), p(f.size()), q(f.size());
    wf->matrix(r.role, r.layer, r.expert)->to_dense(f.data());
    wp->matrix(r.role, r.layer, r.expert)->to_dense(p.data());
    wr->matrix(r.role, r.layer, r.expert)->to_dense(q.data());
    double num = 0, den = 0, diff = 0;
    for (size_t i = 0; i < f.size(); ++i) num += (f[i] - p[i]) * (f[i] - p[i]), den += f[i] * f[i], diff += std::abs(p[i] - q[i]);
    EXPECT_LT(std::sqrt(num / den), 0.3) << r.module;
    EXPECT_GT(diff, 0) << r.module;
  }
  for (const auto& i : Model::open(tmp.file("pooled")).check()) ADD_FAILURE() << i.message();
}

// On tinymoe-3domain calibrated on 1024 tokens of the three domains, most experts see fewer than 600
// tokens; with pooled (soft-routed) Hessians the 3-bit model is closer to the original on held-out
// text of the three domains than with the RTN fallback for those experts.
TEST(QuantizeGPTQ, PooledHessiansBeatTheRtnFallbackOnTinyMoe) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  testing::TempDir tmp;
  const std::string m = testing::shared_path("models/tinymoe-3domain");
  std::string calib, held;
  for (const char* d : {"stories", "code", "prose"}) {
    const std::string t = read_file(testing::shared_path(str("data/moe3-calib-", d, ".txt")));
    calib += t.substr(0, 1500) + " ";
    held += t.substr(20000, 6000) + " ";
  }
  testing::write_bytes(tmp.file("calib.txt"), calib);
  testing::write_bytes(tmp.file("held.txt"), held);
  double kld[2];
  for (int pooled : {0, 1}) {
    const std::string out = tmp.file(pooled ? "pooled" : "rtn");
    auto r = testing::run_moetool({"quantize", m, "-o", out, "--format", "gptq", "--bits", "3", "--calib-text",
                                   tmp.file("calib.txt"), "--min-tokens", "600", "--pool-rows", pooled ? "4096" : "0",
                                   "--json", "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    int n = 0;
    for (const auto& c : j["expert_coverage"]) n += c["pooled_tokens"].get<int64_t>() > 0;
    if (pooled) EXPECT_GE(n, 4);
    else EXPECT_EQ(n, 0);
    auto v = testing::run_moetool({"verify", m, out, "--text", tmp.file("held.txt"), "--ctx", "256", "--no-hidden",
                                   "--json", "-q"});
    ASSERT_EQ(v.exit_code, 0) << v.err;
    kld[pooled] = nlohmann::json::parse(v.out)["kld"]["mean"]["value"].get<double>();
  }
  std::printf("held-out KLD: pooled %.4f, RTN fallback %.4f\n", kld[1], kld[0]);
  EXPECT_LT(kld[1], kld[0]);
}

TEST(QuantizeGPTQ, ActOrderAndAsymmetricAndMixedWidthsLoadBack) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "qwen2_moe", 9);
  Model m = Model::open(src);
  const auto cal = calib(m.config().vocab_size, 4, 64, 41);
  IntQuantOptions o;
  o.spec = {4, 32, false};
  o.gptq.act_order = true;
  o.bits[LinearKey{Role::ExpertDown, 1, 2}] = 8;
  o.bits[LinearKey{Role::Q, 0, -1}] = 2;
  const std::string out = tmp.file("q");
  quantize_to_gptq(m, out, cal, o);
  Model q = Model::open(out);
  for (const auto& i : q.check()) ADD_FAILURE() << i.message();
  auto g = q.gptq(Role::ExpertDown, 1, 2);
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->bits, 8);
  EXPECT_EQ(q.gptq(Role::Q, 0)->bits, 2);
  EXPECT_EQ(q.gptq(Role::K, 0)->bits, 4);
  auto qc = *gptq_config_of(q.config().raw, out);
  EXPECT_TRUE(qc.desc_act);
  EXPECT_FALSE(qc.sym);
  const auto dyn = q.config().raw["quantization_config"]["dynamic"];
  ASSERT_TRUE(dyn.is_object());
  bool found8 = false, found2 = false;
  for (auto it = dyn.begin(); it != dyn.end(); ++it) {
    if (it.key().find("experts\\.2\\.down_proj") != std::string::npos) found8 = it.value()["bits"] == 8;
    if (it.key().find("layers\\.0\\.self_attn\\.q_proj") != std::string::npos) found2 = it.value()["bits"] == 2;
  }
  EXPECT_TRUE(found8);
  EXPECT_TRUE(found2);
  const auto ids = tokens(m.config().vocab_size, 32, 5);
  // Layer 0's q_proj at 2 bits dominates; a wrong zero point or permutation gives KLD > 1.
  EXPECT_LT(kld_top1(src, out, ids).first, 0.25);
}

// A group size that does not divide a linear's inputs: that module is stored with one group per row
// and says so in `dynamic`; nothing is left in float.
TEST(QuantizeGPTQ, GroupSizeThatDoesNotDivideFallsBackToWholeRows) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "mixtral", 23);  // hidden 64, expert width 64: 128 divides nothing
  Model m = Model::open(src);
  IntQuantOptions o;
  o.spec = {4, 128, true};
  o.method = "rtn";
  const auto rep = quantize_to_gptq(m, tmp.file("q"), {}, o);
  for (const auto& r : rep.linears) EXPECT_EQ(r.bits, 4) << r.module;
  Model q = Model::open(tmp.file("q"));
  for (const auto& i : q.check()) ADD_FAILURE() << i.message();
  EXPECT_EQ(q.gptq(Role::ExpertDown, 1, 3)->ngroups, 1);
  const auto dyn = q.config().raw["quantization_config"]["dynamic"];
  const std::string key = "+:^model\\.layers\\.1\\.block_sparse_moe\\.experts\\.3\\.w2$";
  ASSERT_TRUE(dyn.contains(key)) << dyn.dump();
  EXPECT_EQ(dyn[key]["group_size"], -1);
  EXPECT_FALSE(dyn[key].contains("bits"));
  const auto ids = tokens(m.config().vocab_size, 32, 8);
  EXPECT_LT(kld_top1(src, tmp.file("q"), ids).first, 0.1);
}

TEST(QuantizeGPTQ, BitAllocationKeepsBudgetAndAttentionAtLeastRoutedAverage) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "qwen2_moe", 13);
  Model m = Model::open(src);
  Engine eng(open_weights(src), false);
  const auto cal = calib(m.config().vocab_size, 4, 64, 51);
  AllocOptions ao;
  for (int b : {2, 3, 4, 8}) {
    QuantCandidate c;
    c.spec = {b, 32, true};
    c.name = str("int", b);
    ao.candidates.push_back(c);
  }
  const auto units = measure_alloc_units(eng, cal, ao);
  // Errors fall as widths grow, for every unit with tokens.
  for (const auto& u : units) {
    if (u.tokens == 0) continue;
    EXPECT_GT(u.error[0], u.error[3]) << u.name;
  }
  for (double bpw : {3.3, 4.0, 5.0}) {  // int2 g32 costs 3.06 here (scales, zeros, g_idx)
    for (bool all : {false, true}) {
      SCOPED_TRACE(str(bpw, all ? " all" : " experts"));
      ao.bpw = bpw;
      ao.all_weights = all;
      const Allocation a = solve_allocation(units, ao);
      EXPECT_LE(a.bpw_scope, bpw + 1e-9);
      for (size_t i = 0; i < a.units.size(); ++i) {
        ASSERT_GE(a.choice[i], 0);
        if (a.units[i].routed) continue;
        const double b = 8.0 * a.units[i].bytes[static_cast<size_t>(a.choice[i])] / a.units[i].params;
        EXPECT_GE(b + 1e-9, a.routed_avg_bpw) << a.units[i].name;
      }
    }
  }
  ao.bpw = 1.0;
  EXPECT_THROW(solve_allocation(units, ao), Error);
}

TEST(QuantizeGPTQ, CommandLine) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "mixtral", 17);
  // Calibration text made of the synth tokenizer's words is not needed: rtn first.
  auto r = testing::run_moetool({"quantize", src, "-o", tmp.file("rtn"), "--format", "gptq", "--method", "rtn",
                                 "--group-size", "32", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "gptq");
  EXPECT_EQ(j["bits"], 4);
  EXPECT_EQ(Model::open(tmp.file("rtn")).find(Role::Embed, -1, -1)->dtype, DType::F32);  // source dtype kept
  r = testing::run_moetool({"quantize", src, "-o", tmp.file("rtn16"), "--format", "gptq", "--method", "rtn",
                            "--group-size", "32", "--float-dtype", "f16", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  {
    Model q16 = Model::open(tmp.file("rtn16"));
    EXPECT_EQ(q16.find(Role::Embed, -1, -1)->dtype, DType::F16);
    EXPECT_EQ(q16.find(Role::Router, 0, -1)->dtype, DType::F16);
    for (const auto& i : q16.check()) ADD_FAILURE() << i.message();
  }
  r = testing::run_moetool({"verify", src, tmp.file("rtn"), "--text", tmp.file("none.txt")});
  EXPECT_EQ(r.exit_code, 2);  // missing text file: a clear error
  // Bad usage: exit 2 with one line.
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--bits", "9", "--method", "rtn"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--group-size", "48", "--method", "rtn"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq"},  // gptq without calibration text
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--bpw", "3", "--method", "rtn"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "awq"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--method", "rtn", "--float-dtype", "f8"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--method", "rtn", "--bits", "5"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--method", "rtn", "--sensitivity", "hessian"},
           {"quantize", src, "-o", tmp.file("x"), "--format", "gptq", "--method", "rtn", "--kld-tokens", "0"},
       }) {
    auto e = testing::run_moetool(args);
    EXPECT_EQ(e.exit_code, 2) << args.back() << ": " << e.err;
    EXPECT_NE(e.err.find("moetool: error:"), std::string::npos) << e.err;
    EXPECT_FALSE(file_exists(tmp.file("x")));
  }
}

}  // namespace
}  // namespace moetool

namespace moetool {
namespace {

TEST(QuantizeGPTQ, FusedRulesMatchWhatVllmFuses) {
  EXPECT_EQ(gptq_fused_rule("model.layers.3.self_attn.k_proj"), "^model\\.layers\\.3\\.self_attn\\.(q|k|v|qkv)_proj$");
  EXPECT_EQ(gptq_fused_rule("model.layers.3.mlp.up_proj"), "^model\\.layers\\.3\\.mlp\\.(gate|up|gate_up)_proj$");
  EXPECT_EQ(gptq_fused_rule("model.layers.3.block_sparse_moe.experts.12.w2"),
            "^model\\.layers\\.3\\.block_sparse_moe\\.experts(\\.|$)");
  EXPECT_EQ(gptq_fused_rule("model.layers.3.mlp.experts.0.gate_proj"), "^model\\.layers\\.3\\.mlp\\.experts(\\.|$)");
  EXPECT_EQ(gptq_fused_rule("model.layers.3.mlp.shared_expert.gate_proj"),
            "^model\\.layers\\.3\\.mlp\\.shared_expert\\.(gate|up|gate_up)_proj$");
  EXPECT_EQ(gptq_fused_rule("model.layers.3.self_attn.o_proj"), "^model\\.layers\\.3\\.self_attn\\.o_proj$");
}

// --fused-widths: one width per vLLM fused group, rules in the fused form, and a width that differs
// inside a group is refused.
TEST(QuantizeGPTQ, FusedWidthsGiveOneWidthPerVllmGroup) {
  testing::TempDir tmp;
  const std::string src = synth(tmp, "qwen2_moe", 21);
  Model m = Model::open(src);
  const auto cal = calib(m.config().vocab_size, 4, 64, 61);
  Engine eng(open_weights(src), false);
  AllocOptions ao;
  for (int b : {2, 3, 4, 8}) {
    QuantCandidate c;
    c.spec = {b, 32, true};
    c.name = str("int", b);
    ao.candidates.push_back(c);
  }
  ao.bpw = 4.0;
  ao.all_weights = true;
  ao.fused_groups = true;
  const Allocation a = solve_allocation(measure_alloc_units(eng, cal, ao), ao);
  IntQuantOptions o;
  o.spec = {4, 32, true};
  o.method = "rtn";
  o.fused_groups = true;
  const int64_t E = m.config().moe->num_experts;
  bool expert_group = false;
  for (size_t i = 0; i < a.units.size(); ++i) {
    const auto& u = a.units[i];
    ASSERT_GE(a.choice[i], 0) << u.name;
    const int bits = ao.candidates[static_cast<size_t>(a.choice[i])].spec.bits;
    if (u.routed) {
      EXPECT_EQ(u.expert, -2) << u.name;
      expert_group = true;
    }
    for (Role r : u.roles) {
      if (u.expert == -2)
        for (int64_t e = 0; e < E; ++e) o.bits[LinearKey{r, u.layer, e}] = bits;
      else
        o.bits[LinearKey{r, u.layer, u.expert}] = bits;
    }
  }
  EXPECT_TRUE(expert_group);
  const std::string out = tmp.file("q");
  quantize_to_gptq(m, out, {}, o);
  Model q = Model::open(out);
  for (const auto& i : q.check()) ADD_FAILURE() << i.message();
  for (int64_t l = 0; l < m.config().num_layers; ++l) {
    EXPECT_EQ(q.gptq(Role::Q, l)->bits, q.gptq(Role::K, l)->bits);
    EXPECT_EQ(q.gptq(Role::Q, l)->bits, q.gptq(Role::V, l)->bits);
    EXPECT_EQ(q.gptq(Role::SharedGate, l)->bits, q.gptq(Role::SharedUp, l)->bits);
    for (int64_t e = 0; e < E; ++e)
      for (Role r : {Role::ExpertGate, Role::ExpertUp, Role::ExpertDown})
        EXPECT_EQ(q.gptq(r, l, e)->bits, q.gptq(Role::ExpertGate, l, 0)->bits);
  }
  const auto dyn = q.config().raw["quantization_config"].value("dynamic", nlohmann::json::object());
  for (auto it = dyn.begin(); it != dyn.end(); ++it) {
    EXPECT_EQ(it.key().find("experts\\.0\\."), std::string::npos) << it.key();  // no per-expert rules
    EXPECT_EQ(it.key().find("q_proj$"), std::string::npos) << it.key();
  }
  // A width that differs inside a group.
  o.bits[LinearKey{Role::K, 0, -1}] = o.bits[LinearKey{Role::Q, 0, -1}] == 8 ? 4 : 8;
  EXPECT_THROW(quantize_to_gptq(m, tmp.file("bad"), {}, o), Error);
  EXPECT_FALSE(file_exists(tmp.file("bad")));
}

}  // namespace
}  // namespace moetool
