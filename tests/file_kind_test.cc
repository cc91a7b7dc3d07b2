// tests/file_kind_test.cc — files of the wrong kind (formats/file_kind.h): the first bytes of each
// kind are told apart (including safetensors headers whose length bytes look like pickle or JSON);
// `svd` given a GGUF file and a GGUF reader given a safetensors file name the kind they found
// and the kind they expected (exit 2, no output); a GGUF file is run by its magic whatever its name.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "core/fs.h"
#include "formats/file_kind.h"
#include "formats/gguf.h"
#include "formats/npy.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

std::string kind(const std::string& bytes) {
  return file_kind_of_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), std::min<size_t>(bytes.size(), 16),
                            bytes.size());
}

// A safetensors file whose header is `h` (padded to `len` bytes with spaces).
std::string safetensors_bytes(size_t len) {
  std::string h = "{\"__metadata__\":{}}";
  h.resize(len, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(len) >> (8 * i)) & 0xff);
  return out + h;
}

TEST(FileKind, FirstBytesTellTheKindsApart) {
  EXPECT_EQ(kind(std::string("GGUF\x03\0\0\0", 8) + std::string(32, '\0')), "GGUF");
  EXPECT_EQ(kind(safetensors_bytes(64)), "safetensors");
  // Header lengths whose low bytes read as pickle's PROTO 2 (0x0280) or as '{' (0x7b, 0x017b): still
  // safetensors.
  EXPECT_EQ(kind(safetensors_bytes(0x0280)), "safetensors");
  EXPECT_EQ(kind(safetensors_bytes(0x7b)), "safetensors");
  EXPECT_EQ(kind(safetensors_bytes(0x017b)), "safetensors");
  EXPECT_EQ(kind(std::string("\x93NUMPY\x01\0", 8) + std::string(64, ' ')), "NumPy .npy");
  EXPECT_EQ(kind(std::string("PK\x03\x04", 4) + std::string(30, '\0')), "ZIP (PyTorch .pt/.bin)");
  EXPECT_EQ(kind(std::string("\x80\x02}q\0(X", 7) + std::string(30, 'a')), "pickle (PyTorch .bin)");
  EXPECT_EQ(kind("{\"architectures\": [\"LlamaForCausalLM\"]}"), "JSON");
  EXPECT_EQ(kind("  [1, 2]"), "");  // '[' then a digit: not recognised (a number array is rare here)
  EXPECT_EQ(kind(""), "empty");
  EXPECT_EQ(kind("hello world, plain text"), "");
  // A safetensors header length that runs past the file: not safetensors (its parser reports it).
  std::string cut = safetensors_bytes(64).substr(0, 30);
  EXPECT_EQ(kind(cut), "");
}

TEST(FileKind, WrongKindsAreNamedAndGgufRunsByItsMagic) {
  testing::TempDir d;
  const std::string src = testing::synth_in(d, "llama", "llama", 3, "tiny");
  const std::string gguf = d.file("m.gguf");
  ASSERT_EQ(testing::run_moetool({"quantize", src, "-o", gguf, "--type", "f32", "-q"}).exit_code, 0);
  // svd reads Hugging Face checkpoints: a GGUF input is named as such (quantize requantizes one:
  // tests/gguf_requant_test.cc).
  testing::expect_bad_input({{{"svd", gguf, "-o", d.file("q"), "--ratio", "0.5", "--method", "plain"},
                              "a GGUF file (by its first bytes), expected a safetensors file"}},
                            {d.file("q")});
  // A GGUF named .bin runs as GGUF (by its magic, not its name).
  std::filesystem::copy_file(gguf, d.file("m.bin"));
  const auto a = testing::run_moetool({"logits", gguf, "--tokens", "1,5,9", "-o", d.file("a.npy")});
  const auto b = testing::run_moetool({"logits", d.file("m.bin"), "--tokens", "1,5,9", "-o", d.file("b.npy")});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(read_file(d.file("a.npy")), read_file(d.file("b.npy")));
  // A GGUF reader given a safetensors file names what it found.
  const std::string st = d.file("fake.gguf");
  testing::write_bytes(st, safetensors_bytes(64));
  const std::string e = testing::error_of([&] { GGUFFile::open(st); });
  EXPECT_NE(e.find("not a GGUF file"), std::string::npos) << e;
  EXPECT_NE(e.find("a safetensors file"), std::string::npos) << e;
}

}  // namespace
}  // namespace moetool
