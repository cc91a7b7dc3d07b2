// tests/quantize_lowrank_test.cc — `quantize --format gptq` of a low-rank checkpoint
// (compress/quantize_lowrank.h): every stored factor rounded as a GPTQ linear of its own and run as
// stored (each module's matrix is base + U·V of the rounded factors, against a float64 reference of
// the same rounding); shared factors stay stored once; unpackable ranks stay float with a warning;
// GPTQ on the derived factor Hessians beats plain rounding on its calibration text; the rank grid's
// multiples; bad input one line, exit 2, nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "compress/int_quant.h"
#include "compress/lowrank.h"
#include "compress/lowrank_plan.h"
#include "compress/quantize_job.h"
#include "compress/quantize_lowrank.h"
#include "core/fs.h"
#include "engine/engine.h"
#include "engine/text.h"
#include "formats/inspect.h"
#include "formats/model.h"
#include "tests/compress_test_util.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::TempDir;
using testing::mean_kld;

// A low-rank checkpoint of a synthetic Mixtral by `moetool svd`.
std::string factored(const TempDir& d, const std::string& name, const std::string& src, const std::string& method,
                     int64_t rank, const std::string& text) {
  svd::Options o;
  o.model = src;
  o.output = d.file(name);
  o.method = method;
  o.rank = rank;
  o.ctx = 64;
  o.calib_texts = {text};
  svd::run(o);
  return o.output;
}

quantize::Options gptq(const std::string& src, const std::string& out, const std::string& method, int bits) {
  quantize::Options o;
  o.model = src;
  o.output = out;
  o.format = "gptq";
  o.method = method;
  o.bits = bits;
  o.group_size = 32;
  o.ctx = 64;
  return o;
}

// RTN of a float factor as the GPTQ pass rounds it, dequantized (float64 copy).
std::vector<double> rtn_values(const Checkpoint& ck, const std::string& name, int bits) {
  const Tensor t = ck.get(name);
  const auto w = t.to_f32();
  IntQuantSpec sp;
  sp.bits = bits;
  sp.group_size = 32;
  sp = int_spec_for_cols(sp, t.shape[1]);
  std::vector<float> deq(w.size());
  int_dequantize(rtn_quantize(w.data(), t.shape[0], t.shape[1], sp), deq.data());
  return {deq.begin(), deq.end()};
}

// Every factored module of the rounded checkpoint multiplies as base + U·V of the factors rounded
// here independently (float64 product). Bound: the engine forms the product in float32 from the same
// dequantized values, so per element the difference is the sum's rounding, ~r·6e-8 relative to the
// terms' magnitudes; 1e-5 of the matrix's largest element covers r ≤ 64 with margin. The rounding
// itself (int8 steps of max|w|/127) moves the matrix by far more than that from the float one, which
// the logits check shows (they must change, and only a little).
TEST(QuantizeLowRank, FactorsRoundedAsGptqTensorsAndRunAsStored) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 31, "tiny");
  const std::string text = testing::seeded_text(d, 32, 300);
  const std::string lr = factored(d, "lr", src, "delta", 8, text);
  const std::string out = d.file("q");
  auto o = gptq(lr, out, "rtn", 8);
  const auto rep = quantize::run(o).gptq;
  ASSERT_TRUE(rep);
  const Model in = Model::open(lr), q = Model::open(out);
  EXPECT_TRUE(q.check().empty());
  EXPECT_EQ(inspect_model(q).params_stored, inspect_model(in).params_stored);
  const Checkpoint& ck = in.checkpoint();
  auto wq = safetensors_weights(q);
  int checked = 0, factors = 0;
  for (const auto& r : rep->linears) factors += r.factor && r.bits == 8;
  for (const auto& s : in.family().tensors(in.config())) {
    const auto f = in.lowrank(s.role, s.layer, s.expert);
    if (!f) continue;
    const auto qf = q.lowrank(s.role, s.layer, s.expert);
    ASSERT_TRUE(qf && qf->uq && qf->vq && qf->baseq) << s.name;
    EXPECT_EQ(qf->uq->bits, 8);
    const auto U = rtn_values(ck, f->u, 8), V = rtn_values(ck, f->v, 8), B = rtn_values(ck, f->base, 8);
    std::vector<float> got(static_cast<size_t>(f->rows * f->cols));
    wq->matrix(s.role, s.layer, s.expert)->to_dense(got.data());
    double scale = 0, diff = 0;
    for (int64_t i = 0; i < f->rows; ++i)
      for (int64_t j = 0; j < f->cols; ++j) {
        double w = B[static_cast<size_t>(i * f->cols + j)];
        for (int64_t k = 0; k < f->rank; ++k)
          w += U[static_cast<size_t>(i * f->rank + k)] * V[static_cast<size_t>(k * f->cols + j)];
        scale = std::max(scale, std::fabs(w));
        diff = std::max(diff, std::fabs(w - got[static_cast<size_t>(i * f->cols + j)]));
      }
    EXPECT_LE(diff, 1e-5 * scale) << s.name;
    ++checked;
  }
  EXPECT_GT(checked, 0);
  // Per layer and role one shared base, plus U and V per expert.
  const auto& c = in.config();
  EXPECT_EQ(factors, c.num_layers * 3 * (2 * c.moe->num_experts + 1));
  const auto toks = testing::random_tokens(32, c.vocab_size, 33);
  const auto a = Engine(safetensors_weights(in)).logits(toks), b = Engine(wq).logits(toks);
  const double kld = mean_kld(a, b, c.vocab_size);
  EXPECT_GT(kld, 0.0);
  EXPECT_LT(kld, 1e-2);
}

