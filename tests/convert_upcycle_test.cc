// tests/convert_upcycle_test.cc — `convert upcycle`: identical experts reproduce the dense model
// (mean KLD < 1e-6, same top-1 everywhere, float32) for several expert counts, top-k, granularities,
// with and without a shared expert, to mixtral and qwen2_moe (and qwen3 → qwen3_moe), on synthetic
// models and the TinyStories checkpoint; outputs inspect clean; impossible pairs are refused before
// anything is written; seeded noise is deterministic; prompt routers (YAML/JSON recipes, mergekit
// "hidden" mode, condition-number warning); the CLI's JSON summary, progress and provenance.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "convert/moe_writer.h"
#include "convert/router_init.h"
#include "convert/upcycle.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "formats/synth.h"
#include "tests/convert_test_util.h"
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
std::string synth(const TempDir& d, const std::string& family) { return testing::synth_dense(d, family, 3); }
std::vector<std::vector<int32_t>> token_chunks(int64_t vocab, int n, int len) {
  return testing::token_chunks(vocab, n, len, 12345);
}
std::vector<std::vector<int32_t>> text_chunks(int n, int ctx) { return testing::tinystories_chunks(n, ctx); }
Agreement compare(const std::string& base, const std::string& cand, const std::vector<std::vector<int32_t>>& chunks) {
  return testing::agreement(base, cand, chunks);
}

struct Case {
  std::string to;
  int64_t experts, top_k, granularity;
  bool shared;
  RouterInit router;
};

std::string name(const Case& c) {
  return str(c.to, " N=", c.experts, " K=", c.top_k, " G=", c.granularity, c.shared ? " shared" : "", " router=",
             router_init_name(c.router));
}

UpcycleOptions options(const Case& c) {
  UpcycleOptions o;
  o.to = c.to;
  o.experts = c.experts;
  o.top_k = c.top_k;
  o.granularity = c.granularity;
  o.shared_expert = c.shared;
  o.router = c.router;
  o.seed = 11;
  return o;
}

TEST(ConvertUpcycle, SyntheticIdenticalExpertsAreExact) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  const auto chunks = token_chunks(512, 2, 40);
  const std::vector<Case> cases = {
      {"mixtral", 4, 2, 1, false, RouterInit::Random},  {"mixtral", 8, 4, 2, false, RouterInit::Random},
      {"mixtral", 8, 8, 4, false, RouterInit::Zero},    {"mixtral", 3, 1, 1, false, RouterInit::Random},
      {"qwen2_moe", 4, 1, 1, true, RouterInit::Random}, {"qwen2_moe", 8, 4, 2, true, RouterInit::Zero},
      {"qwen2_moe", 4, 2, 1, false, RouterInit::Random}, {"qwen2_moe", 8, 2, 2, false, RouterInit::Random},
  };
  int i = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(name(c));
    const std::string out = d.file(str("moe", i++));
    const ConvertReport r = upcycle(llama, out, options(c));
    expect_clean(out, c.to);
    EXPECT_EQ(r.per_layer.size(), 2u);
    EXPECT_EQ(r.per_layer[0].expert_sizes.size(), static_cast<size_t>(c.experts));
    EXPECT_EQ(r.per_layer[0].expert_sizes[0], 128 / c.granularity);
    EXPECT_EQ(r.per_layer[0].shared_size, c.shared ? 128 : 0);
    const Agreement a = compare(llama, out, chunks);
    EXPECT_LT(a.kld, 1e-6);
    EXPECT_EQ(a.top1, 1.0);
  }
}

TEST(ConvertUpcycle, OtherSourceFamiliesAreExact) {
  TempDir d;
  const auto chunks = token_chunks(512, 2, 40);
  // mistral (sliding window) → mixtral; qwen2 (q/k/v biases) → qwen2_moe; qwen3 (q/k norms) → qwen3_moe.
  for (const auto& [src, to] : std::vector<std::pair<std::string, std::string>>{
           {"mistral", "mixtral"}, {"mistral", "qwen2_moe"}, {"qwen2", "qwen2_moe"}, {"qwen3", "qwen3_moe"}}) {
    SCOPED_TRACE(src + " -> " + to);
    const std::string dense = synth(d, src);
    const std::string out = d.file(src + "-" + to);
    upcycle(dense, out, options({to, 4, 2, 2, false, RouterInit::Random}));
    expect_clean(out, to);
    Model m = Model::open(out);
    Model dm = Model::open(dense);
    EXPECT_EQ(m.config().qk_norm, dm.config().qk_norm);
    EXPECT_EQ(m.config().window_for_layer(0), dm.config().window_for_layer(0));
    const Agreement a = compare(dense, out, chunks);
    EXPECT_LT(a.kld, 1e-6);
    EXPECT_EQ(a.top1, 1.0);
  }
}

