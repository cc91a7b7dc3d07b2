// tests/quant_imatrix_test.cc — importance-weighted (llama.cpp imatrix) ggml quantizers
// (formats/ggml_quants.h) and their use by the GGUF exporter (formats/gguf_export.h): bytes equal
// to ggml's own imatrix path (digests from tests/tools/ggml_imatrix_oracle.py, which runs ggml's
// ggml_quantize_chunk with quant_weights), a lower importance-weighted squared error than the
// reference quantizers for every type on seeded random rows with log-normal importance, uniform
// importance no worse than the reference, zero-importance blocks, bad importance refused, and an
// exported MoE model (q/k permutation, stacked experts with one expert lacking data, the output
// head) whose quantized weights have a lower weighted error than the reference export's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "compress/quantize_gguf.h"
#include "formats/ggml_quants.h"
#include "core/error.h"
#include "core/fs.h"
#include "formats/gguf.h"
#include "formats/gguf_config.h"
#include "formats/gguf_export.h"
#include "formats/model.h"
#include "formats/synth.h"
#include "tests/test_util.h"
#include "engine/engine.h"

namespace moetool {
namespace {

const std::vector<GGMLType> kImportanceTypes = {GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0, GGMLType::Q5_1,
                                                GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K};

using testing::fnv1a64;
using testing::lcg_rows;

std::vector<uint8_t> quantize(GGMLType t, const std::vector<float>& x, int64_t rows, int64_t cols,
                              const std::vector<float>* imp) {
  std::vector<uint8_t> out(static_cast<size_t>(rows) * ggml_row_size(t, cols));
  if (imp)
    quantize_rows(t, x.data(), out.data(), rows, cols, std::span<const float>(*imp));
  else
    quantize_rows(t, x.data(), out.data(), rows, cols);
  return out;
}

std::vector<float> decode(GGMLType t, const std::vector<uint8_t>& q, int64_t rows, int64_t cols) {
  std::vector<float> y(static_cast<size_t>(rows * cols));
  dequantize_rows(t, q.data(), y.data(), rows, cols);
  return y;
}

// Σ_r Σ_j w_j (x_rj − y_rj)², in float64.
double weighted_sq_error(const float* x, const float* y, int64_t rows, int64_t cols, const std::vector<float>& w) {
  double e = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const double d = static_cast<double>(x[r * cols + j]) - static_cast<double>(y[r * cols + j]);
      e += static_cast<double>(w[static_cast<size_t>(j)]) * d * d;
    }
  return e;
}

// Log-normal importance exp(σ·N(0, 1)), seeded.
std::vector<float> lognormal(size_t n, double sigma, uint64_t seed) {
  std::vector<float> v = testing::random_normal(n, seed);
  for (float& x : v) x = static_cast<float>(std::exp(sigma * x));
  return v;
}

// ggml's imatrix path (libggml-base 0.25.3 of llama-cpp-python via ggml_quantize_chunk with
// quant_weights), from tests/tools/ggml_imatrix_oracle.py: rows lcg_rows(3, 64, 512), importance
// (8·lcg_rows(5, 1, 512))⁴ — 1e-13 .. 0.16, heavy-tailed. Q8_0 gives the reference bytes.
TEST(QuantImatrix, ByteIdenticalToGgmlImatrixPath) {
  const auto x = lcg_rows(3, 64, 512);
  const auto a = lcg_rows(5, 1, 512);
  std::vector<float> imp(512);
  for (size_t j = 0; j < imp.size(); ++j) {
    const float v = a[j] * 8.f;
    imp[j] = v * v * v * v;
  }
  std::vector<uint8_t> ib(imp.size() * 4);
  std::memcpy(ib.data(), imp.data(), ib.size());
  ASSERT_EQ(fnv1a64(ib), 0xf969de0376897389ull);  // the oracle's importance, bit for bit
  const std::map<GGMLType, uint64_t> want = {
      {GGMLType::Q4_0, 0x21da9d9c0d724711ull}, {GGMLType::Q4_1, 0x85e66609b1a71eabull},
      {GGMLType::Q5_0, 0x58eb518f048b8820ull}, {GGMLType::Q5_1, 0x75181f10d4b16465ull},
      {GGMLType::Q8_0, 0x496afc51d6cbf6b3ull}, {GGMLType::Q4_K, 0x4a3bb3693e23f692ull},
      {GGMLType::Q5_K, 0x60619488a572b751ull}, {GGMLType::Q6_K, 0x4c2737acdd954340ull},
  };
  for (const auto& [t, digest] : want) {
    SCOPED_TRACE(ggml_type_name(t));
    EXPECT_EQ(fnv1a64(quantize(t, x, 64, 512, &imp)), digest);
  }
  // The same digest for Q8_0 as without importance (llama.cpp ignores it there) ...
  EXPECT_EQ(quantize(GGMLType::Q8_0, x, 64, 512, &imp), quantize(GGMLType::Q8_0, x, 64, 512, nullptr));
  // ... and different bytes from the reference for every type that uses it.
  for (GGMLType t : kImportanceTypes)
    EXPECT_NE(quantize(t, x, 64, 512, &imp), quantize(t, x, 64, 512, nullptr)) << ggml_type_name(t);
}

// A second oracle case: rows lcg_rows(7, 32, 1024), importance lcg_rows(9, 1, 1024)² (0 .. 4).
TEST(QuantImatrix, ByteIdenticalToGgmlImatrixPathSecondCase) {
  const auto x = lcg_rows(7, 32, 1024);
  const auto a = lcg_rows(9, 1, 1024);
  std::vector<float> imp(1024);
  for (size_t j = 0; j < imp.size(); ++j) imp[j] = a[j] * a[j];
  const std::map<GGMLType, uint64_t> want = {
      {GGMLType::Q4_0, 0xae2b4a063ae1be56ull}, {GGMLType::Q4_1, 0x309d988eae85ec93ull},
      {GGMLType::Q5_0, 0x2261a3b5fbe261dcull}, {GGMLType::Q5_1, 0xd58582bf5befcad5ull},
      {GGMLType::Q8_0, 0x04f8b89e08db60a7ull}, {GGMLType::Q4_K, 0x3336793ff8e23bd4ull},
      {GGMLType::Q5_K, 0x46fcda9c5e3f2f64ull}, {GGMLType::Q6_K, 0xed14cd84fea6d212ull},
  };
  for (const auto& [t, digest] : want) {
    SCOPED_TRACE(ggml_type_name(t));
    EXPECT_EQ(fnv1a64(quantize(t, x, 32, 1024, &imp)), digest);
  }
}

// The point of it: with a non-uniform (log-normal) importance, Σ imp_j (x_j − x̂_j)² over many rows
// is lower than the reference quantizer's, for every type that uses importance; the output
// decodes with the ordinary dequantizer to values close to the input.
TEST(QuantImatrix, WeightedErrorBelowReference) {
  const int64_t rows = 192, cols = 1024;
  std::vector<float> x = testing::random_normal(static_cast<size_t>(rows * cols), 11);
  for (float& v : x) v *= 0.02f;  // a weight-matrix-like scale
  for (double sigma : {1.0, 2.0}) {
    const std::vector<float> imp = lognormal(static_cast<size_t>(cols), sigma, 12);
    const std::vector<float> ones(static_cast<size_t>(cols), 1.f);
    for (GGMLType t : kImportanceTypes) {
      SCOPED_TRACE(std::string(ggml_type_name(t)) + " sigma " + std::to_string(sigma));
      const auto yr = decode(t, quantize(t, x, rows, cols, nullptr), rows, cols);
      const auto yi = decode(t, quantize(t, x, rows, cols, &imp), rows, cols);
      const double er = weighted_sq_error(x.data(), yr.data(), rows, cols, imp);
      const double ei = weighted_sq_error(x.data(), yi.data(), rows, cols, imp);
      std::printf("  %-5s σ=%.0f  weighted error importance/reference = %.3f\n", ggml_type_name(t), sigma, ei / er);
      EXPECT_GT(er, 0);
      EXPECT_LT(ei, 0.95 * er);
      // Decodes: finite, and the plain (unweighted) error stays of the reference's order: the
      // quantizer moves error onto unimportant columns, it does not produce garbage.
      const double pr = weighted_sq_error(x.data(), yr.data(), rows, cols, ones);
      const double pi = weighted_sq_error(x.data(), yi.data(), rows, cols, ones);
      EXPECT_TRUE(std::isfinite(pi));
      EXPECT_LT(pi, 2.0 * pr);
      double sx = 0;
      for (float v : x) sx += static_cast<double>(v) * v;
      EXPECT_LT(pi / sx, 0.02);  // relative error of a 4-bit format at most
    }
    // Q8_0 ignores importance: the same bytes.
    EXPECT_EQ(quantize(GGMLType::Q8_0, x, rows, cols, &imp), quantize(GGMLType::Q8_0, x, rows, cols, nullptr));
  }
}

// Uniform importance is the imatrix algorithm with nothing to favour: its plain squared error is
// not much worse than the reference quantizers' (measured: 0.80–0.98 of it, i.e. better).
TEST(QuantImatrix, UniformImportanceNotWorseThanReference) {
  const int64_t rows = 128, cols = 1024;
  const std::vector<float> x = testing::random_normal(static_cast<size_t>(rows * cols), 21);
  const std::vector<float> ones(static_cast<size_t>(cols), 1.f);
  for (GGMLType t : kImportanceTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    const auto yr = decode(t, quantize(t, x, rows, cols, nullptr), rows, cols);
    const auto yu = decode(t, quantize(t, x, rows, cols, &ones), rows, cols);
    const double er = weighted_sq_error(x.data(), yr.data(), rows, cols, ones);
    const double eu = weighted_sq_error(x.data(), yu.data(), rows, cols, ones);
    std::printf("  %-5s uniform importance / reference plain error = %.3f\n", ggml_type_name(t), eu / er);
    EXPECT_LE(eu, 1.02 * er);
  }
}

// A block whose importance is all zero (columns calibration never saw) is quantized as with
// uniform importance there — not put on scale 0 — while other blocks keep their weights.
TEST(QuantImatrix, ZeroImportanceBlocks) {
  const int64_t rows = 8, cols = 512;
  const std::vector<float> x = testing::random_normal(static_cast<size_t>(rows * cols), 31);
  std::vector<float> imp = lognormal(static_cast<size_t>(cols), 1.5, 32), imp1 = imp;
  for (int j = 0; j < 32; ++j) {
    imp[j] = 0.f;
    imp1[j] = 1.f;
  }
  const std::vector<float> zeros(static_cast<size_t>(cols), 0.f), ones(static_cast<size_t>(cols), 1.f);
  for (GGMLType t : kImportanceTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    EXPECT_EQ(quantize(t, x, rows, cols, &imp), quantize(t, x, rows, cols, &imp1));
    EXPECT_EQ(quantize(t, x, rows, cols, &zeros), quantize(t, x, rows, cols, &ones));
    const auto y = decode(t, quantize(t, x, rows, cols, &imp), rows, cols);
    double e = 0, s = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int j = 0; j < 32; ++j) {
        const double d = x[r * cols + j] - y[r * cols + j];
        e += d * d;
        s += static_cast<double>(x[r * cols + j]) * x[r * cols + j];
      }
    EXPECT_LT(e / s, 0.02);  // the zero-importance block still decodes close to x
  }
  // A single zero inside a block is a legitimate weight of zero (not replaced).
  std::vector<float> one_zero = imp1;
  one_zero[40] = 0.f;
  EXPECT_NE(quantize(GGMLType::Q4_K, x, rows, cols, &one_zero), quantize(GGMLType::Q4_K, x, rows, cols, &imp1));
}

