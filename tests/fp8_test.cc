// tests/fp8_test.cc — block FP8 (formats/fp8.h, compress/quantize_fp8.h): dequantization against a
// float64 reference (grids that do and do not divide the shape, f32 and bf16 scales), the rounding
// bound of the quantizer, `quantize --format fp8` byte-identical to transformers' own FP8 quantizer
// on the golden qwen3_moe_fp8_block (its f32/ source; tests/golden_test.cc checks moetool's logits of
// the FP8 checkpoint against transformers' CPU FP8 loader), passes reading FP8 and writing float,
// and bad input refused with one line naming the tensor or option.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "compress/quantize_fp8.h"
#include "core/fs.h"
#include "formats/checkpoint.h"
#include "formats/fp8.h"
#include "formats/model.h"
#include "formats/safetensors.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool::testing {
namespace {

const std::string kGolden = std::string(MOETOOL_SOURCE_DIR) + "/tests/data/golden/qwen3_moe_fp8_block";

// Random E4M3 codes (no NaN) and scales; the reference multiplies in float64, indexing blocks by hand.
TEST(Fp8, DequantizeMatchesFloat64Reference) {
  for (auto [rows, cols, br, bc] : std::vector<std::array<int64_t, 4>>{{64, 48, 16, 16}, {50, 37, 16, 8}, {7, 300, 128, 128}})
    for (DType sdt : {DType::F32, DType::BF16}) {
      std::mt19937 g(static_cast<uint32_t>(rows * 131 + cols + (sdt == DType::BF16)));
      Tensor q = Tensor::zeros(DType::F8_E4M3, {rows, cols});
      for (int64_t i = 0; i < rows * cols; ++i) {
        uint8_t c = static_cast<uint8_t>(g() & 0xff);
        if ((c & 0x7f) == 0x7f) c ^= 1;  // NaN codes -> a finite neighbour
        q.data[i] = c;
      }
      const Shape gs = fp8_scale_shape(rows, cols, br, bc);
      ASSERT_EQ(gs, (Shape{(rows + br - 1) / br, (cols + bc - 1) / bc}));
      const auto sv = random_normal(static_cast<size_t>(numel(gs)), rows + cols);
      Tensor s32 = Tensor::zeros(DType::F32, gs);
      for (size_t i = 0; i < sv.size(); ++i) s32.as<float>()[i] = std::ldexp(std::fabs(sv[i]) + 0.1f, -8);
      const Tensor s = sdt == DType::F32 ? s32 : s32.to(DType::BF16);
      const std::vector<float> sf = s.to_f32();
      const Tensor d = fp8_dequantize(q, s, br, bc, "t");
      ASSERT_EQ(d.dtype, DType::F32);
      ASSERT_EQ(d.shape, q.shape);
      int64_t bad = 0;
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
          const double want = static_cast<double>(f8e4m3_to_f32(q.data[i * cols + j])) * sf[(i / br) * gs[1] + j / bc];
          // 4 significant bits times 8 (bf16) or 24: the product is exact in f32 only for bf16 scales;
          // for f32 ones it is the correctly rounded product (half an ulp).
          const double tol = sdt == DType::BF16 ? 0.0 : std::fabs(want) * std::ldexp(1.0, -24);
          bad += std::fabs(d.as<float>()[i * cols + j] - want) > tol;
        }
      EXPECT_EQ(bad, 0) << rows << "x" << cols << " blocks " << br << "x" << bc << " " << dtype_name(sdt);
    }
}

TEST(Fp8, DequantizeRefusesAWrongGrid) {
  Tensor q = Tensor::zeros(DType::F8_E4M3, {32, 32});
  const std::string e = error_of([&] { fp8_dequantize(q, Tensor::zeros(DType::F32, {2, 3}), 16, 16, "ck: 'w'"); });
  EXPECT_NE(e.find("ck: 'w': its scales: expected shape [2, 2]"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { fp8_dequantize(Tensor::zeros(DType::F32, {32, 32}), q, 16, 16, "x"); }).find("F8_E4M3"),
            std::string::npos);
}

