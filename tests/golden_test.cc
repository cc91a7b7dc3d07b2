// tests/golden_test.cc — moetool against golden references produced by Hugging Face transformers itself
// (tests/golden/make_golden.py; versions in tests/data/golden/README.md and each meta.json):
//   * every tiny random model under tests/data/golden/<name>/ (config.json + model.safetensors written by
//     transformers' save_pretrained) must give, through moetool's engine, the logits transformers
//     recorded in logits.npy for the token sequences of tokens.json: max |Δ| ≤ 1e-4 and the same top-1
//     at every position;
//   * the TinyStories tokenizer (../shared) must encode the strings of tinystories_tokenizer.json to the
//     ids Hugging Face `tokenizers` gave (with and without special tokens).
// Nothing here needs Python: the references are committed files.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/fs.h"
#include "formats/tokenizer.h"
#include "tests/test_util.h"
#include "engine/engine.h"
#include "formats/npy.h"
#include "engine/weights.h"

namespace moetool::testing {
namespace {

using nlohmann::json;

constexpr double kMaxAbsDiff = 1e-4;

std::string golden_dir() { return std::string(MOETOOL_SOURCE_DIR) + "/tests/data/golden"; }

// Every model directory under tests/data/golden (one holding config.json), sorted by name.
std::vector<std::string> golden_models() {
  std::vector<std::string> names;
  std::error_code ec;  // a missing directory yields no models (GoldenFiles then fails), not a crash at startup
  for (std::filesystem::directory_iterator it(golden_dir(), ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory() && std::filesystem::exists(it->path() / "config.json"))
      names.push_back(it->path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

struct Comparison {
  double max_abs = 0.0;
  int64_t worst_seq = -1, worst_pos = -1, worst_tok = -1;
  int64_t positions = 0, top1_same = 0;
  std::vector<std::string> top1_mismatches;  // "seq s pos p: moetool a, transformers b"
};

Comparison compare_model(const std::string& name) {
  const std::string dir = golden_dir() + "/" + name;
  const json tokens = json::parse(read_file(dir + "/tokens.json"));
  std::vector<int64_t> shape;
  const std::vector<float> ref = read_npy_f32(dir + "/logits.npy", shape);
  if (shape.size() != 3 || shape[0] != static_cast<int64_t>(tokens.size()))
    throw std::runtime_error(name + ": logits.npy shape does not match tokens.json");
  const int64_t n_seq = shape[0], len = shape[1], vocab = shape[2];

  Engine eng(open_weights(dir));
  if (eng.config().vocab_size != vocab)
    throw std::runtime_error(name + ": vocab " + std::to_string(eng.config().vocab_size) + " vs logits " +
                             std::to_string(vocab));
  Comparison c;
  for (int64_t s = 0; s < n_seq; ++s) {
    const std::vector<int32_t> toks = tokens.at(static_cast<size_t>(s)).get<std::vector<int32_t>>();
    if (static_cast<int64_t>(toks.size()) != len) throw std::runtime_error(name + ": sequence length mismatch");
    const std::vector<float> got = eng.logits(toks);
    if (static_cast<int64_t>(got.size()) != len * vocab) throw std::runtime_error(name + ": engine output size");
    for (int64_t p = 0; p < len; ++p) {
      const float* g = got.data() + p * vocab;
      const float* r = ref.data() + (s * len + p) * vocab;
      for (int64_t v = 0; v < vocab; ++v) {
        const double d = std::fabs(static_cast<double>(g[v]) - static_cast<double>(r[v]));
        if (!(d <= c.max_abs)) {  // NaN counts as the worst
          c.max_abs = std::isnan(d) ? INFINITY : d;
          c.worst_seq = s, c.worst_pos = p, c.worst_tok = v;
        }
      }
      const int64_t ag = std::max_element(g, g + vocab) - g;
      const int64_t ar = std::max_element(r, r + vocab) - r;
      ++c.positions;
      if (ag == ar) {
        ++c.top1_same;
      } else {
        std::ostringstream os;
        os << "seq " << s << " pos " << p << ": moetool top-1 " << ag << ", transformers " << ar;
        c.top1_mismatches.push_back(os.str());
      }
    }
  }
  return c;
}

class GoldenLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLogits, MatchesTransformers) {
  const std::string name = GetParam();
  const std::string meta_path = golden_dir() + "/" + name + "/meta.json";
  std::string exercises;
  if (file_exists(meta_path)) exercises = json::parse(read_file(meta_path)).value("exercises", "");
  const Comparison c = compare_model(name);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3g", c.max_abs);
  std::cout << "[golden] " << name << ": max |Δ| " << buf << " (seq " << c.worst_seq << " pos " << c.worst_pos
            << " token " << c.worst_tok << "), top-1 agreement " << c.top1_same << "/" << c.positions << "\n";
  EXPECT_LE(c.max_abs, kMaxAbsDiff) << name << " (" << exercises << "): worst at seq " << c.worst_seq << " pos "
                                    << c.worst_pos << " token " << c.worst_tok;
  EXPECT_EQ(c.top1_same, c.positions) << name << ": top-1 differs at "
                                      << (c.top1_mismatches.empty() ? "" : c.top1_mismatches.front()) << " ("
                                      << c.top1_mismatches.size() << " positions)";
}

GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GoldenLogits);
INSTANTIATE_TEST_SUITE_P(Golden, GoldenLogits, ::testing::ValuesIn(golden_models()),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// The committed directory holds every family moetool supports, and each model is small.
TEST(GoldenFiles, CoverEveryFamilyAndStaySmall) {
  std::map<std::string, int> per_family;
  ASSERT_FALSE(golden_models().empty()) << "no golden models under " << golden_dir();
  uint64_t total = 0;
  for (const auto& e : std::filesystem::recursive_directory_iterator(golden_dir()))
    if (e.is_regular_file()) total += e.file_size();
  for (const std::string& name : golden_models()) {
    const std::string dir = golden_dir() + "/" + name;
    const json cfg = json::parse(read_file(dir + "/config.json"));
    ++per_family[cfg.at("model_type").get<std::string>()];
    EXPECT_LT(file_size(dir + "/model.safetensors"), 1000000u) << name;
    EXPECT_TRUE(file_exists(dir + "/logits.npy")) << name;
    EXPECT_TRUE(file_exists(dir + "/meta.json")) << name;
  }
  for (const char* f : {"llama", "mistral", "qwen2", "qwen3", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe",
                        "deepseek_v3"})
    EXPECT_GE(per_family[f], 1) << "no golden model of family " << f;
  EXPECT_LT(total, 10u * 1000 * 1000) << "tests/data/golden grew past 10 MB";
}

// Hugging Face `tokenizers` ids for the TinyStories tokenizer.json (tinystories_tokenizer.json "cases":
// with_special / without_special). The file also records what transformers' AutoTokenizer gives
// (auto_*): transformers v5 rebuilds this tokenizer as its LlamaTokenizer class (Metaspace pre-tokenizer,
// no unk token), which is not the tokenizer.json's semantics, so those are reported, not required.
TEST(GoldenTokenizer, TinyStoriesMatchesHuggingFaceTokenizers) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const json g = json::parse(read_file(golden_dir() + "/tinystories_tokenizer.json"));
  const auto tok = Tokenizer::from_hf_dir(shared_path("models/tinystories-656k"));
  int checked = 0, same = 0, auto_same = 0;
  for (const json& c : g.at("cases")) {
    const std::string text = c.at("text").get<std::string>();
    for (const bool add : {true, false}) {
      const char* key = add ? "with_special" : "without_special";
      const std::vector<int32_t> want = c.at(key).get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok->encode(text, add);
      ++checked;
      same += got == want;
      auto_same += got == c.at(std::string("auto_") + key).get<std::vector<int32_t>>();
      EXPECT_EQ(json(got).dump(), json(want).dump()) << "text " << json(text).dump() << ", add_special " << add;
    }
  }
  std::cout << "[golden] tokenizer: " << same << "/" << checked << " encodings equal HF tokenizers; " << auto_same
            << "/" << checked << " equal transformers AutoTokenizer (informational)\n";
  EXPECT_GE(checked, 30);
}

}  // namespace
}  // namespace moetool::testing
