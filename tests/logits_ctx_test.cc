// tests/logits_ctx_test.cc — `moetool logits --text FILE --ctx N [--chunks K]` (engine/generate_job.h):
// one process writes [K·N, vocab], and each chunk's rows equal the logits of that chunk run alone
// (the chunks verify cuts: BOS, then N−1 text tokens); bad combinations exit 2 naming the option and
// leave no output. On the vendored TinyStories-656K (no ../shared needed).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/fs.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/npy.h"
#include "formats/tokenizer.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

const std::string kModel = std::string(MOETOOL_SOURCE_DIR) + "/examples/models/tinystories-656k";
const std::string kText = std::string(MOETOOL_SOURCE_DIR) + "/examples/texts/stories-eval.txt";

TEST(LogitsCtx, ChunksInOneProcessEqualEachChunkAlone) {
  testing::TempDir d;
  const auto r = testing::run_moetool({"logits", kModel, "--text", kText, "--ctx", "48", "--chunks", "3", "-o",
                                       d.file("all.npy")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<int64_t> shape;
  const std::vector<float> all = read_npy_f32(d.file("all.npy"), shape);
  Engine eng(open_weights(kModel));
  const int64_t V = eng.config().vocab_size;
  ASSERT_EQ(shape, (std::vector<int64_t>{3 * 48, V}));
  const auto chunks = make_chunks(*load_tokenizer(kModel), read_file(kText), 48, 3, true, kText);
  ASSERT_EQ(chunks.size(), 3u);
  for (size_t c = 0; c < chunks.size(); ++c) {
    EXPECT_EQ(chunks[c][0], load_tokenizer(kModel)->bos_id().value());
    const std::vector<float> lg = eng.logits(chunks[c]);
    ASSERT_EQ(lg.size(), size_t(48 * V));
    double worst = 0;
    for (size_t i = 0; i < lg.size(); ++i)
      worst = std::max(worst, double(std::fabs(all[c * lg.size() + i] - lg[i])));
    // The same engine code on the same tokens: measured identical (max |Δ| 0, also with 1 vs 2
    // threads; |logit| ≤ 19.8). 1e-4 (5e-6 of the largest logit) leaves room for a BLAS that sums
    // in another order, while a slip (no BOS, a shifted chunk) moves logits by O(1).
    EXPECT_LT(worst, 1e-4) << "chunk " << c;
  }
  // The same chunk through --tokens (one process per chunk) agrees too.
  std::string ids;
  for (int32_t t : chunks[1]) ids += (ids.empty() ? "" : ",") + std::to_string(t);
  ASSERT_EQ(testing::run_moetool({"logits", kModel, "--tokens", ids, "-o", d.file("one.npy")}).exit_code, 0);
  const std::vector<float> one = read_npy_f32(d.file("one.npy"), shape);
  ASSERT_EQ(shape, (std::vector<int64_t>{48, V}));
  for (size_t i = 0; i < one.size(); ++i) ASSERT_NEAR(one[i], all[one.size() + i], 1e-4) << i;
}

TEST(LogitsCtx, BadCombinationsExitTwoWithoutOutput) {
  testing::TempDir d;
  const std::string out = d.file("x.npy");
  testing::write_bytes(d.file("short.txt"), "Once upon a time.");
  testing::expect_bad_input(
      {{{"logits", kModel, "--tokens", "1,2,3", "--ctx", "8", "-o", out}, "give --text, not --tokens"},
       {{"logits", kModel, "--text", kText, "--chunks", "2", "-o", out}, "--chunks needs --ctx"},
       {{"logits", kModel, "--text", kText, "--ctx", "-4", "-o", out}, "--ctx -4"},
       {{"logits", kModel, "--text", kText, "--ctx", "100000", "-o", out}, "exceeds the model's context"},
       {{"logits", kModel, "--text", d.file("short.txt"), "--ctx", "512", "-o", out}, "short.txt"}},
      {out});
  for (const auto& e : std::filesystem::directory_iterator(d.file("")))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
}

}  // namespace
}  // namespace moetool