// Every weight within half an E4M3 step of its value: |w − ŵ| ≤ 2^-4·|w| for normals, and ≤ 2^-10·s
// (half the subnormal spacing 2^-9, in block units) below; the block maximum maps to 448 exactly.
TEST(Fp8, QuantizeRoundsEveryWeightToTheNearestStep) {
  const int64_t rows = 40, cols = 72, br = 16, bc = 32;
  std::vector<float> W = random_normal(static_cast<size_t>(rows * cols), 5);
  for (size_t i = 0; i < W.size(); i += 97) W[i] *= 1e-4f;  // subnormal territory
  for (int64_t j = 0; j < 32; ++j) W[static_cast<size_t>(j)] = 0.0f;  // part of a block zero
  const FP8Quantized q = fp8_quantize(W.data(), rows, cols, br, bc);
  ASSERT_EQ(q.scale.size(), 3u * 3u);
  int64_t bad = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      const float s = q.scale[static_cast<size_t>((i / br) * 3 + j / bc)];
      const double w = W[static_cast<size_t>(i * cols + j)];
      const double v = static_cast<double>(f8e4m3_to_f32(q.q[static_cast<size_t>(i * cols + j)])) * s;
      const double bound = std::max(std::ldexp(std::fabs(w), -4), std::ldexp(static_cast<double>(s), -10)) * (1 + 1e-6);
      bad += !(std::fabs(v - w) <= bound);
    }
  EXPECT_EQ(bad, 0);
  // An all-zero block: scale 1, codes 0.
  std::vector<float> Z(16 * 16, 0.0f);
  const FP8Quantized z = fp8_quantize(Z.data(), 16, 16, 16, 16);
  EXPECT_EQ(z.scale[0], 1.0f);
  for (uint8_t c : z.q) EXPECT_EQ(c, 0);
}

// moetool's writer on the f32 source of the golden FP8 model gives exactly the tensors transformers'
// Fp8Quantize wrote (FP8 codes, scales, and the float tensors), and the same modules_to_not_convert.
TEST(Fp8, QuantizeMatchesTransformersBytes) {
  TempDir td;
  const Model src = Model::open(kGolden + "/f32");
  FP8QuantOptions o;
  o.block_rows = o.block_cols = 16;
  const FP8QuantReport rep = quantize_to_fp8(src, td.file("out"), o);
  EXPECT_TRUE(rep.warnings.empty());
  const Checkpoint ours = Checkpoint::open(td.file("out")), ref = Checkpoint::open(kGolden);
  EXPECT_EQ(std::set<std::string>(ours.names().begin(), ours.names().end()),
            std::set<std::string>(ref.names().begin(), ref.names().end()));
  int64_t fp8 = 0;
  for (const auto& n : ref.names()) {
    const Tensor a = ours.get(n), b = ref.get(n);
    ASSERT_EQ(a.dtype, b.dtype) << n;
    ASSERT_EQ(a.shape, b.shape) << n;
    EXPECT_EQ(0, std::memcmp(a.data, b.data, a.nbytes())) << n << " differs from transformers' bytes";
    fp8 += a.dtype == DType::F8_E4M3;
  }
  EXPECT_EQ(fp8, 56);
  const auto qo = *fp8_config_of(ours.config_json(), "ours"), qr = *fp8_config_of(ref.config_json(), "ref");
  EXPECT_EQ(qo.modules_to_not_convert, qr.modules_to_not_convert);
  EXPECT_EQ(qo.block_rows, 16);
  EXPECT_LT(rep.max_rel_error, 0.04);  // E4M3: ≤ 2^-4 per weight, ≈ 2.7 % RMS on Gaussian weights
  EXPECT_GT(rep.max_rel_error, 0.005);
}

