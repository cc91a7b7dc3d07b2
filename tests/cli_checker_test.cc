// tests/cli_checker_test.cc — the inference checker end to end through the moetool binary:
// TinyStories' known greedy continuation, logits as .npy, verify of a model against itself (pass)
// and against a copy with one perturbed matrix (thresholds fail, exit 1, reports written), the
// bad-input cases (vocabulary mismatch, token out of range, context too long: exit 2), and
// calibrate on a synthetic MoE.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "engine/calibrate.h"
#include "engine/engine.h"
#include "formats/npy.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::run_moetool;
using testing::TempDir;
namespace fs = std::filesystem;

std::string tiny() { return testing::shared_path("models/tinystories-656k"); }
std::string calib() { return testing::shared_path("data/tinystories-calib.txt"); }

// A copy of the TinyStories checkpoint whose tensor `name` gets seeded noise of relative size rel.
std::string perturbed_copy(const TempDir& d, const std::string& name, float rel) {
  const std::string out = d.file("perturbed");
  fs::create_directories(out);
  for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    fs::copy_file(tiny() + "/" + f, out + "/" + f);
  auto src = SafetensorsFile::open(tiny() + "/model.safetensors");
  std::vector<TensorSpec> specs;
  for (const auto& t : src->tensors()) specs.push_back({t.name, t.dtype, t.shape});
  SafetensorsWriter w(out, specs, src->metadata());
  for (const auto& t : src->tensors()) {
    Tensor x = src->get(t);
    if (t.name == name) {
      std::vector<float> v = x.to_f32();
      auto noise = testing::random_normal(v.size(), 42);
      double rms = 0;
      for (float f : v) rms += double(f) * f;
      rms = std::sqrt(rms / static_cast<double>(v.size()));
      for (size_t i = 0; i < v.size(); ++i) v[i] += static_cast<float>(rel * rms) * noise[i];
      w.write(t.name, v.data(), v.size() * 4);
    } else {
      w.write(t.name, x);
    }
  }
  w.finish();
  return out;
}

TEST(CliChecker, TinyStoriesGreedyContinuation) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  auto r = run_moetool({"generate", tiny(), "--prompt", "<|start_story|>Once upon a time", "-n", "20", "--greedy"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string want =
      "<|start_story|>Once upon a time, a little girl named Lily lived in a small house with her mom, dad, and her dog";
  EXPECT_EQ(r.out.rfind(want, 0), 0u) << r.out;
}

TEST(CliChecker, LogitsNpyMatchesTeacherForcing) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  auto r = run_moetool({"logits", tiny(), "--tokens", "1,147,201,282,57", "-o", d.file("l.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<int64_t> shape;
  auto v = read_npy_f32(d.file("l.npy"), shape);
  ASSERT_EQ(shape, (std::vector<int64_t>{5, 2048}));
  // Same numbers as the engine in process.
  Engine eng(open_weights(tiny()));
  auto want = eng.logits({1, 147, 201, 282, 57});
  ASSERT_EQ(want.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], want[i]) << i;
  // After "Once upon a" (row 3) the trained model continues with a "time" token, as greedy decoding does.
  int best = static_cast<int>(std::max_element(v.begin() + 3 * 2048, v.begin() + 4 * 2048) - (v.begin() + 3 * 2048));
  EXPECT_EQ(best, 215);
}

TEST(CliChecker, VerifyAgainstItselfPasses) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  auto r = run_moetool({"verify", tiny(), tiny(), "--text", calib(), "--ctx", "128", "--chunks", "4", "--max-kld",
                        "1e-6", "--min-top1", "1.0", "--max-ppl-ratio", "1.0", "--json", "-q", "--report",
                        d.file("rep"), "--junit", d.file("junit.xml")});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_TRUE(j.dump().find("\"passed\":true") != std::string::npos || j.dump().find("PASS") != std::string::npos)
      << r.out.substr(0, 400);
  for (const char* f : {"rep/report.json", "rep/report.md", "rep/report.html", "junit.xml"})
    EXPECT_TRUE(file_exists(d.file(f))) << f;
  EXPECT_NE(read_file(d.file("rep/report.html")).find("<svg"), std::string::npos);
  EXPECT_EQ(read_file(d.file("junit.xml")).find("<failure"), std::string::npos);
}

TEST(CliChecker, VerifyPerturbedFailsThresholds) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  const std::string bad = perturbed_copy(d, "model.layers.0.mlp.down_proj.weight", 0.5f);
  auto r = run_moetool({"verify", tiny(), bad, "--text", calib(), "--ctx", "128", "--chunks", "4", "--max-kld",
                        "1e-4", "--min-top1", "0.999", "-q", "--report", d.file("rep"), "--junit", d.file("j.xml")});
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  EXPECT_NE(r.err.find("verification failed"), std::string::npos) << r.err;
  EXPECT_NE(read_file(d.file("j.xml")).find("<failure"), std::string::npos);
  auto rep = nlohmann::json::parse(read_file(d.file("rep/report.json")));
  EXPECT_NE(rep.dump().find("kld"), std::string::npos);
  // Only layer 0's FFN changed: the per-layer similarity drops from layer 0 on.
  EXPECT_NE(r.out.find("Verdict: FAIL"), std::string::npos) << r.out;
}

