// tests/test_util.cc — see test_util.h.
#include "tests/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "formats/synth.h"

namespace moetool::testing {

namespace fs = std::filesystem;

std::string shared_dir() {
  const char* env = std::getenv("MOETOOL_SHARED");
  std::string d = env && *env ? env : MOETOOL_DEFAULT_SHARED;
  std::error_code ec;
  if (fs::is_directory(fs::path(d) / "models", ec)) return d;
  return "";
}

std::string shared_path(const std::string& rel) { return shared_dir() + "/" + rel; }

bool shared_required() {
  const char* r = std::getenv("MOETOOL_REQUIRE_SHARED");
  return r && std::string(r) == "1";
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "moetool-test-XXXXXX").string();
  char* p = ::mkdtemp(tmpl.data());
  if (!p) throw std::runtime_error("mkdtemp failed");
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

static std::string quote(const std::string& a) {
  std::string q = "'";
  for (char c : a) q += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

RunResult run_moetool(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {MOETOOL_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

RunResult check_html_in_chromium(const std::string& html, const std::string& out_dir,
                                 const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {"python3", std::string(MOETOOL_SOURCE_DIR) + "/scripts/check_report_html.py"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  argv.push_back(html);
  argv.push_back(out_dir);
  return run_program(argv);
}

RunResult run_program(const std::vector<std::string>& argv) {
  TempDir tmp;
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + quote(a);
  cmd += " >" + quote(tmp.file("out")) + " 2>" + quote(tmp.file("err")) + " </dev/null";
  int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(tmp.file("out"));
  r.err = slurp(tmp.file("err"));
  return r;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<float> random_normal(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

std::vector<float> lcg_rows(uint64_t seed, int64_t rows, int64_t cols) {
  uint64_t state = seed;
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = 0.37f * std::ldexp(1.0f, static_cast<int>(r % 7) - 3);
    for (int64_t c = 0; c < cols; ++c) {
      int64_t s = 0;
      for (int k = 0; k < 4; ++k) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        s += static_cast<int64_t>(state >> 40);
      }
      const float f = static_cast<float>(s) * std::ldexp(1.0f, -24) - 2.0f;
      out[static_cast<size_t>(r * cols + c)] = f * scale;
    }
  }
  return out;
}

uint64_t fnv1a64(const std::vector<uint8_t>& b) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint8_t x : b) {
    h ^= x;
    h *= 0x100000001B3ull;
  }
  return h;
}

std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

std::shared_ptr<const WeightSource> synth_weights(const TempDir& td, const std::string& family, uint64_t seed,
                                                  DType dtype) {
  SynthOptions o;
  o.family = family;
  o.preset = "tiny";
  o.seed = seed;
  o.dtype = dtype;
  synth_model(td.file("m"), o);
  return open_weights(td.file("m"));
}

}  // namespace moetool::testing