// shared-basis: the layer's shared factor is stored once, quantized, under its own name, and the
// aliases still resolve to it.
TEST(QuantizeLowRank, SharedFactorStaysStoredOnce) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 41, "tiny");
  const std::string text = testing::seeded_text(d, 42, 300);
  const std::string lr = factored(d, "lr", src, "shared-basis", 16, text);
  const std::string out = d.file("q");
  quantize::run(gptq(lr, out, "rtn", 4));
  const Checkpoint ck = Checkpoint::open(out);
  int shared_q = 0, per_expert_v = 0;
  for (const auto& n : ck.names()) {
    shared_q += n.find(".experts.shared.w1.weight_v.qweight") != std::string::npos;
    per_expert_v += n.find(".experts.0.w1.weight_v") != std::string::npos;
  }
  EXPECT_EQ(shared_q, Model::open(src).config().num_layers);
  EXPECT_EQ(per_expert_v, 0);
  const Model q = Model::open(out);
  EXPECT_TRUE(q.check().empty());
  const auto f = q.lowrank(Role::ExpertGate, 0, 3);
  ASSERT_TRUE(f && f->vq);
  EXPECT_NE(f->v.find("experts.shared.w1.weight_v"), std::string::npos);
  EXPECT_EQ(f->vq->bits, 4);
}

