// tests/cli_test.cc — the moetool binary end to end: --version/--help, synth → inspect for every
// family, determinism, sharding, the TinyStories acceptance numbers, and bad input that must exit
// 2 with one error line naming the file (and tensor), never a crash.
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/fs.h"
#include "formats/checkpoint.h"
#include "formats/family.h"
#include "formats/safetensors.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::RunResult;
using testing::run_moetool;
using testing::TempDir;
namespace fs = std::filesystem;

// Exactly one non-empty line on stderr, starting "moetool: error: ".
void expect_one_error_line(const RunResult& r, const std::string& needle, const std::string& what) {
  EXPECT_EQ(r.exit_code, 2) << what << "\nstderr: " << r.err;
  EXPECT_EQ(r.err.rfind("moetool: error: ", 0), 0u) << what << ": " << r.err;
  std::string e = r.err;
  while (!e.empty() && e.back() == '\n') e.pop_back();
  EXPECT_EQ(e.find('\n'), std::string::npos) << what << ": more than one line: " << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << what << ": error lacks '" << needle << "': " << r.err;
}

TEST(Cli, VersionAndHelp) {
  RunResult v = run_moetool({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.out.find("CUDA backend: "), std::string::npos) << v.out;
  RunResult h = run_moetool({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  for (const char* c : {"inspect", "synth"}) {
    EXPECT_NE(h.out.find(c), std::string::npos) << c;
    RunResult ch = run_moetool({c, "--help"});
    EXPECT_EQ(ch.exit_code, 0) << c;
    EXPECT_NE(ch.out.find("Usage"), std::string::npos) << c << ": " << ch.out;
  }
  expect_one_error_line(run_moetool({"frobnicate"}), "frobnicate", "unknown command");
  EXPECT_EQ(run_moetool({}).exit_code, 2);
  EXPECT_EQ(run_moetool({"synth", "--family", "llama"}).exit_code, 2);  // missing -o
}

TEST(Cli, SynthThenInspectEveryFamily) {
  TempDir d;
  for (const Family* f : all_families()) {
    const std::string out = d.file(f->name());
    RunResult s = run_moetool({"synth", "--family", f->name(), "--preset", "tiny", "-o", out, "--seed", "3", "-q"});
    ASSERT_EQ(s.exit_code, 0) << f->name() << ": " << s.err;
    RunResult i = run_moetool({"inspect", out, "--json"});
    ASSERT_EQ(i.exit_code, 0) << f->name() << ": " << i.out << i.err;
    auto j = nlohmann::json::parse(i.out);
    EXPECT_EQ(j["family"], f->name());
    EXPECT_TRUE(j["consistent"].get<bool>()) << i.out;
    EXPECT_GT(j["params_total"].get<int64_t>(), 0);
    EXPECT_LE(j["params_active_per_token"].get<int64_t>(), j["params_total"].get<int64_t>());
    bool any_moe = false;
    for (const auto& l : j["per_layer"]) any_moe |= l["kind"] == "moe";
    EXPECT_EQ(any_moe, f->is_moe()) << f->name();
    if (f->is_moe()) EXPECT_LT(j["params_active_per_token"].get<int64_t>(), j["params_total"].get<int64_t>());
    // Provenance in the metadata.
    auto c = Checkpoint::open(out);
    const auto& md = c.files()[0]->metadata();
    ASSERT_TRUE(md.count("moetool.command"));
    EXPECT_NE(md.at("moetool.command").find("synth"), std::string::npos);
    EXPECT_TRUE(md.count("moetool.version"));
    // The text report names the family and says it is consistent.
    RunResult t = run_moetool({"inspect", out});
    EXPECT_EQ(t.exit_code, 0);
    EXPECT_NE(t.out.find("family:           " + f->name()), std::string::npos) << t.out;
  }
}

TEST(Cli, SynthIsDeterministicAndSeeded) {
  TempDir d;
  ASSERT_EQ(run_moetool({"synth", "--family", "qwen2_moe", "-o", d.file("a"), "--seed", "1", "-q"}).exit_code, 0);
  ASSERT_EQ(run_moetool({"synth", "--family", "qwen2_moe", "-o", d.file("b"), "--seed", "1", "-q"}).exit_code, 0);
  ASSERT_EQ(run_moetool({"synth", "--family", "qwen2_moe", "-o", d.file("c"), "--seed", "2", "-q"}).exit_code, 0);
  // Same seed: identical tensor data (the command line, recorded in metadata, differs by path).
  auto a = Checkpoint::open(d.file("a")), b = Checkpoint::open(d.file("b")), c = Checkpoint::open(d.file("c"));
  ASSERT_EQ(a.names(), b.names());
  int differ = 0;
  for (const auto& n : a.names()) {
    Tensor x = a.get(n), y = b.get(n), z = c.get(n);
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::string(reinterpret_cast<char*>(x.data), x.nbytes()),
              std::string(reinterpret_cast<char*>(y.data), y.nbytes()))
        << n;
    differ += std::string(reinterpret_cast<char*>(x.data), x.nbytes()) !=
              std::string(reinterpret_cast<char*>(z.data), z.nbytes());
  }
  EXPECT_EQ(differ, static_cast<int>(a.names().size()));
  EXPECT_EQ(read_file(d.file("a/config.json")), read_file(d.file("b/config.json")));
  EXPECT_EQ(read_file(d.file("a/tokenizer.json")), read_file(d.file("b/tokenizer.json")));
}

TEST(Cli, ShardedSynthReadsBackIdentically) {
  TempDir d;
  ASSERT_EQ(run_moetool({"synth", "--family", "mixtral", "--preset", "small", "-o", d.file("one"), "-q"}).exit_code, 0);
  ASSERT_EQ(run_moetool({"synth", "--family", "mixtral", "--preset", "small", "-o", d.file("many"), "-q",
                         "--max-shard-size", "3MB"})
                .exit_code,
            0);
  auto one = Checkpoint::open(d.file("one")), many = Checkpoint::open(d.file("many"));
  EXPECT_EQ(one.files().size(), 1u);
  EXPECT_GT(many.files().size(), 3u);
  EXPECT_TRUE(file_exists(d.file("many/model.safetensors.index.json")));
  ASSERT_EQ(one.names().size(), many.names().size());
  for (const auto& n : one.names()) {
    Tensor x = one.get(n), y = many.get(n);
    ASSERT_EQ(x.shape, y.shape) << n;
    EXPECT_EQ(std::string(reinterpret_cast<char*>(x.data), x.nbytes()),
              std::string(reinterpret_cast<char*>(y.data), y.nbytes()))
        << n;
  }
  EXPECT_EQ(run_moetool({"inspect", d.file("many")}).exit_code, 0);
}

TEST(Cli, ExistingOutputIsNotClobbered) {
  TempDir d;
  ASSERT_EQ(run_moetool({"synth", "-o", d.file("m"), "-q"}).exit_code, 0);
  expect_one_error_line(run_moetool({"synth", "-o", d.file("m"), "-q"}), "--force", "existing output");
  EXPECT_EQ(run_moetool({"synth", "-o", d.file("m"), "-q", "--force", "--seed", "5"}).exit_code, 0);
  // Nothing staged is left behind.
  for (const auto& e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
}

TEST(Cli, InspectTinyStories) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  RunResult r = run_moetool({"inspect", testing::shared_path("models/tinystories-656k"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["family"], "llama");
  EXPECT_EQ(j["layers"], 2);
  EXPECT_EQ(j["hidden_size"], 128);
  EXPECT_EQ(j["heads"], 8);
  EXPECT_EQ(j["kv_heads"], 4);
  EXPECT_EQ(j["vocab_size"], 2048);
  EXPECT_EQ(j["params_total"], 656000);
  EXPECT_EQ(j["params_active_per_token"], 656000);
  EXPECT_EQ(j["num_tensors"], 20);
  EXPECT_TRUE(j["tied_embeddings"].get<bool>());
  EXPECT_TRUE(j["consistent"].get<bool>());
  RunResult t = run_moetool({"inspect", testing::shared_path("models/tinystories-656k")});
  EXPECT_NE(t.out.find("656,000 total"), std::string::npos) << t.out;
}

// Copies a tiny synth model and lets the caller damage it.
class CliBadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(run_moetool({"synth", "--family", "llama", "-o", dir_.file("base"), "-q"}).exit_code, 0);
  }
  std::string fresh(const std::string& name) {
    const std::string p = dir_.file(name);
    fs::copy(dir_.file("base"), p, fs::copy_options::recursive);
    return p;
  }
  nlohmann::json config(const std::string& p) { return nlohmann::json::parse(read_file(p + "/config.json")); }
  void set_config(const std::string& p, const nlohmann::json& j) { testing::write_bytes(p + "/config.json", j.dump()); }
  TempDir dir_;
};

TEST_F(CliBadInput, EachGivesExit2AndOneLine) {
  const std::string st = "/model.safetensors";
  int cases = 0;
  auto expect = [&](const std::string& p, const std::string& needle, const std::string& what) {
    ++cases;
    expect_one_error_line(run_moetool({"inspect", p}), needle, what);
  };
  {  // truncated file
    auto p = fresh("trunc");
    std::string b = read_file(p + st);
    testing::write_bytes(p + st, b.substr(0, b.size() / 2));
    expect(p, p + st, "truncated safetensors");
  }
  {  // header length past end
    auto p = fresh("hdrlen");
    std::string b = read_file(p + st);
    const uint64_t n = b.size() + 1000;  // under the 100 MB limit, past the end of the file
    for (int i = 0; i < 8; ++i) b[static_cast<size_t>(i)] = static_cast<char>(n >> (8 * i));
    testing::write_bytes(p + st, b);
    expect(p, "past the end", "header length past EOF");
  }
  {  // invalid JSON header
    auto p = fresh("badjson");
    std::string b = read_file(p + st);
    b[8 + 3] = '\x00';
    testing::write_bytes(p + st, b);
    expect(p, "JSON", "invalid JSON");
  }
  {  // unknown dtype (same length so offsets stay)
    auto p = fresh("dtype");
    std::string b = read_file(p + st);
    auto pos = b.find("\"F32\"");
    b.replace(pos, 5, "\"Q32\"");
    testing::write_bytes(p + st, b);
    expect(p, "unknown dtype 'Q32'", "unknown dtype");
  }
  {  // missing config
    auto p = fresh("nocfg");
    fs::remove(p + "/config.json");
    expect(p, "config.json", "missing config.json");
  }
  {  // config missing required key
    auto p = fresh("cfgkey");
    auto j = config(p);
    j.erase("hidden_size");
    set_config(p, j);
    expect(p, "hidden_size", "config missing key");
  }
  {  // config key of a wrong type
    auto p = fresh("cfgtype");
    auto j = config(p);
    j["num_hidden_layers"] = "two";
    set_config(p, j);
    expect(p, "num_hidden_layers", "config key wrong type");
  }
  {  // unsupported architecture
    auto p = fresh("arch");
    auto j = config(p);
    j["model_type"] = "gpt_bigcode";
    set_config(p, j);
    expect(p, "gpt_bigcode", "unsupported model_type");
  }
  {  // config invalid JSON
    auto p = fresh("cfgjson");
    testing::write_bytes(p + "/config.json", "{\"model_type\": ");
    expect(p, "config.json", "config invalid JSON");
  }
  {  // tensor shape contradicting the config
    auto p = fresh("shape");
    auto j = config(p);
    j["intermediate_size"] = j["intermediate_size"].get<int>() * 2;
    set_config(p, j);
    expect(p, "mlp.gate_proj.weight", "shape contradicts config");
  }
  {  // missing tensor (config says more layers)
    auto p = fresh("layers");
    auto j = config(p);
    j["num_hidden_layers"] = j["num_hidden_layers"].get<int>() + 1;
    set_config(p, j);
    expect(p, "missing tensor", "missing layer tensors");
  }
  {  // sharded index naming a missing file
    auto p = fresh("index");
    fs::rename(p + st, p + "/model-00001-of-00001.safetensors");
    testing::write_bytes(p + "/model.safetensors.index.json",
                         R"({"metadata":{},"weight_map":{"model.norm.weight":"model-00002-of-00002.safetensors"}})");
    expect(p, "missing file 'model-00002-of-00002.safetensors'", "index names missing shard");
  }
  {  // not a checkpoint at all
    expect(dir_.file("does-not-exist"), "does-not-exist", "missing path");
  }
  EXPECT_GE(cases, 13);
}

}  // namespace
}  // namespace moetool