// A pass over an FP8 checkpoint reads it dequantized and writes float in the model's dtype, without
// scales or quantization_config: `prune --method random` keeps experts equal to the dequantized ones
// (the golden test checks the engine's logits of the FP8 checkpoint itself against transformers).
TEST(Fp8, PassesReadFp8AndWriteFloat) {
  TempDir td;
  const Model m = Model::open(kGolden);
  ASSERT_TRUE(m.fp8());
  EXPECT_TRUE(m.check().empty()) << m.check().front().message();
  EXPECT_TRUE(m.dequantized_on_read(Role::ExpertDown, 1, 3));
  EXPECT_FALSE(m.dequantized_on_read(Role::Router, 1));
  const auto r = run_moetool({"prune", kGolden, "--keep", "6", "--method", "random", "--seed", "1",
                              "--protect-super-experts", "off", "-o", td.file("p"), "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Model p = Model::open(td.file("p"));
  EXPECT_FALSE(p.fp8());
  EXPECT_FALSE(p.config().raw.contains("quantization_config"));
  for (const auto& n : p.checkpoint().names()) EXPECT_EQ(n.find("scale_inv"), std::string::npos) << n;
  const Tensor a = p.weight(Role::Q, 0), b = m.weight(Role::Q, 0);
  ASSERT_EQ(a.dtype, DType::F32);  // the golden config says torch_dtype float32
  EXPECT_EQ(a.to_f32(), b.to_f32());
  // Every kept expert is one of the source's, dequantized.
  for (int64_t e = 0; e < 6; ++e) {
    const auto got = p.weight(Role::ExpertDown, 1, e).to_f32();
    bool found = false;
    for (int64_t k = 0; k < 8 && !found; ++k) found = got == m.weight(Role::ExpertDown, 1, k).to_f32();
    EXPECT_TRUE(found) << "expert " << e;
  }
}

// has() answers presence from the names alone: true for a stored FP8 weight (which find() would
// dequantize) and for float ones, false for roles, experts and layers the checkpoint does not hold.
TEST(Fp8, HasAnswersPresenceWithoutReading) {
  const Model m = Model::open(kGolden);
  ASSERT_TRUE(m.dequantized_on_read(Role::ExpertDown, 1, 3));
  struct Case { Role r; int64_t layer, expert; bool present; };
  for (const Case& c : std::vector<Case>{{Role::ExpertDown, 1, 3, true}, {Role::Q, 0, -1, true},
                                         {Role::Router, 1, -1, true}, {Role::Embed, -1, -1, true},
                                         {Role::LmHead, -1, -1, true}, {Role::ExpertDown, 1, 99, false},
                                         {Role::Q, 7, -1, false}, {Role::QBias, 0, -1, false},
                                         {Role::SharedDown, 0, -1, false}}) {
    EXPECT_EQ(m.has(c.r, c.layer, c.expert), c.present) << role_name(c.r) << " " << c.layer << " " << c.expert;
    EXPECT_EQ(m.find(c.r, c.layer, c.expert).has_value(), c.present) << role_name(c.r);
  }
}

// The golden FP8 checkpoint rewritten without one scale (`drop`) or with another block size.
std::string broken_copy(const TempDir& td, const std::string& drop, const std::string& block) {
  const std::string d = td.file(drop.empty() ? "block" : "drop");
  std::filesystem::create_directories(d);
  auto cfg = nlohmann::json::parse(read_file(kGolden + "/config.json"));
  if (!block.empty()) cfg["quantization_config"]["weight_block_size"] = nlohmann::json::parse(block);
  write_bytes(d + "/config.json", cfg.dump(2));
  const Checkpoint ck = Checkpoint::open(kGolden);
  std::vector<TensorSpec> specs;
  for (const auto& n : ck.names())
    if (n != drop) specs.push_back({n, ck.info(n).dtype, ck.info(n).shape});
  SafetensorsWriter w(d, specs, {{"format", "pt"}});
  for (const auto& sp : specs) {
    const Tensor t = ck.get(sp.name);
    w.write(sp.name, t.data, t.nbytes());
  }
  w.finish();
  return d;
}

TEST(Fp8, BadCheckpointsAreRefusedNamingTheTensor) {
  TempDir td;
  const std::string w = "model.layers.0.mlp.experts.2.up_proj.weight";
  const std::string drop = broken_copy(td, w + "_scale_inv", "");
  const Model m = Model::open(drop);
  const auto inc = m.check();
  ASSERT_EQ(inc.size(), 1u);
  EXPECT_EQ(inc[0].tensor, w + "_scale_inv");
  EXPECT_NE(error_of([&] { m.weight(Role::ExpertUp, 0, 2); }).find("'" + w + "' is F8_E4M3 but '" + w + "_scale_inv'"),
            std::string::npos);
  const std::string block = broken_copy(td, "", "[8, 8]");
  EXPECT_FALSE(Model::open(block).check().empty());
  expect_bad_input({{{"logits", drop, "--tokens", "1,2,3", "-o", td.file("a.npy")}, w + "_scale_inv"},
                    {{"logits", block, "--tokens", "1,2,3", "-o", td.file("b.npy")}, "its scales: expected shape"}},
                   {td.file("a.npy"), td.file("b.npy")});
  auto bad = nlohmann::json::parse(read_file(kGolden + "/config.json"));
  bad["quantization_config"]["weight_block_size"] = {128};
  write_bytes(block + "/config.json", bad.dump());
  expect_bad_input({{{"inspect", block}, "weight_block_size is [128], expected [rows, cols]"}}, {});
}

TEST(Fp8, BadOptionsAreRefused) {
  TempDir td;
  const std::string src = kGolden + "/f32", out = td.file("o");
  expect_bad_input(
      {{{"quantize", src, "-o", out, "--format", "fp8", "--fp8-block", "16"}, "--fp8-block '16': expected ROWSxCOLS"},
       {{"quantize", src, "-o", out, "--format", "fp8", "--fp8-block", "0x16"}, "--fp8-block '0x16'"},
       {{"quantize", src, "-o", out, "--format", "fp8", "--bits", "8"}, "--bits does not apply to --format fp8"},
       {{"quantize", src, "-o", out, "--format", "gptq", "--fp8-block", "16x16"}, "--fp8-block applies to --format fp8"},
       {{"quantize", src, "-o", out, "--format", "fp8", "--fp8-block", "16x16", "--skip", "experts\\.3\\."},
        "store a layer's experts as one module"}},
      {out});
}

// --fp8-channel: compressed-tensors float-quantized. Every FP8 linear has one F32 scale per output row
// whose largest weight maps to ±448; reading gives code × scale exactly; the rounding bound holds per
// row; routers and the output head are in `ignore`; broken scales are refused naming the tensor.
TEST(Fp8, ChannelScalesAsCompressedTensorsFloatQuantized) {
  TempDir td;
  const std::string src = kGolden + "/f32", out = td.file("c");
  auto r = run_moetool({"quantize", src, "-o", out, "--format", "fp8", "--fp8-channel", "--json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["scales"], "channel");
  const Model m = Model::open(out), f = Model::open(src);
  EXPECT_TRUE(m.check().empty()) << m.check().front().message();
  const auto& q = m.config().raw["quantization_config"];
  EXPECT_EQ(q["quant_method"], "compressed-tensors");
  EXPECT_EQ(q["format"], "float-quantized");
  EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["type"], "float");
  EXPECT_EQ(q["config_groups"]["group_0"]["weights"]["strategy"], "channel");
  const auto ignore = q["ignore"].get<std::vector<std::string>>();
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "lm_head"), ignore.end());
  EXPECT_NE(std::find(ignore.begin(), ignore.end(), "model.layers.0.mlp.gate"), ignore.end());
  int linears = 0;
  for (const auto& s : m.family().tensors(m.config())) {
    if (s.shape.size() != 2 || m.checkpoint().info(s.name).dtype != DType::F8_E4M3) continue;
    ++linears;
    const std::string sn = s.name.substr(0, s.name.size() - 7) + ".weight_scale";
    const Tensor code = m.checkpoint().get(s.name), scale = m.checkpoint().get(sn);
    ASSERT_EQ(scale.shape, (Shape{s.shape[0], 1})) << sn;
    ASSERT_EQ(scale.dtype, DType::F32) << sn;
    const std::vector<float> got = m.weight(s.role, s.layer, s.expert).to_f32();
    const std::vector<float> w = f.weight(s.role, s.layer, s.expert).to_f32();
    const uint8_t* c = code.as<uint8_t>();
    for (int64_t i = 0; i < s.shape[0]; ++i) {
      double num = 0, den = 0;
      float cmax = 0;
      for (int64_t j = 0; j < s.shape[1]; ++j) {
        const size_t k = static_cast<size_t>(i * s.shape[1] + j);
        ASSERT_EQ(got[k], f8e4m3_to_f32(c[k]) * scale.as<float>()[i]) << s.name;
        cmax = std::max(cmax, std::abs(f8e4m3_to_f32(c[k])));
        num += (static_cast<double>(got[k]) - w[k]) * (got[k] - w[k]);
        den += static_cast<double>(w[k]) * w[k];
      }
      EXPECT_EQ(cmax, 448.0f) << s.name << " row " << i;
      // E4M3 keeps 3 mantissa bits: half a step is 2^-4 of the value (normal range).
      EXPECT_LE(std::sqrt(num / den), 0.0625) << s.name << " row " << i;
    }
  }
  EXPECT_GT(linears, 10);
  // A missing scale and a wrong-shaped one are refused, naming the tensor.
  const std::string w0 = "model.layers.0.mlp.experts.2.up_proj.weight_scale";
  auto copy_without = [&](const std::string& dir, bool reshape) {
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(out + "/config.json", dir + "/config.json");
    const Checkpoint ck = Checkpoint::open(out);
    std::vector<TensorSpec> specs;
    for (const auto& n : ck.names())
      if (n != w0) specs.push_back({n, ck.info(n).dtype, ck.info(n).shape});
      else if (reshape) specs.push_back({n, DType::F32, {ck.info(n).shape[0] / 2, 2}});
    SafetensorsWriter w(dir, specs, {{"format", "pt"}});
    for (const auto& sp : specs) {
      const Tensor t = ck.get(sp.name);
      w.write(sp.name, t.data, t.nbytes());
    }
    w.finish();
    return dir;
  };
  const std::string drop = copy_without(td.file("drop"), false), bad = copy_without(td.file("bad"), true);
  EXPECT_FALSE(Model::open(drop).check().empty());
  EXPECT_FALSE(Model::open(bad).check().empty());
  expect_bad_input({{{"logits", drop, "--tokens", "1,2,3", "-o", td.file("a.npy")}, w0},
                    {{"logits", bad, "--tokens", "1,2,3", "-o", td.file("b.npy")}, "its scales: expected shape"},
                    {{"quantize", src, "-o", td.file("x"), "--format", "fp8", "--fp8-channel", "--fp8-block", "64x64"},
                     "--fp8-channel and --fp8-block"},
                    {{"quantize", src, "-o", td.file("x"), "--format", "gptq", "--fp8-channel"},
                     "--fp8-channel applies to --format fp8"}},
                   {td.file("a.npy"), td.file("b.npy"), td.file("x")});
}

TEST(Fp8, DryRunPlansWithoutWriting) {
  TempDir td;
  const auto r = run_moetool({"quantize", kGolden + "/f32", "-o", td.file("o"), "--format", "fp8", "--fp8-block",
                              "32x32", "--dry-run", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(std::filesystem::exists(td.file("o")));
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "fp8");
  EXPECT_FALSE(j["written"].get<bool>());
  int fp8 = 0, kept = 0;
  for (const auto& l : j["linears"]) (l["fp8"].get<bool>() ? fp8 : kept) += 1;
  // 32x32 blocks: the experts ([16, 32], [32, 16]) stay float, attention ([64, 32], [32, 32], [32, 64]) is FP8.
  EXPECT_GT(kept, 0);
  EXPECT_GT(fp8, 0);
  EXPECT_FALSE(j["warnings"].empty());
}

}  // namespace
}  // namespace moetool::testing