TEST(QuantImatrix, ThreadedEqualsRowByRow) {
  const int64_t rows = 64, cols = 768;
  const std::vector<float> x = testing::random_normal(static_cast<size_t>(rows * cols), 41);
  const std::vector<float> imp = lognormal(static_cast<size_t>(cols), 1.0, 42);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q5_1, GGMLType::Q6_K}) {
    const size_t rb = ggml_row_size(t, cols);
    const auto all = quantize(t, x, rows, cols, &imp);
    std::vector<uint8_t> one(rb);
    for (int64_t r = 0; r < rows; ++r) {
      quantize_rows(t, x.data() + r * cols, one.data(), 1, cols, imp.data());
      EXPECT_EQ(std::memcmp(one.data(), all.data() + r * rb, rb), 0) << ggml_type_name(t) << " row " << r;
    }
  }
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected an error containing " << parts.front();
  } catch (const Error& e) {
    for (const auto& p : parts) EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

TEST(QuantImatrix, BadImportanceIsAnError) {
  const int64_t cols = 256;
  const std::vector<float> x = testing::random_normal(static_cast<size_t>(2 * cols), 51);
  std::vector<uint8_t> out(2 * ggml_row_size(GGMLType::Q8_0, cols) + 4096);
  for (GGMLType t : {GGMLType::Q4_0, GGMLType::Q4_K, GGMLType::Q6_K, GGMLType::Q8_0}) {
    SCOPED_TRACE(ggml_type_name(t));
    std::vector<float> imp = lognormal(static_cast<size_t>(cols), 1.0, 52);
    imp[17] = std::numeric_limits<float>::quiet_NaN();
    expect_error([&] { quantize_rows(t, x.data(), out.data(), 2, cols, std::span<const float>(imp), "tensor 'w'"); },
                 {"tensor 'w'", "importance", "column 17"});
    imp[17] = -0.5f;
    expect_error([&] { quantize_rows(t, x.data(), out.data(), 2, cols, imp.data(), "tensor 'w'"); },
                 {"tensor 'w'", "importance", "column 17"});
    imp[17] = std::numeric_limits<float>::infinity();
    expect_error([&] { quantize_rows(t, x.data(), out.data(), 2, cols, imp.data(), "tensor 'w'"); },
                 {"tensor 'w'", "importance"});
    const std::vector<float> short_imp(static_cast<size_t>(cols - 32), 1.f);
    expect_error(
        [&] { quantize_rows(t, x.data(), out.data(), 2, cols, std::span<const float>(short_imp), "tensor 'w'"); },
        {"tensor 'w'", "importance vector has 224 values", "256"});
    const std::vector<float> empty;
    expect_error([&] { quantize_rows(t, x.data(), out.data(), 2, cols, std::span<const float>(empty), "tensor 'w'"); },
                 {"tensor 'w'", "importance vector has 0 values"});
  }
}

// ---- the exporter ---------------------------------------------------------------------------

// A deterministic importance callback: log-normal vectors seeded by (role, layer, expert), none
// for the routed experts listed in `missing` (layer → experts), and a log of what was asked.
struct ImportanceSource {
  const Model* m = nullptr;
  std::map<int64_t, std::vector<int64_t>> missing;
  std::vector<std::tuple<Role, int64_t, int64_t>> asked;

  static int64_t in_features(const Model& m, Role r, int64_t layer, int64_t expert) {
    if (r == Role::LmHead) return m.config().hidden_size;
    return m.weight(r, layer, expert).shape.at(1);
  }
  std::optional<std::vector<float>> operator()(Role r, int64_t layer, int64_t expert) {
    asked.emplace_back(r, layer, expert);
    if (auto it = missing.find(layer); it != missing.end() && expert >= 0 &&
                                       std::count(it->second.begin(), it->second.end(), expert))
      return std::nullopt;
    const uint64_t seed = 1000003ull * static_cast<uint64_t>(r) + 1009ull * static_cast<uint64_t>(layer + 1) +
                          static_cast<uint64_t>(expert + 1);
    return lognormal(static_cast<size_t>(in_features(*m, r, layer, expert)), 1.5, seed);
  }
};

const GGUFTensorPlan& plan_entry(const GGUFExportPlan& p, const std::string& name) {
  for (const auto& t : p.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// For every quantized tensor of the two exports (with and without importance): slices quantized
// with importance have a lower weighted error against the source (q/k rows permuted as llama.cpp
// stores them, importance per input column as given), all others are byte-identical.
struct CompareResult {
  int slices_with_importance = 0, identical_slices = 0;
  double worst_ratio = 0;
};
CompareResult compare_exports(const Model& m, const GGUFExportPlan& plan, const GGUFFile& fi, const GGUFFile& fr,
                              ImportanceSource& src) {
  CompareResult res;
  const GGUFArch* g = m.family().gguf_arch();
  const ModelConfig& c = m.config();
  for (const GGUFTensorPlan& t : plan.tensors) {
    if (!t.quantizable) continue;
    SCOPED_TRACE(t.name);
    const auto ri = fi.raw_tensor(t.name), rr = fr.raw_tensor(t.name);
    EXPECT_EQ(ri.type, rr.type);
    EXPECT_EQ(ri.bytes.size(), rr.bytes.size());
    const int64_t slices = t.experts > 0 ? t.experts : 1;
    const size_t slice_bytes = ri.bytes.size() / static_cast<size_t>(slices);
    for (int64_t e = 0; e < slices; ++e) {
      const int64_t expert = t.experts > 0 ? e : -1;
      const uint8_t* bi = ri.bytes.data() + e * slice_bytes;
      const uint8_t* br = rr.bytes.data() + e * slice_bytes;
      const bool missing = std::count(t.importance_missing.begin(), t.importance_missing.end(), e) > 0;
      if (!t.importance || missing) {
        EXPECT_EQ(std::memcmp(bi, br, slice_bytes), 0) << "expert " << expert;
        ++res.identical_slices;
        continue;
      }
      // The source slice in the file's row order.
      const Tensor w = m.weight(t.role, t.layer, expert);
      const int64_t rows = w.shape.at(0), cols = w.shape.at(1);
      std::vector<float> x = w.to_f32();
      if (t.experts == 0) {
        const auto ref = g->tensor(c, t.role, t.layer);
        if (ref->permute_heads > 0) {
          std::vector<float> p(x.size());
          gguf_permute_rows(x.data(), p.data(), rows, static_cast<size_t>(cols) * 4, ref->permute_heads);
          x = std::move(p);
        }
      }
      const Role role = t.role == Role::Embed ? Role::LmHead : t.role;
      const std::vector<float> imp = *src(role, role == Role::LmHead ? -1 : t.layer, expert);
      std::vector<float> yi(x.size()), yr(x.size());
      dequantize_rows(ri.type, bi, yi.data(), rows, cols);
      dequantize_rows(rr.type, br, yr.data(), rows, cols);
      const double ei = weighted_sq_error(x.data(), yi.data(), rows, cols, imp);
      const double er = weighted_sq_error(x.data(), yr.data(), rows, cols, imp);
      EXPECT_LT(ei, er) << "expert " << expert;
      res.worst_ratio = std::max(res.worst_ratio, ei / er);
      ++res.slices_with_importance;
    }
  }
  return res;
}

GGUFExportOptions opts(const std::string& type) {
  GGUFExportOptions o;
  o.file_type = type;
  o.overwrite = true;
  return o;
}

// Mixtral (llama arch: q/k rows permuted; 8 stacked experts; untied output head) at q4_k_m: Q4_K,
// Q5_K and Q6_K matrices with importance, Q8_0 attn_k/attn_v without; expert 3 of layer 1 has no
// calibration data and is quantized by the reference quantizer, with a note.
TEST(QuantImatrix, ExportedMoEHasLowerWeightedError) {
  testing::TempDir tmp;
  const std::string dir = tmp.file("mixtral-small");
  SynthOptions so;
  so.family = "mixtral";
  so.preset = "small";  // hidden 256, 4 layers, 8 experts of 256
  synth_model(dir, so);
  Model m = Model::open(dir);
  ImportanceSource src;
  src.m = &m;
  src.missing[1] = {3};

  GGUFExportOptions o = opts("q4_k_m");
  o.importance = [&](Role r, int64_t l, int64_t e) { return src(r, l, e); };
  std::vector<std::string> lines;
  o.progress = [&](const std::string& s) { lines.push_back(s); };
  const std::string fi_path = tmp.file("imp.gguf"), fr_path = tmp.file("ref.gguf");
  const GGUFExportPlan plan = export_gguf(m, fi_path, o);
  export_gguf(m, fr_path, opts("q4_k_m"));

  // The plan says what got importance, and why not.
  const auto& up1 = plan_entry(plan, "blk.1.ffn_up_exps.weight");
  EXPECT_TRUE(up1.importance);
  EXPECT_EQ(up1.importance_missing, std::vector<int64_t>{3});
  EXPECT_NE(up1.why.find("importance for 7/8 experts"), std::string::npos) << up1.why;
  EXPECT_TRUE(plan_entry(plan, "blk.0.ffn_up_exps.weight").importance_missing.empty());
  EXPECT_TRUE(plan_entry(plan, "blk.0.attn_q.weight").importance);
  EXPECT_TRUE(plan_entry(plan, "blk.2.ffn_down_exps.weight").importance);  // Q6_K
  EXPECT_TRUE(plan_entry(plan, "blk.0.attn_output.weight").importance);    // Q5_K
  EXPECT_TRUE(plan_entry(plan, "output.weight").importance);               // Q6_K, Role::LmHead
  const auto& k0 = plan_entry(plan, "blk.0.attn_k.weight");                // Q8_0 (8 experts)
  EXPECT_FALSE(k0.importance);
  EXPECT_NE(k0.why.find("Q8_0 ignores importance"), std::string::npos) << k0.why;
  const auto& emb = plan_entry(plan, "token_embd.weight");  // untied: a lookup, no importance
  EXPECT_FALSE(emb.importance);
  EXPECT_NE(emb.why.find("token embedding"), std::string::npos) << emb.why;
  EXPECT_FALSE(plan_entry(plan, "blk.0.ffn_gate_inp.weight").importance);
  // The progress line notes the expert without data.
  bool noted = false;
  for (const auto& l : lines)
    if (l.find("blk.1.ffn_up_exps.weight") != std::string::npos) {
      noted = true;
      EXPECT_NE(l.find("imatrix for 7/8 experts (no calibration data for expert 3"), std::string::npos) << l;
    }
  EXPECT_TRUE(noted);
  // The callback was asked with expert −1 for non-expert linears and the expert index otherwise.
  EXPECT_TRUE(std::count(src.asked.begin(), src.asked.end(), std::make_tuple(Role::Q, int64_t{0}, int64_t{-1})));
  EXPECT_TRUE(std::count(src.asked.begin(), src.asked.end(), std::make_tuple(Role::ExpertDown, int64_t{3}, int64_t{7})));
  EXPECT_TRUE(std::count(src.asked.begin(), src.asked.end(), std::make_tuple(Role::LmHead, int64_t{-1}, int64_t{-1})));

  auto fi = GGUFFile::open(fi_path), fr = GGUFFile::open(fr_path);
  const CompareResult r = compare_exports(m, plan, *fi, *fr, src);
  std::printf("  mixtral small q4_k_m: %d slices with importance (worst weighted-error ratio %.3f), %d identical\n",
              r.slices_with_importance, r.worst_ratio, r.identical_slices);
  // 4 layers × (q, o + 3 × 8 experts) − 3 missing slices + output = 4·26 − 3 + 1.
  EXPECT_EQ(r.slices_with_importance, 4 * 26 - 3 + 1);
  EXPECT_LT(r.worst_ratio, 0.95);

  // The checker runs the file; its logits are as close to the original's as the reference export's.
  Engine e0(open_weights(dir)), ei(open_weights(fi_path)), er(open_weights(fr_path));
  const std::vector<int32_t> ids = {1, 17, 300, 5, 1999, 42, 7, 128, 64, 2000};
  const auto l0 = e0.logits(ids), li = ei.logits(ids), lr = er.logits(ids);
  ASSERT_EQ(li.size(), l0.size());
  ASSERT_EQ(lr.size(), l0.size());
  double di = 0, dr = 0, s = 0;
  for (size_t i = 0; i < l0.size(); ++i) {
    ASSERT_TRUE(std::isfinite(li[i]));
    di += (double(li[i]) - l0[i]) * (double(li[i]) - l0[i]);
    dr += (double(lr[i]) - l0[i]) * (double(lr[i]) - l0[i]);
    s += double(l0[i]) * l0[i];
  }
  std::printf("  logits NMSE vs original: importance export %.3g, reference export %.3g\n", di / s, dr / s);
  EXPECT_LT(di / s, 0.2);
  EXPECT_LT(di, 2.0 * dr);
}

// Llama (tied embedding, q/k permuted) with the output forced to Q5_1: the tied embedding is the
// output head and takes Role::LmHead's importance; Q4_0 everywhere else.
TEST(QuantImatrix, ExportedTiedHeadUsesLmHeadImportance) {
  testing::TempDir tmp;
  const std::string dir = tmp.file("llama-tiny");
  SynthOptions so;
  so.family = "llama";
  synth_model(dir, so);
  Model m = Model::open(dir);
  ASSERT_TRUE(m.config().tie_word_embeddings);
  ImportanceSource src;
  src.m = &m;
  GGUFExportOptions o = opts("q4_0");
  o.output_type = GGMLType::Q5_1;
  o.importance = [&](Role r, int64_t l, int64_t e) { return src(r, l, e); };
  const std::string fi_path = tmp.file("imp.gguf"), fr_path = tmp.file("ref.gguf");
  const GGUFExportPlan plan = export_gguf(m, fi_path, o);
  GGUFExportOptions o_ref = opts("q4_0");
  o_ref.output_type = GGMLType::Q5_1;
  export_gguf(m, fr_path, o_ref);
  const auto& emb = plan_entry(plan, "token_embd.weight");
  EXPECT_EQ(emb.type, GGMLType::Q5_1);
  EXPECT_TRUE(emb.importance);
  EXPECT_TRUE(plan_entry(plan, "blk.0.attn_k.weight").importance);
  auto fi = GGUFFile::open(fi_path), fr = GGUFFile::open(fr_path);
  const CompareResult r = compare_exports(m, plan, *fi, *fr, src);
  // 2 layers × 7 linears + the tied head.
  EXPECT_EQ(r.slices_with_importance, 2 * 7 + 1);
  EXPECT_EQ(r.identical_slices, 0);

  // Without a vector for the head (callback has none), the head is quantized by the reference.
  GGUFExportOptions o2 = o;
  o2.importance = [&](Role r, int64_t l, int64_t e) -> std::optional<std::vector<float>> {
    if (r == Role::LmHead) return std::nullopt;
    return src(r, l, e);
  };
  const GGUFExportPlan p2 = plan_gguf_export(m, o2);
  EXPECT_FALSE(plan_entry(p2, "token_embd.weight").importance);
  EXPECT_NE(plan_entry(p2, "token_embd.weight").why.find("no importance data"), std::string::npos);
}

TEST(QuantImatrix, ExportRefusesBadImportance) {
  testing::TempDir tmp;
  const std::string dir = tmp.file("llama-tiny");
  SynthOptions so;
  so.family = "llama";
  synth_model(dir, so);
  Model m = Model::open(dir);
  GGUFExportOptions o = opts("q4_0");
  o.importance = [](Role r, int64_t l, int64_t) -> std::optional<std::vector<float>> {
    if (r == Role::Down && l == 1) return std::vector<float>(64, 1.f);  // ffn_down's input is 128 wide
    return std::nullopt;
  };
  const std::string out = tmp.file("bad.gguf");
  expect_error([&] { export_gguf(m, out, o); }, {"blk.1.ffn_down.weight", "importance vector", "64 values", "128"});
  EXPECT_FALSE(file_exists(out));
  o.importance = [](Role r, int64_t l, int64_t) -> std::optional<std::vector<float>> {
    if (r == Role::Up && l == 0) {
      std::vector<float> v(64, 1.f);
      v[5] = std::numeric_limits<float>::quiet_NaN();
      return v;
    }
    return std::nullopt;
  };
  expect_error([&] { plan_gguf_export(m, o); }, {"blk.0.ffn_up.weight", "importance value", "column 5"});
}

}  // namespace
}  // namespace moetool