TEST(ConvertUpcycle, LlamaToQwen2MoeGetsZeroAttentionBiases) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  const std::string out = d.file("q2");
  const ConvertReport r = upcycle(llama, out, options({"qwen2_moe", 4, 2, 1, false, RouterInit::Random}));
  Model m = Model::open(out);
  EXPECT_TRUE(m.config().attention_bias);
  for (Role role : {Role::QBias, Role::KBias, Role::VBias})
    for (float v : m.weight(role, 1).to_f32()) ASSERT_EQ(v, 0.0f);
  EXPECT_FALSE(r.notes.empty());
  // No shared expert was asked for: qwen2_moe's mandatory one is a zero placeholder.
  for (float v : m.weight(Role::SharedDown, 0).to_f32()) ASSERT_EQ(v, 0.0f);
}

TEST(ConvertUpcycle, TinyStoriesIdenticalExpertsAreExact) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  const auto chunks = text_chunks(3, 128);
  const std::vector<Case> cases = {
      {"mixtral", 8, 2, 1, false, RouterInit::Random},
      {"mixtral", 16, 4, 4, false, RouterInit::Zero},
      {"qwen2_moe", 8, 4, 2, true, RouterInit::Random},
      {"qwen2_moe", 4, 1, 1, true, RouterInit::Zero},
      {"qwen2_moe", 6, 3, 3, false, RouterInit::Random},
  };
  int i = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(name(c));
    const std::string out = d.file(str("ts", i++));
    upcycle(tiny(), out, options(c));
    expect_clean(out, c.to);
    EXPECT_TRUE(file_exists(path_join(out, "tokenizer.json")));
    const Agreement a = compare(tiny(), out, chunks);
    EXPECT_LT(a.kld, 1e-6);
    EXPECT_EQ(a.top1, 1.0);
  }
}

TEST(ConvertUpcycle, ImpossiblePairsAreRefusedBeforeWriting) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  const std::string qwen3 = synth(d, "qwen3");
  auto refused = [&](const std::string& src, const Case& c, const std::string& needle) {
    SCOPED_TRACE(src + " " + name(c));
    const std::string out = d.file("refused");
    try {
      upcycle(src, out, options(c));
      ADD_FAILURE() << "expected moetool::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out));
  };
  refused(llama, {"qwen3_moe", 4, 2, 1, false, RouterInit::Random}, "q/k RMSNorm");
  refused(llama, {"deepseek_v3", 4, 2, 1, false, RouterInit::Random}, "multi-head latent attention");
  refused(qwen3, {"mixtral", 4, 2, 1, false, RouterInit::Random}, "q/k RMSNorm");
  refused(llama, {"olmoe", 4, 2, 1, false, RouterInit::Random}, "q/k RMSNorm");
  refused(llama, {"mixtral", 4, 2, 1, true, RouterInit::Random}, "no shared expert");
  refused(llama, {"llama", 4, 2, 1, false, RouterInit::Random}, "not a Mixture-of-Experts family");
  refused(llama, {"mixtral", 8, 3, 2, false, RouterInit::Random}, "multiple of --granularity");
  refused(llama, {"mixtral", 6, 2, 4, false, RouterInit::Random}, "multiple of --granularity");
  refused(llama, {"mixtral", 4, 5, 1, false, RouterInit::Random}, "--top-k");
  // An MoE source is not a dense model.
  const std::string moe = d.file("moe");
  upcycle(llama, moe, options({"mixtral", 4, 2, 1, false, RouterInit::Random}));
  refused(moe, {"mixtral", 4, 2, 1, false, RouterInit::Random}, "already a Mixture-of-Experts");
}