// A rank the 4-bit packing does not fit (5: U has 5 inputs) keeps those factors in float with a
// warning (GPTQ packs along both the inputs and the outputs: U [out, 5] and V [5, in] both miss it);
// the model still runs. svd's
// --rank-multiple grid keeps every rank packable.
TEST(QuantizeLowRank, UnpackableRankStaysFloat) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 51, "tiny");
  const std::string text = testing::seeded_text(d, 52, 300);
  const std::string lr = factored(d, "lr", src, "plain", 5, text);
  const auto rep = quantize::run(gptq(lr, d.file("q"), "rtn", 4)).gptq;
  ASSERT_TRUE(rep);
  EXPECT_FALSE(rep->warnings.empty());
  const Model q = Model::open(d.file("q"));
  const auto f = q.lowrank(Role::ExpertDown, 1, 2);
  ASSERT_TRUE(f);
  EXPECT_FALSE(f->uq);  // U of down_proj [hidden, 5]: 5 inputs
  EXPECT_FALSE(f->vq);  // V of down_proj [5, I]: 5 rows
  const auto g = q.lowrank(Role::ExpertGate, 1, 2);
  ASSERT_TRUE(g);
  EXPECT_FALSE(g->uq);
  EXPECT_FALSE(g->vq);  // V of gate [5, hidden]: its 5 outputs do not pack either (qzeros pack along them)
  // One warning per factor: 2 per module, every expert matrix of every layer.
  const auto& c = q.config();
  const auto factor_warnings = std::count_if(rep->warnings.begin(), rep->warnings.end(), [](const std::string& w) {
    return w.find(".weight_u: kept in float") != std::string::npos || w.find(".weight_v: kept in float") != std::string::npos;
  });
  EXPECT_EQ(factor_warnings, 2 * 3 * c.num_layers * c.moe->num_experts);
  const auto toks = testing::random_tokens(16, q.config().vocab_size, 53);
  EXPECT_EQ(Engine(safetensors_weights(q)).logits(toks).size(), toks.size() * q.config().vocab_size);

  const auto grid = svd::rank_grid(100, 8, 8);
  ASSERT_FALSE(grid.empty());
  for (size_t i = 0; i < grid.size(); ++i) {
    EXPECT_EQ(grid[i] % 8, 0) << grid[i];
    EXPECT_LE(grid[i], 96);
    if (i) EXPECT_GT(grid[i], grid[i - 1]);
  }
  EXPECT_EQ(svd::rank_grid(5, 4, 8), std::vector<int64_t>{5});
  EXPECT_EQ(svd::rank_grid(64, 4, 1), (std::vector<int64_t>{16, 32, 48, 64}));
}

// GPTQ with each factor's Hessian derived from its users' inputs (V·H·Vᵀ for U) errs less than
// plain rounding on the text it was calibrated on, at 3 bits where rounding errors are large.
TEST(QuantizeLowRank, GptqOnDerivedHessiansBeatsRounding) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 61, "tiny");
  const std::string text = testing::seeded_text(d, 62, 600);
  const std::string lr = factored(d, "lr", src, "whitened", 16, text);
  auto og = gptq(lr, d.file("g"), "gptq", 3);
  og.calib_text = text;
  quantize::run(og);
  quantize::run(gptq(lr, d.file("r"), "rtn", 3));
  const Model m = Model::open(lr);
  const auto toks = load_tokenizer(lr)->encode(read_file(text));
  const std::vector<int32_t> first(toks.begin(), toks.begin() + std::min<size_t>(toks.size(), 64));
  const auto ref = Engine(safetensors_weights(m)).logits(first);
  const double kg = mean_kld(ref, Engine(open_weights(d.file("g"))).logits(first), m.config().vocab_size);
  const double kr = mean_kld(ref, Engine(open_weights(d.file("r"))).logits(first), m.config().vocab_size);
  EXPECT_LT(kg, kr);
  EXPECT_GT(kg, 0.0);
}

