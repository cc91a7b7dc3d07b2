// tests/run_test.cc — `moetool run RECIPE`: malformed recipes (each one line naming the file, line and
// key, exit 2, nothing written); --explain; a run killed with SIGKILL mid-step and resumed gives
// outputs byte-identical to an uninterrupted run; a run over three checkpoints where one is corrupt
// reports it and completes the other two; a missed gate exits 1 with the JUnit failure naming it.
// The model is the vendored TinyStories-656K (examples/models): no ../shared needed.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/fs.h"
#include "tests/test_util.h"

extern char** environ;

namespace moetool {
namespace {

namespace fs = std::filesystem;
using testing::run_moetool;
using testing::TempDir;

const std::string kModel = std::string(MOETOOL_SOURCE_DIR) + "/examples/models/tinystories-656k";
const std::string kCalib = std::string(MOETOOL_SOURCE_DIR) + "/examples/texts/stories-calib.txt";
const std::string kEval = std::string(MOETOOL_SOURCE_DIR) + "/examples/texts/stories-eval.txt";

// A recipe over the vendored model: factorize, prune, quantize, each verified.
std::string recipe_text(const std::string& model, const std::string& gate = "max_kld: 0.9") {
  return "name: t\nmodels: " + model + "\ntexts: {calib: " + kCalib + ", eval: " + kEval +
         "}\n"
         "steps:\n"
         "  - name: moe8\n"
         "    pass: convert factorize\n"
         "    options: {to: qwen2_moe, experts: 8, top-k: 4, shared-neurons: 33.34, split: coactivation,\n"
         "              router: fit, calib-text: \"${calib}\", ctx: 128}\n"
         "    verify: {text: eval, ctx: 128, chunks: 3, " + gate + "}\n"
         "  - name: prune6\n"
         "    pass: prune\n"
         "    options: {keep: 6, method: reconstruct, calib-text: \"${calib}\", ctx: 128}\n"
         "  - name: q\n"
         "    pass: quantize\n"
         "    options: {format: gptq, bits: 4, group-size: -1, calib-text: \"${calib}\", ctx: 128}\n"
         "    verify: {text: eval, ctx: 128, chunks: 3, max_kld: 2.0}\n";
}

// Every file under `dir` (relative name → bytes), without step.json and verify reports (they carry
// timings).
std::map<std::string, std::string> artifacts(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = fs::relative(e.path(), dir).string();
    if (!e.is_regular_file() || rel.find("/verify/") != std::string::npos || rel.ends_with("step.json") ||
        rel.rfind("summary", 0) == 0 || rel == "junit.xml")
      continue;
    out[rel] = read_file(e.path().string());
  }
  return out;
}

struct BadRecipe {
  std::string text;  // the recipe's body after the common head
  int line;          // the line the message must name
  std::string key;   // the key it must name
};

TEST(Run, MalformedRecipesAreOneLineNamingLineAndKeyAndWriteNothing) {
  TempDir d;
  const std::string head = "models: " + kModel + "\ntexts: {eval: " + kEval + "}\n";  // lines 1-2
  const std::vector<BadRecipe> cases = {
      {"steps: [unclosed\n", 4, "not valid YAML"},  // where the parser noticed: the end
      {"stepz: []\n", 3, "stepz"},
      {"name: x\n", 1, "steps"},
      {"steps:\n  - name: a\n", 4, "steps[0]"},                                           // no pass
      {"steps:\n  - name: a\n    pass: distill\n", 5, "steps[0].pass"},                   // unknown pass
      {"steps:\n  - {name: a, pass: prune}\n  - {name: a, pass: prune}\n", 5, "steps[1].name"},
      {"steps:\n  - {name: a, pass: quantize, from: z}\n", 4, "steps[0].from"},
      {"steps:\n  - name: a\n    pass: quantize\n    options:\n      kep: 6\n", 7, "steps[0].options.kep"},
      {"steps:\n  - name: a\n    pass: quantize\n    options:\n      bits: six\n", 7, "steps[0].options.bits"},
      {"steps:\n  - name: a\n    pass: quantize\n    options: {output: x}\n", 6, "steps[0].options.output"},
      {"steps:\n  - name: a\n    pass: quantize\n    verify:\n      text: eval\n      max_kld: low\n", 8,
       "steps[0].verify.max_kld"},
      {"steps:\n  - name: a\n    pass: quantize\n    verify: {text: eval, min_top1: 90}\n", 6, "steps[0].verify.min_top1"},
      {"steps:\n  - name: a\n    pass: quantize\n    verify: {text: nope}\n", 6, "steps[0].verify.text"},
      {"steps:\n  - name: a\n    pass: quantize\n    verify:\n      text: eval\n      max_kl: 1\n", 8,
       "steps[0].verify.max_kl"},
      {"steps:\n  - name: a\n    pass: quantize\n    options: {calib-text: \"${nope}\"}\n", 6,
       "steps[0].options.calib-text"},
      {"steps:\n  - name: a\n    pass: prune\n    options: {keep: 2}\n", 5, "steps[0].pass"},  // dense model
      {"steps:\n  - name: a\n    pass: quantize\n  - name: b\n    pass: prune\n    options: {keep: 2}\n", 7,
       "steps[1].pass"},  // after a GGUF output
      {"steps: {name: a}\n", 3, "steps"},
  };
  ASSERT_GE(cases.size(), 10u);
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = d.file("bad" + std::to_string(i) + ".yaml");
    testing::write_bytes(path, head + cases[i].text);
    const std::string out = d.file("out" + std::to_string(i));
    const auto r = run_moetool({"run", path, "-o", out});
    EXPECT_EQ(r.exit_code, 2) << i << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << i << ": " << r.err;
    const std::string where = path + ":" + std::to_string(cases[i].line) + ": ";
    EXPECT_NE(r.err.find(where), std::string::npos) << i << ": wanted '" << where << "' in " << r.err;
    EXPECT_NE(r.err.find(cases[i].key), std::string::npos) << i << ": wanted key " << cases[i].key << " in " << r.err;
    EXPECT_FALSE(fs::exists(out)) << i << ": something was written";
  }
}

