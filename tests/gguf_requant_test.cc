// tests/gguf_requant_test.cc — `quantize` given a GGUF file (compress/quantize_requant.cc,
// formats/gguf_requant.h): from an F32 GGUF the output is the file the Hugging Face checkpoint gives,
// byte for byte (rtn, importance from a statistics file, importance calibrated on the GGUF itself
// (mixtral); a dense llama and a stacked-expert mixtral); from a quantized GGUF every re-encoded tensor equals
// ggml's quantizer applied to the dequantized source, unchanged types are copied, metadata is the
// source's with the file type replaced, and a warning says quality is lost; llama.cpp's own F16
// TinyStories file requantizes to what moetool's F16 export does; options that need a checkpoint
// are refused naming themselves.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "compress/quantize_job.h"
#include "core/fs.h"
#include "formats/ggml_quants.h"
#include "formats/gguf.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

const std::string kModel = std::string(MOETOOL_SOURCE_DIR) + "/examples/models/tinystories-656k";

quantize::Result quantize_to(const std::string& in, const std::string& out, const std::string& type,
                             const std::string& imatrix = "", const std::string& calib = "") {
  quantize::Options o;
  o.model = in;
  o.output = out;
  o.type = type;
  o.imatrix = imatrix;
  o.calib_text = calib;
  o.ctx = 64;
  o.chunks = 8;
  return quantize::run(o);
}

std::vector<uint8_t> tensor_bytes(const GGUFFile& f, const std::string& name) {
  const auto raw = f.raw_tensor(name);
  return {raw.bytes.begin(), raw.bytes.end()};
}

TEST(GGUFRequant, FromF32EqualsTheCheckpointPath) {
  testing::TempDir d;
  const std::string mixtral = testing::synth_in(d, "mx", "mixtral", 11, "tiny");
  const std::string text = testing::seeded_text(d, 5, 2500);
  for (const std::string& model : {kModel, mixtral}) {
    SCOPED_TRACE(model);
    const std::string f32 = d.file("f32.gguf");
    std::filesystem::remove(f32);
    quantize_to(model, f32, "f32");
    // Statistics for --imatrix, from the checkpoint.
    const std::string stats = d.file("stats.safetensors");
    std::filesystem::remove(stats);
    ASSERT_EQ(testing::run_moetool({"calibrate", model, "--text", text, "-o", stats, "--ctx", "64", "-q"}).exit_code, 0);
    struct Case {
      std::string type, imatrix, calib;
    };
    std::vector<Case> cases = {{"q8_0", "", ""}, {"q4_k_m", "", ""}, {"q4_0", stats, ""}};
    // Calibrating on the GGUF tokenizes the text with the GGUF's tokenizer, as llama.cpp's imatrix
    // does: the synthetic byte-level BPE one is exported as "gpt2" and tokenizes as the checkpoint's;
    // TinyStories' becomes llama.cpp's SPM-by-scores, which splits some words differently (other
    // chunks, other statistics), so that case is the mixtral's only.
    if (model == mixtral) cases.push_back({"q5_k_m", "", text});
    for (const Case& c : cases) {
      SCOPED_TRACE(c.type + (c.imatrix.empty() ? "" : " imatrix") + (c.calib.empty() ? "" : " calib"));
      const std::string a = d.file("direct.gguf"), b = d.file("requant.gguf");
      std::filesystem::remove(a);
      std::filesystem::remove(b);
      const auto ra = quantize_to(model, a, c.type, c.imatrix, c.calib);
      const auto rb = quantize_to(f32, b, c.type, c.imatrix, c.calib);
      EXPECT_TRUE(rb.warnings.empty());  // F32 is a lossless source
      ASSERT_TRUE(ra.gguf && rb.gguf);
      EXPECT_EQ(ra.gguf->bytes, rb.gguf->bytes);
      if (!c.imatrix.empty() || !c.calib.empty()) {  // importance was used, and identically
        bool any = false;
        for (const auto& t : rb.gguf->tensors) any = any || t.importance;
        EXPECT_TRUE(any);
      }
      // The whole file: same metadata (no provenance in library calls; the name is the source's,
      // which is the checkpoint directory's), same tensors, same bytes.
      EXPECT_TRUE(read_file(a) == read_file(b));
    }
  }
}

