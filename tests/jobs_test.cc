// tests/jobs_test.cc — the jobs' library entry points called directly (no binary) on synthetic
// models in a temporary directory: quantize::run to a GGUF file and as a GPTQ dry run, verify::run
// of a model against itself (KLD 0, top-1 1) and against its Q8_0 GGUF with a threshold it misses,
// calibration::run, generate::run and logits::run, and a bad option thrown as moetool::Error.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "compress/quantize_job.h"
#include "core/error.h"
#include "core/fs.h"
#include "engine/calibrate_job.h"
#include "engine/generate_job.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "tests/test_util.h"
#include "verify/verify_job.h"

namespace moetool {
namespace {

// A synthetic checkpoint of `family` and a text file to calibrate and evaluate on.
struct Fixture {
  testing::TempDir dir;
  std::string model = dir.file("m"), text = dir.file("text.txt");
  explicit Fixture(const std::string& family) {
    SynthOptions so;
    so.family = family;
    synth_model(model, so);
    std::string t;
    for (int i = 0; i < 40; ++i) t += "The quick brown fox jumps over the lazy dog number " + std::to_string(i) + ". ";
    testing::write_bytes(text, t);
  }
};

TEST(Jobs, QuantizeToGgufThenVerify) {
  Fixture f("mixtral");
  quantize::Options q;
  q.model = f.model;
  q.output = f.dir.file("m.gguf");
  std::vector<std::string> lines;
  q.progress = [&](const std::string& l) { lines.push_back(l); };
  const quantize::Result r = quantize::run(q);
  ASSERT_TRUE(r.gguf);
  EXPECT_TRUE(r.written);
  EXPECT_TRUE(file_exists(q.output));
  EXPECT_EQ(r.gguf->file_type.name, "q8_0");
  EXPECT_EQ(r.gguf->family, "mixtral");
  EXPECT_EQ(lines.size(), r.gguf->tensors.size());  // one progress line per tensor
  EXPECT_TRUE(r.importance.empty());
  EXPECT_FALSE(r.allocation);
  EXPECT_FALSE(r.gptq);

  verify::Options v;
  v.base = f.model;
  v.candidate = f.model;
  v.text = f.text;
  v.ctx = 64;
  v.thresholds.max_kld = 1e-9;
  v.thresholds.min_top1 = 1.0;
  const verify::Result same = verify::run(v);
  EXPECT_TRUE(same.missed.empty());
  EXPECT_GT(same.report.stats.n_tokens, 0);
  EXPECT_NEAR(same.report.stats.kld.value, 0.0, 1e-9);
  EXPECT_EQ(same.report.stats.same_top.value, 1.0);
  EXPECT_FALSE(same.report.layers.empty());  // hidden states compared

  v.candidate = q.output;
  v.thresholds.max_kld = 0.0;
  const verify::Result quantized = verify::run(v);
  EXPECT_GT(quantized.report.stats.kld.value, 0.0);
  ASSERT_FALSE(quantized.missed.empty());
  EXPECT_NE(quantized.missed[0].find("KLD"), std::string::npos) << quantized.missed[0];
}

TEST(Jobs, QuantizeGptqDryRunWritesNothing) {
  Fixture f("qwen2_moe");
  quantize::Options q;
  q.model = f.model;
  q.output = f.dir.file("gptq");
  q.format = "gptq";
  q.method = "rtn";
  q.group_size = 32;
  q.dry_run = true;
  const quantize::Result r = quantize::run(q);
  ASSERT_TRUE(r.gptq_sizes);
  EXPECT_FALSE(r.written);
  EXPECT_FALSE(r.gptq);
  EXPECT_EQ(r.gptq_sizes->method, "rtn");
  EXPECT_GT(r.gptq_sizes->params, 0);
  EXPECT_GT(r.gptq_sizes->bpw(), 4.0);  // 4 bits plus the scales
  EXPECT_LT(r.gptq_sizes->bpw(), 6.0);
  EXPECT_FALSE(file_exists(q.output));

  q.bits = 5;
  EXPECT_NE(testing::error_of([&] { quantize::run(q); }).find("--bits 5"), std::string::npos);
}

TEST(Jobs, CalibrateGenerateLogits) {
  Fixture f("qwen2_moe");
  calibration::Options c;
  c.model = f.model;
  c.text = f.text;
  c.output = f.dir.file("stats.safetensors");
  c.ctx = 64;
  const calibration::Result cr = calibration::run(c);
  EXPECT_TRUE(file_exists(c.output));
  EXPECT_EQ(cr.stats.ctx, 64);
  EXPECT_EQ(cr.stats.num_tokens, cr.stats.num_chunks * 64);
  EXPECT_EQ(CalibrationStats::load(c.output).num_tokens, cr.stats.num_tokens);

  generate::Options g;
  g.model = f.model;
  g.prompt = "The quick brown fox";
  g.tokens = 5;
  g.sampling.greedy = true;
  std::string text;
  const std::vector<int32_t> ids = generate::run(g, [&](const std::string& s) { text += s; });
  EXPECT_EQ(text.rfind(g.prompt, 0), 0u) << text;  // the prompt first, as given
  EXPECT_GT(ids.size(), 1u);

  logits::Options l;
  l.model = f.model;
  l.tokens = {1, 2, 3};
  l.output = f.dir.file("l.npy");
  const logits::Result lr = logits::run(l);
  EXPECT_EQ(lr.tokens, 3);
  EXPECT_EQ(lr.vocab, Model::open(f.model).config().vocab_size);
  EXPECT_TRUE(file_exists(l.output));
}

}  // namespace
}  // namespace moetool