TEST(Run, ExplainPrintsThePlanAndRunsNothing) {
  TempDir d;
  testing::write_bytes(d.file("r.yaml"), recipe_text(kModel));
  const auto r = run_moetool({"run", d.file("r.yaml"), "-o", d.file("out"), "--explain"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("moetool convert factorize <input> -o <output>/<model>/moe8/model --to=qwen2_moe"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("verify against the model on " + kEval + ", max_kld 0.9"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(d.file("out")));
}

// Starts `moetool run ...` in its own process group (so the test can kill it with its children).
pid_t spawn_run(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MOETOOL_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> a;
  for (auto& s : argv) a.push_back(s.data());
  a.push_back(nullptr);
  posix_spawnattr_t at;
  posix_spawnattr_init(&at);
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  EXPECT_EQ(posix_spawn(&pid, a[0], &fa, &at, a.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  return pid;
}

TEST(Run, ResumeAfterSigkillMidStepGivesTheUninterruptedOutputs) {
  TempDir d;
  testing::write_bytes(d.file("r.yaml"), recipe_text(kModel));
  const std::string out = d.file("out");
  auto r = run_moetool({"run", d.file("r.yaml"), "-o", out, "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const auto want = artifacts(out);
  ASSERT_GE(want.size(), 6u);  // three steps' checkpoints
  fs::remove_all(out);

  // The same run, killed (with the step it is running) as soon as the second step has started.
  const pid_t pid = spawn_run({"run", d.file("r.yaml"), "-o", out});
  const std::string second = out + "/tinystories-656k/prune6";
  const auto t0 = std::chrono::steady_clock::now();
  while (!fs::exists(second) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ASSERT_TRUE(fs::exists(second)) << "the second step never started";
  kill(-pid, SIGKILL);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st));
  EXPECT_FALSE(fs::exists(second + "/step.json")) << "killed mid-step: not complete";
  EXPECT_TRUE(fs::exists(out + "/tinystories-656k/moe8/step.json"));

  r = run_moetool({"run", d.file("r.yaml"), "-o", out, "--resume", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s["models"][0]["steps"][0]["status"], "resumed");
  EXPECT_EQ(s["models"][0]["steps"][1]["status"], "ok");
  EXPECT_EQ(s["models"][0]["steps"][2]["status"], "ok");
  const auto got = artifacts(out);
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, bytes] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_TRUE(got.at(name) == bytes) << name << " differs after the resume";
  }
  // A changed option is a different step: not reused.
  testing::write_bytes(d.file("r.yaml"), recipe_text(kModel, "max_kld: 0.8"));
  r = run_moetool({"run", d.file("r.yaml"), "-o", out, "--resume", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["models"][0]["steps"][0]["status"], "ok");
}

TEST(Run, ACorruptCheckpointIsReportedAndTheOthersComplete) {
  TempDir d;
  fs::create_directories(d.file("m"));
  for (const char* n : {"a", "b", "c"}) fs::copy(kModel, d.file(std::string("m/") + n));
  fs::resize_file(d.file("m/b/model.safetensors"), 1000);  // truncated
  const std::string recipe = "models: []\ntexts: {eval: " + kEval +
                             "}\nsteps:\n  - name: q8\n    pass: quantize\n"
                             "    options: {format: gptq, bits: 8, group-size: -1, method: rtn}\n"
                             "    verify: {text: eval, ctx: 128, chunks: 2, max_kld: 0.1}\n";
  testing::write_bytes(d.file("r.yaml"), recipe);
  const auto r = run_moetool({"run", d.file("r.yaml"), "-o", d.file("out"), "--models", d.file("m/*"), "--jobs", "2"});
  EXPECT_EQ(r.exit_code, 2) << r.err << r.out;  // bad input, reported after the others completed
  const auto s = nlohmann::json::parse(read_file(d.file("out/summary.json")));
  std::map<std::string, nlohmann::json> by;
  for (const auto& m : s["models"]) by[m["key"]] = m;
  ASSERT_TRUE(by.count("a") && by.count("b") && by.count("c")) << s.dump();
  EXPECT_NE(by["b"]["error"].get<std::string>().find("model.safetensors"), std::string::npos) << by["b"];
  for (const char* n : {"a", "c"}) {
    EXPECT_EQ(by[n]["error"], "") << n;
    ASSERT_EQ(by[n]["steps"].size(), 1u) << n;
    EXPECT_EQ(by[n]["steps"][0]["status"], "ok") << n;
    EXPECT_EQ(by[n]["steps"][0]["verdict"], "PASS") << n;
    EXPECT_TRUE(fs::exists(d.file(std::string("out/") + n + "/q8/model/config.json"))) << n;
  }
  EXPECT_NE(r.out.find("b: cannot be used"), std::string::npos) << r.out;
  EXPECT_NE(read_file(d.file("out/junit.xml")).find("classname=\"moetool.run.b\" name=\"model\""), std::string::npos);
}

// --jobs 2 within a memory budget smaller than one checkpoint: one model at a time, in order.
TEST(Run, MemoryBudgetHoldsBackTheSecondModel) {
  TempDir d;
  fs::create_directories(d.file("m"));
  for (const char* n : {"a", "c"}) fs::copy(kModel, d.file(std::string("m/") + n));
  testing::write_bytes(d.file("r.yaml"), "models: [m/a, m/c]\nsteps:\n  - name: q8\n    pass: quantize\n"
                                         "    options: {format: gptq, bits: 8, group-size: -1, method: rtn}\n");
  const auto r = run_moetool({"run", d.file("r.yaml"), "-o", d.file("out"), "--jobs", "2", "--memory-budget", "1MB"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Progress lines go to stderr in order: the first model finishes before the second starts.
  const size_t a_done = r.err.find("a] step 1/1 q8: ok"), c_start = r.err.find("c] step 1/1 q8 (quantize): running");
  ASSERT_NE(a_done, std::string::npos) << r.err;
  ASSERT_NE(c_start, std::string::npos) << r.err;
  const size_t first_done = std::min(a_done, r.err.find("c] step 1/1 q8: ok"));
  const size_t second_start = std::max(c_start, r.err.find("a] step 1/1 q8 (quantize): running"));
  EXPECT_LT(first_done, second_start) << r.err;
}

TEST(Run, AMissedGateExitsOneAndJunitNamesIt) {
  TempDir d;
  const std::string recipe = "models: " + kModel + "\ntexts: {eval: " + kEval +
                             "}\nsteps:\n  - name: q4\n    pass: quantize\n"
                             "    options: {format: gptq, bits: 4, group-size: -1, method: rtn}\n"
                             "    verify: {text: eval, ctx: 128, chunks: 2, max_kld: 0.000001, min_top1: 0.1}\n";
  testing::write_bytes(d.file("r.yaml"), recipe);
  const auto r = run_moetool({"run", d.file("r.yaml"), "-o", d.file("out")});
  EXPECT_EQ(r.exit_code, 1) << r.err << r.out;
  const std::string j = read_file(d.file("out/junit.xml"));
  EXPECT_NE(j.find("<testcase classname=\"moetool.run.tinystories-656k.q4\" name=\"max_kld\" time=\"0\">\n      <failure"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("<testcase classname=\"moetool.run.tinystories-656k.q4\" name=\"min_top1\" time=\"0\"/>"),
            std::string::npos)
      << j;
  EXPECT_NE(j.find("tests=\"2\" failures=\"1\""), std::string::npos) << j;
  const std::string md = read_file(d.file("out/summary.md"));
  EXPECT_NE(md.find("| tinystories-656k | q4 |"), std::string::npos) << md;
  EXPECT_NE(md.find("FAIL"), std::string::npos) << md;
  const std::string html = read_file(d.file("out/summary.html"));
  EXPECT_NE(html.find("href=\"tinystories-656k/q4/verify/report.html\""), std::string::npos);
  EXPECT_TRUE(fs::exists(d.file("out/tinystories-656k/q4/verify/report.html")));
  EXPECT_NE(html.find("<svg"), std::string::npos);
  // The page as a person sees it: headless Chromium renders the table and the plot, no console message.
  const testing::RunResult c = testing::check_html_in_chromium(d.file("out/summary.html"), d.file("shots"), {"--summary"});
  if (c.exit_code == 77) GTEST_SKIP() << c.out;
  EXPECT_EQ(c.exit_code, 0) << c.out << c.err;
}

}  // namespace
}  // namespace moetool