TEST(GGUFRequant, FromQuantizedReencodesTheDequantizedValues) {
  testing::TempDir d;
  const std::string mixtral = testing::synth_in(d, "mx", "mixtral", 12, "tiny");
  const std::string q8 = d.file("q8.gguf"), out = d.file("q4.gguf");
  ASSERT_EQ(testing::run_moetool({"quantize", mixtral, "-o", q8, "--type", "q8_0", "-q"}).exit_code, 0);
  // Through the command line: progress, the warning, exit 0; the router rule of the output head and
  // an override that keeps attn_q Q8_0 (copied, not requantized).
  const auto run = testing::run_moetool(
      {"quantize", q8, "-o", out, "--type", "q4_0", "--tensor-type", "attn_q=q8_0", "--name", "requantized"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("converting to q4_0"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("moetool: warning: requantizing"), std::string::npos) << run.err;
  EXPECT_NE(run.err.find("Q8_0 -> Q4_0"), std::string::npos) << run.err;

  const auto src = GGUFFile::open(q8);
  const auto got = GGUFFile::open(out);
  ASSERT_EQ(src->tensors().size(), got->tensors().size());
  int requantized = 0, copied = 0;
  for (size_t i = 0; i < src->tensors().size(); ++i) {
    const GGUFTensorInfo& s = src->tensors()[i];
    const GGUFTensorInfo& g = got->tensors()[i];
    SCOPED_TRACE(s.name);
    ASSERT_EQ(s.name, g.name);
    ASSERT_EQ(s.ne, g.ne);
    if (g.type == s.type) {
      EXPECT_TRUE(tensor_bytes(*src, s.name) == tensor_bytes(*got, g.name));
      ++copied;
      continue;
    }
    ASSERT_EQ(s.type, GGMLType::Q8_0);
    ASSERT_EQ(g.type, GGMLType::Q4_0);
    const int64_t cols = s.ne[0], rows = s.numel() / cols;
    std::vector<float> x(static_cast<size_t>(s.numel()));
    dequantize_rows(s.type, src->raw_tensor(s).bytes.data(), x.data(), rows, cols);
    std::vector<uint8_t> want(static_cast<size_t>(rows) * ggml_row_size(GGMLType::Q4_0, cols));
    quantize_rows(GGMLType::Q4_0, x.data(), want.data(), rows, cols);
    EXPECT_TRUE(want == tensor_bytes(*got, g.name));
    ++requantized;
  }
  EXPECT_GT(requantized, 4);  // attention o/k/v, stacked experts ...
  EXPECT_GT(copied, 4);       // norms, routers, attn_q kept Q8_0
  EXPECT_EQ(got->tensor_info("blk.0.attn_q.weight").type, GGMLType::Q8_0);
  EXPECT_EQ(got->tensor_info("blk.0.ffn_down_exps.weight").type, GGMLType::Q4_0);

  // Metadata: the source's keys in the source's order, the file type and name replaced.
  ASSERT_EQ(src->metadata().size(), got->metadata().size());
  for (size_t i = 0; i < src->metadata().size(); ++i) EXPECT_EQ(src->metadata()[i].key, got->metadata()[i].key);
  EXPECT_EQ(got->get_u32("general.file_type"), 2u);  // LLAMA_FTYPE_MOSTLY_Q4_0
  EXPECT_EQ(got->get_string("general.name"), "requantized");
  EXPECT_EQ(got->get_string_array("tokenizer.ggml.tokens"), src->get_string_array("tokenizer.ggml.tokens"));
  EXPECT_NE(got->get_string("general.moetool.command").find(" quantize "), std::string::npos);
  EXPECT_NE(got->get_string("general.moetool.command"), src->get_string_or("general.moetool.command", ""));

  // It runs.
  const auto lg = testing::run_moetool({"logits", out, "--tokens", "1,5,9,13", "-o", d.file("l.npy")});
  EXPECT_EQ(lg.exit_code, 0) << lg.err;
}

TEST(GGUFRequant, LlamaCppF16FileRequantizesAsOurF16Export) {
  MOETOOL_REQUIRE_SHARED_OR_SKIP();
  testing::TempDir d;
  const std::string theirs = testing::shared_path("models/tinystories-656k-gguf/TinyStories-656K.f16.gguf");
  const std::string ours = d.file("ours-f16.gguf");
  quantize_to(testing::shared_path("models/tinystories-656k"), ours, "f16");
  for (const char* type : {"q4_k_m", "q8_0"}) {
    SCOPED_TRACE(type);
    const std::string a = d.file(std::string("a-") + type + ".gguf"), b = d.file(std::string("b-") + type + ".gguf");
    const auto ra = quantize_to(theirs, a, type);
    quantize_to(ours, b, type);
    EXPECT_TRUE(ra.warnings.empty());  // F16 is a lossless source
    const auto fa = GGUFFile::open(a), fb = GGUFFile::open(b);
    ASSERT_EQ(fa->tensors().size(), 20u);
    ASSERT_EQ(fb->tensors().size(), 20u);
    int quantized = 0;
    for (const auto& t : fa->tensors()) {
      SCOPED_TRACE(t.name);
      EXPECT_EQ(t.type, fb->tensor_info(t.name).type);
      EXPECT_TRUE(tensor_bytes(*fa, t.name) == tensor_bytes(*fb, t.name));
      quantized += ggml_is_quantized(t.type);
    }
    EXPECT_EQ(quantized, 15);  // the 15 F16 weight matrices of the source
  }
}

TEST(GGUFRequant, OptionsThatNeedACheckpointAreRefused) {
  testing::TempDir d;
  const std::string gguf = d.file("in.gguf");
  quantize_to(kModel, gguf, "f32");
  const std::string out = d.file("out"), text = testing::seeded_text(d, 7, 300);
  testing::write_bytes(d.file("exists.gguf"), "x");
  testing::expect_bad_input(
      {
          {{"quantize", gguf, "-o", out, "--format", "gptq"}, "--format gptq: needs a Hugging Face checkpoint"},
          {{"quantize", gguf, "-o", out, "--format", "fp8"}, "--format fp8: needs a Hugging Face checkpoint"},
          {{"quantize", gguf, "-o", out, "--bpw", "4", "--calib-text", text}, "--bpw: needs a Hugging Face checkpoint"},
          {{"quantize", gguf, "-o", out, "--method", "gptq", "--calib-text", text},
           "--method gptq: needs a Hugging Face checkpoint"},
          {{"quantize", gguf, "-o", out, "--method", "autoround", "--calib-text", text},
           "--method autoround: needs a Hugging Face checkpoint"},
          {{"quantize", gguf, "-o", out, "--type", "q9_9"}, "--type: unknown GGUF file type 'q9_9'"},
          {{"quantize", gguf, "-o", d.file("exists.gguf")}, "already exists"},
      },
      {out});
}

}  // namespace
}  // namespace moetool
