// tests/test_util.h — helpers shared by the tests: the shared test-data directory (skipping with a
// visible message when it is absent, failing instead when MOETOOL_REQUIRE_SHARED=1), temporary
// directories, running the moetool binary, and seeded random data.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "kernels/device.h"
#include "engine/weights.h"

namespace moetool::testing {

// Path of ../shared (or $MOETOOL_SHARED); empty if absent.
std::string shared_dir();
// Path under shared_dir(), e.g. shared_path("models/tinystories-656k").
std::string shared_path(const std::string& rel);

// Use at the top of a test that needs ../shared: skips (or fails under MOETOOL_REQUIRE_SHARED=1).
#define MOETOOL_REQUIRE_SHARED_OR_SKIP()                                                             \
  do {                                                                                               \
    if (::moetool::testing::shared_dir().empty()) {                                                  \
      if (::moetool::testing::shared_required()) FAIL() << "MOETOOL_REQUIRE_SHARED=1 but ../shared " \
                                                           "(MOETOOL_SHARED) is missing";            \
      GTEST_SKIP() << "shared test data not found (set MOETOOL_SHARED); skipping";                   \
    }                                                                                                \
  } while (0)
bool shared_required();

// Use at the top of a test that needs a GPU: skips with a visible message where none is usable.
#define MOETOOL_REQUIRE_GPU_OR_SKIP()                                                                   \
  do {                                                                                                  \
    if (!::moetool::cuda_built() || ::moetool::cuda_device_count() == 0)                                \
      GTEST_SKIP() << "no usable GPU (" << ::moetool::cuda_device_summary() << "): CUDA test skipped";  \
  } while (0)

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the moetool binary with `args` (shell-quoted here), capturing stdout and stderr.
RunResult run_moetool(const std::vector<std::string>& args);
// Runs any program the same way (argv[0] looked up in PATH).
RunResult run_program(const std::vector<std::string>& argv);
// scripts/check_report_html.py FLAGS HTML OUT_DIR (headless Chromium): exit 0 checks passed, 1 a
// check failed, 77 no Chromium (the caller skips visibly).
RunResult check_html_in_chromium(const std::string& html, const std::string& out_dir,
                                 const std::vector<std::string>& flags);

// The message of the moetool::Error that f throws (fails the test, and returns "", if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no moetool::Error thrown";
  return "";
}

// Writes bytes to a file (test fixtures).
void write_bytes(const std::string& path, const std::string& bytes);

// Seeded random floats ~ N(0, 1).
std::vector<float> random_normal(size_t n, uint64_t seed);
// Seeded uniform token ids in [0, vocab).
std::vector<int32_t> random_tokens(int64_t n, int64_t vocab, uint64_t seed);

// Weights of a tiny synthetic checkpoint of `family` (`moetool synth --preset tiny`) written to
// td/"m".
std::shared_ptr<const WeightSource> synth_weights(const TempDir& td, const std::string& family, uint64_t seed,
                                                  DType dtype = DType::F32);

// The row generator of tests/tools/ggml_quant_oracle.py (lcg_rows), bit for bit: the quantizer
// oracles' inputs.
std::vector<float> lcg_rows(uint64_t seed, int64_t rows, int64_t cols);
// FNV-1a 64-bit digest of bytes (the oracles' digests).
uint64_t fnv1a64(const std::vector<uint8_t>& b);

}  // namespace moetool::testing