TEST(ConvertUpcycle, SeededNoiseIsDeterministic) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  UpcycleOptions o = options({"mixtral", 4, 2, 2, false, RouterInit::Random});
  o.noise = 0.01;
  upcycle(llama, d.file("a"), o);
  upcycle(llama, d.file("b"), o);
  o.seed = 12;
  upcycle(llama, d.file("c"), o);
  EXPECT_EQ(read_file(d.file("a/model.safetensors")), read_file(d.file("b/model.safetensors")));
  EXPECT_NE(read_file(d.file("a/model.safetensors")), read_file(d.file("c/model.safetensors")));
  // Noise makes experts differ: close to, but not exactly, the dense model; relative size as asked.
  Model m = Model::open(d.file("a"));
  Model dm = Model::open(llama);
  const auto e0 = m.weight(Role::ExpertUp, 0, 0).to_f32(), e2 = m.weight(Role::ExpertUp, 0, 2).to_f32();
  const auto src = dm.weight(Role::Up, 0).slice0(0, 64).to_f32();
  double diff = 0, ref = 0, between = 0;
  for (size_t i = 0; i < src.size(); ++i) {
    diff += (e0[i] - src[i]) * (e0[i] - src[i]);
    between += (e0[i] - e2[i]) * (e0[i] - e2[i]);
    ref += src[i] * src[i];
  }
  EXPECT_NEAR(std::sqrt(diff / ref), 0.01, 0.002);
  EXPECT_GT(between, 0.0);
  const Agreement a = compare(llama, d.file("a"), token_chunks(512, 1, 32));
  EXPECT_GT(a.kld, 0.0);
  EXPECT_LT(a.kld, 1e-2);
}

TEST(ConvertUpcycle, RouterRowsRepeatPerCopy) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  const std::string out = d.file("g");
  upcycle(llama, out, options({"mixtral", 8, 4, 4, false, RouterInit::Random}));
  Model m = Model::open(out);
  const auto r = m.weight(Role::Router, 1).to_f32();  // [8, 64]
  for (int64_t e = 0; e < 8; ++e)
    for (int64_t h = 0; h < 64; ++h) ASSERT_EQ(r[static_cast<size_t>(e * 64 + h)], r[static_cast<size_t>((e / 4) * 4 * 64 + h)]);
  EXPECT_NE(r[0], r[static_cast<size_t>(4 * 64)]);
}

TEST(ConvertUpcycle, YamlAndJsonRecipes) {
  const std::string yaml = R"(# mergekit-moe style
base_model: some/model
gate_mode: hidden
experts:
  - source_model: a
    positive_prompts:
      - "Once upon a time"   # a comment
      - 'the dog''s ball'
    negative_prompts: ["math", 'code']
  - source_model: b
    positive_prompts:
    - "quoted: with colon"
    - plain text
    - |
      two
      lines
)";
  const PromptRecipe r = parse_prompt_recipe(yaml, "recipe.yaml");
  ASSERT_EQ(r.experts.size(), 2u);
  EXPECT_EQ(r.experts[0].positive, (std::vector<std::string>{"Once upon a time", "the dog's ball"}));
  EXPECT_EQ(r.experts[0].negative, (std::vector<std::string>{"math", "code"}));
  EXPECT_EQ(r.experts[1].positive, (std::vector<std::string>{"quoted: with colon", "plain text", "two\nlines\n"}));
  EXPECT_TRUE(r.experts[1].negative.empty());
  const PromptRecipe j = parse_prompt_recipe(R"({"experts": [{"positive_prompts": ["a"]}]})", "r.json");
  ASSERT_EQ(j.experts.size(), 1u);
  EXPECT_THROW(parse_prompt_recipe("experts:\n  - negative_prompts: [x]\n", "r.yaml"), Error);
  EXPECT_THROW(parse_prompt_recipe("experts: &a [x]\n", "r.yaml"), Error);
  EXPECT_THROW(parse_prompt_recipe("{\"experts\": 3", "r.json"), Error);
  EXPECT_THROW(parse_yaml_subset("a: 1\n\tb: 2\n", "t.yaml"), Error);
  const auto y = parse_yaml_subset("a:\n  b: [1, two, \"3\"]\n  c: true\nd: ~\n", "t.yaml");
  EXPECT_EQ(y.dump(), R"({"a":{"b":[1,"two","3"],"c":true},"d":null})");
}