TEST(CliChecker, VerifyBaseLogitsFileRoundTrip) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  auto a = run_moetool({"verify", tiny(), tiny(), "--text", calib(), "--ctx", "128", "--chunks", "3",
                        "--save-base", d.file("base.kld"), "-q", "--scored", "second-half"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto b = run_moetool({"verify", d.file("base.kld"), tiny(), "--max-kld", "1e-3", "--min-top1", "0.99", "-q"});
  EXPECT_EQ(b.exit_code, 0) << b.err << b.out;
}

TEST(CliChecker, BadInputsExit2) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  TempDir d;
  ASSERT_EQ(run_moetool({"synth", "--family", "llama", "-o", d.file("other"), "-q"}).exit_code, 0);
  auto v = run_moetool({"verify", tiny(), d.file("other"), "--text", calib(), "-q"});
  EXPECT_EQ(v.exit_code, 2) << v.err;
  EXPECT_NE(v.err.find("vocabulary"), std::string::npos) << v.err;
  auto t = run_moetool({"logits", tiny(), "--tokens", "1,5000", "-o", d.file("x.npy")});
  EXPECT_EQ(t.exit_code, 2);
  EXPECT_NE(t.err.find("5000"), std::string::npos) << t.err;
  EXPECT_FALSE(file_exists(d.file("x.npy")));
  auto c = run_moetool({"verify", tiny(), tiny(), "--text", calib(), "--ctx", "4096", "-q"});
  EXPECT_EQ(c.exit_code, 2);
  EXPECT_NE(c.err.find("4096"), std::string::npos) << c.err;
  auto g = run_moetool({"logits", tiny(), "--tokens", "1,x", "-o", d.file("y.npy")});
  EXPECT_EQ(g.exit_code, 2);
  for (const auto* res : {&v, &t, &c, &g}) EXPECT_EQ(res->err.rfind("moetool: error: ", 0), 0u) << res->err;
}

TEST(CliChecker, CalibrateSyntheticMoe) {
  TempDir d;
  ASSERT_EQ(run_moetool({"synth", "--family", "qwen2_moe", "-o", d.file("m"), "-q"}).exit_code, 0);
  std::string text;
  for (int i = 0; i < 40; ++i) text += "The quick brown fox jumps over the lazy dog number " + std::to_string(i) + ". ";
  testing::write_bytes(d.file("calib.txt"), text);
  auto r = run_moetool({"calibrate", d.file("m"), "--text", d.file("calib.txt"), "--ctx", "64", "-o",
                        d.file("stats.safetensors"), "--json", "--gram", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  CalibrationStats st = CalibrationStats::load(d.file("stats.safetensors"));
  EXPECT_EQ(st.num_tokens, j["tokens"].get<int64_t>());
  EXPECT_GT(st.num_tokens, 64);
  int64_t moe_layers = 0;
  for (const auto& l : st.layers) {
    if (!l.moe) continue;
    ++moe_layers;
    int64_t sel = 0;
    for (auto c : l.tokens_per_expert) sel += c;
    EXPECT_EQ(sel, st.num_tokens * l.top_k);  // every token chose top_k experts
    double mass = 0;
    for (auto m : l.weight_mass) mass += m;
    EXPECT_GT(mass, 0.0);
    EXPECT_FALSE(l.inputs.empty());
  }
  EXPECT_GT(moe_layers, 0);
  // Gram diagonals equal the second moments.
  for (const auto& [k, m] : st.layers[0].inputs) {
    ASSERT_EQ(m.gram.size(), m.sum_sq.size() * m.sum_sq.size());
    for (size_t i = 0; i < m.sum_sq.size(); ++i)
      EXPECT_NEAR(m.gram[i * m.sum_sq.size() + i], m.sum_sq[i], 1e-6 * (1 + m.sum_sq[i]));
    break;
  }
}

}  // namespace
}  // namespace moetool