namespace moetool {
namespace {

TEST(Cli, InspectGGUFAndItsBadInputs) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  const std::string good = testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf");
  RunResult r = run_moetool({"inspect", good, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["architecture"], "llama");
  EXPECT_EQ(j["num_tensors"], 20);
  EXPECT_EQ(j["params_total"], 656000);
  const std::string bytes = read_file(good);
  TempDir d;
  auto le32 = [](std::string& s, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) s[at + static_cast<size_t>(i)] = static_cast<char>(v >> (8 * i));
  };
  struct Case {
    std::string name, needle;
    std::string data;
  };
  std::vector<Case> cases;
  {
    std::string s = bytes;
    s[0] = 'X';
    cases.push_back({"magic", "magic", s});
  }
  {
    std::string s = bytes;
    le32(s, 4, 99);
    cases.push_back({"version", "version", s});
  }
  {
    std::string s = bytes;
    le32(s, 8, 0xffffff);  // tensor count far beyond what the file could hold
    cases.push_back({"count", "tensor", s});
  }
  cases.push_back({"truncated", "", bytes.substr(0, bytes.size() / 3)});
  for (const auto& c : cases) {
    const std::string p = d.file(c.name + ".gguf");
    testing::write_bytes(p, c.data);
    RunResult b = run_moetool({"inspect", p});
    expect_one_error_line(b, p, "gguf " + c.name);
    if (!c.needle.empty()) EXPECT_NE(b.err.find(c.needle), std::string::npos) << c.name << ": " << b.err;
  }
}

// synth → read → write with the same plan and metadata reproduces every file byte for byte, for
// every family and every writable dtype.
TEST(Cli, SynthRoundTripsByteForByteEveryFamilyAndDType) {
  TempDir d;
  for (const Family* f : all_families()) {
    for (const char* dt : {"f32", "f16", "bf16", "f64"}) {
      const std::string src = d.file(f->name() + "-" + dt);
      ASSERT_EQ(run_moetool({"synth", "--family", f->name(), "-o", src, "--dtype", dt, "-q"}).exit_code, 0);
      Checkpoint c = Checkpoint::open(src);
      const std::string dst = src + "-copy";
      fs::create_directories(dst);
      auto file = c.files()[0];
      std::vector<TensorSpec> specs;
      for (const auto& n : c.names()) specs.push_back({n, c.info(n).dtype, c.info(n).shape});
      {
        SafetensorsWriter w(dst, specs, file->metadata());
        for (const auto& n : c.names()) w.write(n, c.get(n));
        w.finish();
      }
      EXPECT_EQ(read_file(src + "/model.safetensors"), read_file(dst + "/model.safetensors")) << f->name() << " " << dt;
    }
  }
}

}  // namespace
}  // namespace moetool
