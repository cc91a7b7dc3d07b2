// tests/quant_dot_cli_test.cc — `--dot int8|float` on the commands that run the engine: on a Q8_0 and
// a Q4_K GGUF of the vendored TinyStories-656K, `logits --dot float` equals the library's float path,
// `--dot int8` (the default) is what the integer kernels give in-process and costs about what rounding
// the weights to Q8_0 costs (the same grid; bound below), and a bad value exits 2 naming the option.
// Tokens from the GGUF's own tokenizer (llama.cpp's SPM by scores, which splits some words the HF BPE
// merges do not).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/text.h"
#include "core/fs.h"
#include "formats/npy.h"
#include "formats/tokenizer.h"
#include "kernels/quant_dot.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

const std::string kModel = std::string(MOETOOL_SOURCE_DIR) + "/examples/models/tinystories-656k";
const std::string kText = std::string(MOETOOL_SOURCE_DIR) + "/examples/texts/stories-eval.txt";

struct DotModeGuard {
  QuantDot saved = quant_dot();
  ~DotModeGuard() { set_quant_dot(saved); }
};

// Mean KLD(p ‖ q) (testing::mean_kld) and top-1 agreement of two [rows, V] logit arrays.
void compare(const std::vector<float>& p, const std::vector<float>& q, int64_t V, double* kld, double* top1) {
  const int64_t rows = static_cast<int64_t>(p.size()) / V;
  double agree = 0;
  for (int64_t r = 0; r < rows; ++r)
    agree += std::max_element(p.begin() + r * V, p.begin() + (r + 1) * V) - (p.begin() + r * V) ==
             std::max_element(q.begin() + r * V, q.begin() + (r + 1) * V) - (q.begin() + r * V);
  *kld = testing::mean_kld(p, q, V);
  *top1 = agree / static_cast<double>(rows);
}

TEST(QuantDotCli, LogitsDotModes) {
  DotModeGuard guard;
  testing::TempDir d;
  double q8_weight_kld = 0;
  for (const char* type : {"q8_0", "q4_k"}) {
    SCOPED_TRACE(type);
    const std::string gguf = d.file(std::string(type) + ".gguf");
    auto r = testing::run_moetool({"quantize", kModel, "-o", gguf, "--format", "gguf", "--type", type, "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    r = testing::run_moetool({"logits", gguf, "--text", kText, "--ctx", "64", "--chunks", "2", "-o", d.file("i.npy")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("int8 dot"), std::string::npos) << r.err;
    r = testing::run_moetool(
        {"logits", gguf, "--text", kText, "--ctx", "64", "--chunks", "2", "--dot", "float", "-o", d.file("f.npy")});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::vector<int64_t> shape;
    const auto li = read_npy_f32(d.file("i.npy"), shape);
    const auto lf = read_npy_f32(d.file("f.npy"), shape);
    const int64_t V = shape[1];

    // In-process, each mode: the CLI ran the same arithmetic (same engine code, same tokens: measured
    // identical; 1e-4 leaves room for a BLAS summing in another order, see logits_ctx_test.cc).
    Engine eng(open_weights(gguf));
    const auto chunks = make_chunks(*load_tokenizer(gguf), read_file(kText), 64, 2, true, kText);
    if (q8_weight_kld == 0) {  // the first type is q8_0: its float-path logits against the original's
      set_quant_dot(QuantDot::Float);
      Engine orig(open_weights(kModel));
      std::vector<float> lo;
      for (const auto& c : chunks) {
        const auto lg = orig.logits(c);
        lo.insert(lo.end(), lg.begin(), lg.end());
      }
      double t1;
      compare(lo, lf, V, &q8_weight_kld, &t1);
    }
    for (QuantDot mode : {QuantDot::Float, QuantDot::Int8}) {
      set_quant_dot(mode);
      const auto& cli = mode == QuantDot::Int8 ? li : lf;
      for (size_t c = 0; c < chunks.size(); ++c) {
        const auto lg = eng.logits(chunks[c]);
        for (size_t i = 0; i < lg.size(); ++i)
          ASSERT_NEAR(cli[c * lg.size() + i], lg[i], 1e-4) << quant_dot_name(mode) << " chunk " << c << " " << i;
      }
    }
    // int8 against float: the activations' rounding only. Yardstick: what rounding the *weights* to
    // Q8_0 costs (the original model against its Q8_0 GGUF on the float path) — the activations are
    // rounded to the same grid (8 bits per 32, step max/127), so each output's error has the same form
    // (Σ w·e_x against Σ e_w·x) and, on this model, size: measured KLD 6.0e-4 / 5.8e-4 for int8
    // against 3.9e-4 for Q8_0 weights; top-1 97.7 % / 95.3 %. Within 3× the yardstick passes; a broken
    // kernel (a wrong scale or lane: KLD ≫ 0.1) or unrounded activations (KLD 0) fail.
    double kld, top1;
    compare(lf, li, V, &kld, &top1);
    std::printf("%s: int8 vs float dot: KLD %.3g, top-1 %.4f; Q8_0 weights vs original: KLD %.3g\n", type, kld,
                top1, q8_weight_kld);
    EXPECT_GT(kld, 0.0) << "int8 gave the float path's logits: not the integer kernels";
    EXPECT_LT(kld, 3 * q8_weight_kld);
    EXPECT_GE(top1, 0.9);
  }
  const auto r = testing::run_moetool({"logits", kModel, "--text", kText, "--dot", "int4", "-o", d.file("x.npy")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--dot"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace moetool
