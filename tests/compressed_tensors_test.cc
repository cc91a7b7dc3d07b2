// tests/compressed_tensors_test.cc — compressed-tensors pack-quantized output (formats/
// compressed_tensors.h, compress/quantize_ct.h): the bit packing against a hand-built bit stream,
// every stored weight equal to the GPTQ output's of the same quantization (same q, same scales, only
// the layout differs), mixed widths and group-size fallbacks as groups naming modules exactly, every
// command reading it, and bad input refused naming the tensor or option. tests/tools/ct_check.py
// checks the same outputs with the `compressed-tensors` package and transformers (docs/quantize.md).
#include <gtest/gtest.h>

#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "compress/quantize_int.h"
#include "core/fs.h"
#include "engine/weights.h"
#include "formats/compressed_tensors.h"
#include "formats/model.h"
#include "formats/npy.h"
#include "formats/safetensors.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool::testing {
namespace {

// Element j of a row at bits [j·b, (j+1)·b) of the row's little-endian bit stream, value q + 2^(b−1).
TEST(CompressedTensors, PackingIsTheDenseLittleEndianBitStream) {
  for (int bits = 2; bits <= 8; ++bits)
    for (int64_t cols : {32, 37, 64, 101}) {
      const int64_t rows = 3;
      std::mt19937 g(static_cast<uint32_t>(bits * 1000 + cols));
      std::vector<int8_t> q(static_cast<size_t>(rows * cols));
      for (auto& v : q) v = static_cast<int8_t>(static_cast<int>(g() % (1u << bits)) - (1 << (bits - 1)));
      const auto packed = ct_pack(q.data(), rows, cols, bits);
      const int64_t pc = ct_packed_cols(cols, bits);
      ASSERT_EQ(pc, (cols * bits + 31) / 32);
      ASSERT_EQ(static_cast<int64_t>(packed.size()), rows * pc);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<bool> stream(static_cast<size_t>(pc * 32), false);
        for (int64_t j = 0; j < cols; ++j) {
          const int u = q[static_cast<size_t>(r * cols + j)] + (1 << (bits - 1));
          for (int b = 0; b < bits; ++b) stream[static_cast<size_t>(j * bits + b)] = (u >> b) & 1;
        }
        for (int64_t w = 0; w < pc; ++w) {
          uint32_t want = 0;
          for (int b = 0; b < 32; ++b) want |= static_cast<uint32_t>(stream[static_cast<size_t>(w * 32 + b)]) << b;
          ASSERT_EQ(static_cast<uint32_t>(packed[static_cast<size_t>(r * pc + w)]), want) << bits << " bits, col " << cols;
        }
      }
      EXPECT_EQ(ct_unpack(packed.data(), rows, cols, bits), q);
    }
}

// The same RTN quantization written as GPTQ and as compressed-tensors: every linear's weights, read
// back through the checker's weight source, are identical; float tensors too.
TEST(CompressedTensors, StoresExactlyTheGptqQuantization) {
  TempDir td;
  const std::string src = synth_in(td, "m", "qwen3_moe", 5, "tiny");
  const Model m = Model::open(src);
  IntQuantOptions o;
  o.method = "rtn";
  o.spec.bits = 4;
  o.spec.group_size = 32;
  o.bits[LinearKey{Role::ExpertDown, 1, 2}] = 8;  // a mixed width: its own group, named exactly
  o.bits[LinearKey{Role::Q, 0, -1}] = 2;
  quantize_to_gptq(m, td.file("gptq"), {}, o);
  o.compressed_tensors = true;
  const IntQuantReport rep = quantize_to_gptq(m, td.file("ct"), {}, o);
  const Model ct = Model::open(td.file("ct"));
  ASSERT_TRUE(ct.compressed_tensors());
  EXPECT_TRUE(ct.check().empty()) << ct.check().front().message();
  const auto& cfg = *ct.compressed_tensors();
  ASSERT_EQ(cfg.groups.size(), 3u);
  EXPECT_EQ(cfg.groups[0].targets, std::vector<std::string>{"Linear"});
  const std::string down = m.family().tensor_name(Role::ExpertDown, 1, 2);
  EXPECT_EQ(cfg.group_of(down.substr(0, down.size() - 7))->bits, 8);
  EXPECT_EQ(cfg.group_of("lm_head"), nullptr);
  auto a = open_weights(td.file("gptq")), b = open_weights(td.file("ct"));
  int64_t compared = 0;
  for (const auto& s : m.family().tensors(m.config())) {
    if (s.shape.size() != 2) continue;
    std::vector<float> x(static_cast<size_t>(numel(s.shape))), y(x.size());
    a->matrix(s.role, s.layer, s.expert)->to_dense(x.data());
    b->matrix(s.role, s.layer, s.expert)->to_dense(y.data());
    ASSERT_EQ(x, y) << s.name;
    ++compared;
  }
  EXPECT_GT(compared, 40);
  // Sizes: 4-bit packed words + one f32 scale per 32 weights (+ the 16-byte shape) for the int4 linears.
  for (const auto& l : rep.linears)
    if (l.bits == 4) EXPECT_EQ(l.bytes, static_cast<uint64_t>(l.rows * l.cols / 2 + l.rows * (l.cols / 32) * 4 + 16));
}