// Each factor's Hessian from its users' input Grams, against float64 sums computed here: a shared U
// (shared-basis down_proj) gets Σ_e V_e·H_e·V_eᵀ over the layer's experts, a shared V (gate/up) Σ_e H_e.
// Random symmetric H_e per expert, so a factor given the wrong expert's Gram or a wrong product fails.
TEST(QuantizeLowRank, FactorHessiansFollowFromTheModulesInputs) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 81, "tiny");
  const std::string lr = factored(d, "lr", src, "shared-basis", 8, testing::seeded_text(d, 82, 300));
  const Model m = Model::open(lr);
  const Checkpoint& ck = m.checkpoint();
  std::vector<std::string> warnings;
  IntQuantOptions io;
  const auto items = plan_factors(m, io, warnings);
  std::map<std::pair<Role, int64_t>, std::vector<double>> grams;  // (input role, expert) → H
  auto gram = [&](Role role, int64_t e, int64_t n) -> const std::vector<double>& {
    auto& H = grams[{role, e}];
    if (H.empty()) {
      const auto a = testing::random_normal(static_cast<size_t>(n * n), 1000 + 7 * e + static_cast<uint64_t>(role));
      H.assign(static_cast<size_t>(n * n), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j)
          for (int64_t k = 0; k < n; ++k) H[i * n + j] += double(a[i * n + k]) * a[j * n + k];  // A·Aᵀ
    }
    return H;
  };
  int shared_u = 0, shared_v = 0;
  for (const auto& f : items) {
    if (f.layer != 0 || f.uses.size() < 2) continue;
    const auto fm = factor_moments(ck, f, [&](Role role, int64_t e) -> std::pair<const std::vector<double>*, int64_t> {
      const Role in = role == Role::ExpertUp ? Role::ExpertGate : role;
      const auto lrn = m.lowrank(role, 0, e);
      return {&gram(in, e, lrn->cols), 10 + e};
    });
    const int64_t n = f.cols;
    std::vector<double> want(static_cast<size_t>(n * n), 0.0);
    int64_t count = 0;
    for (const auto& u : f.uses) {
      const Role in = u.role == Role::ExpertUp ? Role::ExpertGate : u.role;
      const auto& H = gram(in, u.expert, u.lr.cols);
      count += 10 + u.expert;
      if (u.as != 'u') {
        for (size_t i = 0; i < want.size(); ++i) want[i] += H[i];
        continue;
      }
      const auto V = ck.get(u.lr.v).to_f32();  // [r, in]
      const int64_t in_ = u.lr.cols;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t a = 0; a < in_; ++a)
            for (int64_t b = 0; b < in_; ++b) acc += double(V[i * in_ + a]) * H[a * in_ + b] * V[j * in_ + b];
          want[i * n + j] += acc;
        }
    }
    EXPECT_EQ(fm.count, count) << f.name;
    double scale = 0, diff = 0;
    for (size_t i = 0; i < want.size(); ++i)
      scale = std::max(scale, std::fabs(want[i])), diff = std::max(diff, std::fabs(want[i] - fm.H[i]));
    // Both are float64 sums of the same ≤ in² ≈ 2^14 products in other orders: ≤ 2^14 · 2^-53 ≈ 2e-12 of
    // the sum of the terms' magnitudes, a few times the largest entry here; a wrong Gram differs by O(1).
    EXPECT_LE(diff, 1e-10 * scale) << f.name;
    EXPECT_GT(scale, 0.0);
    (f.uses.front().as == 'u' ? shared_u : shared_v)++;
  }
  EXPECT_EQ(shared_u, 1);  // down_proj's shared U
  EXPECT_EQ(shared_v, 2);  // gate's and up's shared V
}

TEST(QuantizeLowRankCli, BadInputIsOneLineExitTwoAndNoOutput) {
  TempDir d;
  const std::string src = testing::synth_in(d, "src", "mixtral", 71, "tiny");
  const std::string text = testing::seeded_text(d, 72, 200);
  const std::string lr = factored(d, "lr", src, "plain", 8, text);
  const std::string out = d.file("out");
  testing::expect_bad_input({
      {{"quantize", lr, "-o", out, "--format", "gguf"}, "no GGUF form"},
      {{"quantize", lr, "-o", out, "--format", "gptq", "--bpw", "4", "--calib-text", text}, "--bpw"},
      {{"quantize", lr, "-o", out, "--format", "gptq", "--method", "imatrix", "--calib-text", text}, "imatrix"},
      {{"quantize", lr, "-o", out, "--format", "gptq", "--method", "rtn", "--skip", "("}, "--skip '('"},
      {{"quantize", lr, "-o", out, "--format", "gptq", "--method", "rtn", "--base-bits", "5"}, "--base-bits 5"},
      {{"quantize", src, "-o", d.file("x.gguf"), "--skip", "attn"}, "--skip"},
  }, {out, d.file("x.gguf")});
  // --skip keeps the attention in float; the experts' factors are quantized.
  const auto r = testing::run_moetool(
      {"quantize", lr, "-o", out, "--format", "gptq", "--method", "rtn", "--skip", "self_attn", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Checkpoint ck = Checkpoint::open(out);
  EXPECT_TRUE(ck.has("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(ck.has("model.layers.0.block_sparse_moe.experts.0.w1.weight_v.qweight"));
}

}  // namespace
}  // namespace moetool