TEST(ConvertUpcycle, PromptRoutersOnTinyStories) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  testing::write_bytes(d.file("recipe.yaml"), R"(experts:
  - positive_prompts: ["Once upon a time, there was a little girl named Lily.", "She loved to play outside."]
    negative_prompts: ["The dog barked at the cat."]
  - positive_prompts: ["The dog barked at the cat.", "Tom had a big red ball."]
)");
  UpcycleOptions o = options({"mixtral", 4, 2, 2, false, RouterInit::Prompts});
  o.prompts = d.file("recipe.yaml");
  std::vector<std::string> warnings;
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  const std::string out = d.file("p");
  const ConvertReport r = upcycle(tiny(), out, o);
  expect_clean(out, "mixtral");
  ASSERT_EQ(r.per_layer.size(), 2u);
  for (const auto& l : r.per_layer) {
    ASSERT_TRUE(l.router_cond.has_value());
    EXPECT_GE(*l.router_cond, 1.0);
  }
  Model m = Model::open(out);
  const auto R = m.weight(Role::Router, 1).to_f32();  // [4, 128]: copy 0 twice, copy 1 twice
  for (int e = 0; e < 4; ++e) {
    double n = 0;
    for (int h = 0; h < 128; ++h) n += double(R[static_cast<size_t>(e * 128 + h)]) * R[static_cast<size_t>(e * 128 + h)];
    EXPECT_NEAR(n, 1.0, 1e-5);
  }
  EXPECT_EQ(R[0], R[128]);
  EXPECT_NE(R[0], R[256]);
  const Agreement a = compare(tiny(), out, text_chunks(2, 128));
  EXPECT_LT(a.kld, 1e-6);
  EXPECT_EQ(a.top1, 1.0);

  // The same prompts for both experts: a singular router, warned about.
  testing::write_bytes(d.file("same.json"),
                       R"({"experts": [{"positive_prompts": ["Tom ran."]}, {"positive_prompts": ["Tom ran."]}]})");
  o.prompts = d.file("same.json");
  warnings.clear();
  const ConvertReport r2 = upcycle(tiny(), d.file("same"), o);
  EXPECT_EQ(warnings.size(), 2u);
  EXPECT_EQ(r2.warnings.size(), 2u);
  ASSERT_FALSE(warnings.empty());
  EXPECT_NE(warnings[0].find("ill-conditioned"), std::string::npos);
  // A recipe whose expert count does not match the copies is refused.
  o.granularity = 1;
  EXPECT_THROW(upcycle(tiny(), d.file("bad"), o), Error);
}

TEST(ConvertUpcycle, CliJsonProgressAndProvenance) {
  TempDir d;
  const std::string llama = synth(d, "llama");
  const std::string out = d.file("cli");
  auto r = testing::run_moetool({"convert", "upcycle", llama, "-o", out, "--experts", "4", "--top-k", "2", "--to",
                                 "qwen2_moe", "--shared-expert", "--seed", "5", "--json", "--report",
                                 d.file("report.json")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["method"], "upcycle");
  EXPECT_EQ(j["target_family"], "qwen2_moe");
  EXPECT_EQ(j["per_layer"].size(), 2u);
  EXPECT_EQ(j["seed"], 5);
  EXPECT_EQ(nlohmann::json::parse(read_file(d.file("report.json")))["experts"], 4);
  EXPECT_NE(r.err.find("[1/2] layer 0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("[2/2] layer 1"), std::string::npos) << r.err;
  auto f = SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_EQ(f->metadata().at("moetool.seed"), "5");
  EXPECT_NE(f->metadata().at("moetool.command").find("convert upcycle"), std::string::npos);
  EXPECT_FALSE(f->metadata().at("moetool.version").empty());
  // The checker runs the output.
  auto v = testing::run_moetool({"generate", out, "--prompt", "hello", "-n", "4", "--greedy"});
  EXPECT_EQ(v.exit_code, 0) << v.err;
  // Refusals are exit 2 with one clear line; an existing output needs --force.
  auto bad = testing::run_moetool({"convert", "upcycle", llama, "-o", d.file("x"), "--to", "deepseek_v3"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("MLA"), std::string::npos) << bad.err;
  auto again = testing::run_moetool({"convert", "upcycle", llama, "-o", out, "--to", "mixtral", "-q"});
  EXPECT_EQ(again.exit_code, 2);
  auto forced = testing::run_moetool({"convert", "upcycle", llama, "-o", out, "--to", "mixtral", "-q", "--force"});
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
}

}  // namespace
}  // namespace moetool