// A group size that does not divide a linear's inputs falls back to one scale per row: a "channel"
// group naming the module; the output runs and agrees with the original to int8 precision.
TEST(CompressedTensors, ChannelFallbackAndCommandsReadIt) {
  TempDir td;
  const std::string src = synth_in(td, "m", "mixtral", 9, "tiny");
  const auto r = run_moetool({"quantize", src, "-o", td.file("ct"), "--format", "compressed-tensors", "--method",
                              "rtn", "--bits", "8", "--group-size", "128", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["format"], "compressed-tensors");
  const Model ct = Model::open(td.file("ct"));
  EXPECT_TRUE(ct.check().empty());
  bool channel = false;
  for (const auto& g : ct.compressed_tensors()->groups) channel = channel || (g.group_size == -1 && g.targets[0] != "Linear");
  EXPECT_TRUE(channel) << "64-input linears with --group-size 128 should be a channel group";
  const auto toks = random_tokens(24, ct.config().vocab_size, 2);
  std::string ts;
  for (auto t : toks) ts += (ts.empty() ? "" : ",") + std::to_string(t);
  ASSERT_EQ(run_moetool({"logits", src, "--tokens", ts, "-o", td.file("a.npy")}).exit_code, 0);
  const auto l = run_moetool({"logits", td.file("ct"), "--tokens", ts, "-o", td.file("b.npy")});
  ASSERT_EQ(l.exit_code, 0) << l.err;
  std::vector<int64_t> sa, sb;
  const auto la = read_npy_f32(td.file("a.npy"), sa), lb = read_npy_f32(td.file("b.npy"), sb);
  ASSERT_EQ(sa, sb);
  // int8 with per-row scales: relative weight error ≈ 2^-8; the logits' mean KLD stays far below int4's.
  EXPECT_LT(mean_kld(la, lb, sa.back()), 1e-3);
  // A pass reads it and writes float.
  const auto p = run_moetool({"prune", td.file("ct"), "--keep", "2", "--method", "random", "--seed", "1",
                              "--protect-super-experts", "off", "-o", td.file("p"), "-q"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_FALSE(Model::open(td.file("p")).config().raw.contains("quantization_config"));
}

TEST(CompressedTensors, BadInputIsRefused) {
  TempDir td;
  const std::string src = synth_in(td, "m", "qwen3_moe", 5, "tiny"), out = td.file("o");
  expect_bad_input(
      {{{"quantize", src, "-o", out, "--format", "compressed-tensors", "--method", "rtn", "--asym"},
        "--asym is not supported with --format compressed-tensors"},
       {{"quantize", src, "-o", out, "--format", "compressed-tensors", "--method", "gptq", "--act-order",
         "--calib-text", seeded_text(td, 3)},
        "--act-order is not supported"}},
      {out});
  // A checkpoint missing one scale, and one whose config asks for asymmetric weights.
  ASSERT_EQ(run_moetool({"quantize", src, "-o", td.file("ct"), "--format", "compressed-tensors", "--method", "rtn",
                         "--group-size", "32", "-q"}).exit_code, 0);
  const Model m = Model::open(td.file("ct"));
  const std::string mod = "model.layers.1.mlp.experts.3.up_proj";
  const Checkpoint ck = Checkpoint::open(td.file("ct"));
  std::filesystem::create_directories(td.file("drop"));
  std::filesystem::copy(td.file("ct/config.json"), td.file("drop/config.json"));
  std::vector<TensorSpec> specs;
  for (const auto& n : ck.names())
    if (n != mod + ".weight_scale") specs.push_back({n, ck.info(n).dtype, ck.info(n).shape});
  {
    SafetensorsWriter w(td.file("drop"), specs, {{"format", "pt"}});
    for (const auto& sp : specs) w.write(sp.name, ck.get(sp.name).data, ck.get(sp.name).nbytes());
    w.finish();
  }
  const Model d = Model::open(td.file("drop"));
  ASSERT_FALSE(d.check().empty());
  EXPECT_NE(d.check()[0].message().find(mod + ".weight_scale' is missing"), std::string::npos) << d.check()[0].message();
  expect_bad_input({{{"logits", td.file("drop"), "--tokens", "1,2,3", "-o", td.file("x.npy")}, mod + ".weight_scale"}},
                   {td.file("x.npy")});
  auto cfg = nlohmann::json::parse(read_file(td.file("ct/config.json")));
  cfg["quantization_config"]["config_groups"]["group_0"]["weights"]["symmetric"] = false;
  write_bytes(td.file("ct/config.json"), cfg.dump());
  expect_bad_input({{{"inspect", td.file("ct")}, "expected symmetric int weights"}}, {});
}

}  // namespace
}  // namespace moetool::testing
