// tests/cuda_verify_test.cc — `moetool verify`'s statistics computed where the engines leave their
// outputs. On the CPU: the hidden-state observers (HiddenRecorder / HiddenComparer) equal a plain
// HiddenStateComparison. On a GPU, each device path against its host path: per-row KLD, Δp, nll and
// top-1 (score_rows_on_device vs VerifyAccumulator::add_chunk, error messages included), hidden-state
// rows (compare_rows vs row_similarities), the MoE grouping and padding kernels against the host
// loop they replace, verify's whole device path against its host path on one model pair, and observers that
// need only hidden states keeping the fused bf16 path. GPU tests skip visibly where none is usable.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/backend_cuda.h"
#include "tests/test_util.h"
#include "engine/engine.h"
#include "verify/hidden_compare.h"
#include "verify/metrics.h"
#include "verify/score_device.h"

namespace moetool::testing {
namespace {

double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

// Records every layer's residual stream on the host (needs() = everything: the engine's plain path).
class AllHidden final : public LayerObserver {
 public:
  std::vector<std::vector<float>> h;
  void on_hidden(int64_t l, const float* x, int64_t n, int64_t H) override {
    if (h.size() <= static_cast<size_t>(l)) h.resize(static_cast<size_t>(l) + 1);
    h[static_cast<size_t>(l)].assign(x, x + n * H);
  }
};

// The same, declaring that it uses hidden states only.
class OnlyHidden final : public LayerObserver {
 public:
  std::vector<std::vector<float>> h;
  unsigned needs() const override { return kObserveHidden; }
  void on_hidden(int64_t l, const float* x, int64_t n, int64_t H) override {
    if (h.size() <= static_cast<size_t>(l)) h.resize(static_cast<size_t>(l) + 1);
    h[static_cast<size_t>(l)].assign(x, x + n * H);
  }
};

HiddenStateComparison plain_comparison(const AllHidden& a, const AllHidden& b, int64_t n, int64_t H) {
  HiddenStateComparison c;
  for (size_t l = 0; l < a.h.size(); ++l) c.add(static_cast<int64_t>(l), a.h[l].data(), b.h[l].data(), n, H);
  return c;
}

void expect_same_layers(const std::vector<LayerSimilarity>& got, const std::vector<LayerSimilarity>& want,
                        double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t l = 0; l < want.size(); ++l) {
    EXPECT_EQ(got[l].rows, want[l].rows) << l;
    EXPECT_LE(rel(got[l].mean_cosine, want[l].mean_cosine), tol) << l;
    EXPECT_LE(rel(got[l].min_cosine, want[l].min_cosine), tol) << l;
    EXPECT_LE(rel(got[l].nmse, want[l].nmse), tol) << l;
  }
}

void expect_same_stats(const VerifyStats& got, const VerifyStats& want, double tol) {
  EXPECT_EQ(got.n_tokens, want.n_tokens);
  EXPECT_EQ(got.n_chunks, want.n_chunks);
  EXPECT_LE(rel(got.kld.value, want.kld.value), tol);
  EXPECT_LE(rel(got.kld.unc, want.kld.unc), tol * 100);
  EXPECT_LE(rel(got.ppl_q.value, want.ppl_q.value), tol);
  EXPECT_LE(rel(got.ppl_base.value, want.ppl_base.value), tol);
  EXPECT_LE(rel(got.rms_delta_p.value, want.rms_delta_p.value), tol);
  EXPECT_NEAR(got.delta_p.value, want.delta_p.value, 1e-12);
  EXPECT_EQ(got.same_top.value, want.same_top.value);
  for (double q : kKldQuantiles) EXPECT_LE(rel(quantile_value(got.kld_q, q), quantile_value(want.kld_q, q)), tol) << q;
}

TEST(HiddenCompare, ObserversMatchAPlainComparisonOnTheCpu) {
  TempDir ta, tb;
  auto wa = synth_weights(ta, "llama", 1), wb = synth_weights(tb, "llama", 2);
  Engine a(wa), b(wb);
  const int64_t n = 40, H = a.config().hidden_size;
  const auto toks = random_tokens(n, a.config().vocab_size, 3);
  HiddenRecorder rec;
  HiddenStateComparison cmp;
  HiddenComparer hc(rec, cmp);
  EXPECT_EQ(rec.needs(), kObserveHidden);
  EXPECT_EQ(hc.needs(), kObserveHidden);
  a.logits(toks, &rec);
  b.logits(toks, &hc);
  EXPECT_EQ(rec.rows(0), n);
  EXPECT_EQ(rec.device_rows(0), nullptr);
  AllHidden ha, hb;
  a.logits(toks, &ha);
  b.logits(toks, &hb);
  const auto want = plain_comparison(ha, hb, n, H).finish();
  ASSERT_EQ(want.size(), static_cast<size_t>(a.config().num_layers));
  EXPECT_LT(want.back().mean_cosine, 0.99);  // two different models: a comparison that can fail
  expect_same_layers(cmp.finish(), want, 0.0);
  // A candidate run over a different number of positions than the base was recorded for.
  HiddenStateComparison c2;
  HiddenComparer short_cmp(rec, c2);
  EXPECT_THROW(b.logits(std::vector<int32_t>(toks.begin(), toks.begin() + 10), &short_cmp), Error);
}

TEST(CudaKernels, GroupByExpertAndPaddingMatchTheHostLoop) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  struct Shape {
    int64_t n, k, E;
  };
  for (const Shape sh : {Shape{1, 1, 1}, Shape{37, 2, 8}, Shape{3000, 8, 64}, Shape{500, 6, 256}, Shape{5, 2, 300}}) {
    const int64_t R = sh.n * sh.k;
    std::mt19937 rng(static_cast<uint32_t>(R + sh.E));
    // Only even experts chosen (odd ones stay empty), distinct within a token as the router gives.
    std::vector<int32_t> sel(static_cast<size_t>(R));
    std::vector<float> w(static_cast<size_t>(R));
    const int64_t even = std::max<int64_t>(1, (sh.E + 1) / 2);
    for (int64_t t = 0; t < sh.n; ++t) {
      std::vector<int32_t> ids(static_cast<size_t>(even));
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng);
      for (int64_t j = 0; j < sh.k; ++j) {
        const int32_t e = sh.E == 1 ? 0 : 2 * ids[static_cast<size_t>(j % even)];
        sel[static_cast<size_t>(t * sh.k + j)] = std::min<int32_t>(e, static_cast<int32_t>(sh.E - 1));
        w[static_cast<size_t>(t * sh.k + j)] = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
      }
    }
    std::vector<int32_t> off(static_cast<size_t>(sh.E + 1), 0), tok(static_cast<size_t>(R)), pos(static_cast<size_t>(R));
    std::vector<float> tw(static_cast<size_t>(R));
    for (const int32_t e : sel) ++off[static_cast<size_t>(e) + 1];
    std::partial_sum(off.begin(), off.end(), off.begin());
    std::vector<int32_t> fill(off.begin(), off.end() - 1);
    for (int64_t r = 0; r < R; ++r) {
      const auto e = static_cast<size_t>(sel[static_cast<size_t>(r)]);
      pos[static_cast<size_t>(r)] = fill[e];
      tok[static_cast<size_t>(fill[e])] = static_cast<int32_t>(r / sh.k);
      tw[static_cast<size_t>(fill[e]++)] = w[static_cast<size_t>(r)];
    }
    cuda::Buffer<int32_t> dsel, doff(off.size()), dtok(tok.size()), dpos(pos.size());
    cuda::Buffer<float> dw, dtw(tw.size());
    dsel.upload(sel.data(), sel.size());
    dw.upload(w.data(), w.size());
    cuda::group_by_expert(dsel.get(), dw.get(), sh.n, sh.k, sh.E, doff.get(), dtok.get(), dpos.get(), dtw.get());
    const std::string at = std::to_string(sh.n) + "×" + std::to_string(sh.k) + " of " + std::to_string(sh.E);
    EXPECT_EQ(doff.to_host(off.size()), off) << at;
    EXPECT_EQ(dtok.to_host(tok.size()), tok) << at;
    EXPECT_EQ(dpos.to_host(pos.size()), pos) << at;
    EXPECT_EQ(dtw.to_host(tw.size()), tw) << at;
    // The padded layout of the batched expert GEMMs: expert e's rows at e·cap …
    int32_t cap = 0;
    for (int64_t e = 0; e < sh.E; ++e) cap = std::max(cap, off[static_cast<size_t>(e) + 1] - off[static_cast<size_t>(e)]);
    std::vector<int32_t> padded(static_cast<size_t>(R)), tokp(static_cast<size_t>(sh.E * cap), -1);
    for (int64_t r = 0; r < R; ++r) {
      const int32_t e = sel[static_cast<size_t>(r)];
      padded[static_cast<size_t>(r)] = e * cap + pos[static_cast<size_t>(r)] - off[static_cast<size_t>(e)];
      tokp[static_cast<size_t>(padded[static_cast<size_t>(r)])] = static_cast<int32_t>(r / sh.k);
    }
    cuda::Buffer<int32_t> dpadded(padded.size()), dtokp(tokp.size());
    cuda::pad_groups(dsel.get(), doff.get(), dpos.get(), sh.n, sh.k, sh.E, cap, dpadded.get(), dtokp.get());
    EXPECT_EQ(dpadded.to_host(padded.size()), padded) << at;
    EXPECT_EQ(dtokp.to_host(tokp.size()), tokp) << at;
    cuda::zero(dtok.get(), tok.size() * sizeof(int32_t));
    cuda::group_by_expert(dsel.get(), nullptr, sh.n, sh.k, sh.E, doff.get(), dtok.get(), dpos.get(), nullptr);
    EXPECT_EQ(dtok.to_host(tok.size()), tok) << at << " (without weights)";
  }
}


TEST(CudaKernels, ScoreRowsMatchTheCpuAccumulator) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  const int64_t n = 300, V = 5000, first = 3;
  std::vector<float> base = random_normal(static_cast<size_t>(n * V), 11), cand = base;
  const auto noise = random_normal(base.size(), 12);
  for (size_t i = 0; i < base.size(); ++i) {
    base[i] *= 3.0f;
    cand[i] = base[i] + 0.4f * noise[i];
  }
  for (int64_t i = 0; i < n; ++i)  // masked tokens: −inf in both (p_base = 0 terms skipped)
    base[static_cast<size_t>(i * V + 7)] = cand[static_cast<size_t>(i * V + 7)] = -INFINITY;
  cand[static_cast<size_t>(10 * V + 3)] = cand[static_cast<size_t>(10 * V + 4000)] = 100.0f;  // a tie: first index wins
  base[static_cast<size_t>(10 * V + 3)] = 90.0f;
  const auto toks = random_tokens(n, V, 13);
  VerifyAccumulator host, dev;
  host.add_chunk(base.data(), cand.data(), toks.data(), n, V, first);
  cuda::Buffer<float> db, dc;
  db.upload(base.data(), base.size());
  dc.upload(cand.data(), cand.size());
  dev.add_rows(score_rows_on_device(db.get(), dc.get(), toks.data(), n, V, first));
  const VerifyStats want = host.finish();
  EXPECT_GT(want.kld.value, 0.01);
  EXPECT_LT(want.same_top.value, 1.0);
  expect_same_stats(dev.finish(), want, 1e-10);
  // Bad rows give the CPU's messages.
  auto both = [&](std::vector<float> b, std::vector<float> c) {
    VerifyAccumulator a;
    const std::string cpu = error_of([&] { a.add_chunk(b.data(), c.data(), toks.data(), n, V, first); });
    cuda::Buffer<float> xb, xc;
    xb.upload(b.data(), b.size());
    xc.upload(c.data(), c.size());
    const std::string gpu = error_of([&] { (void)score_rows_on_device(xb.get(), xc.get(), toks.data(), n, V, first); });
    EXPECT_FALSE(cpu.empty());
    EXPECT_EQ(gpu, cpu);
  };
  auto b2 = base;
  b2[static_cast<size_t>(5 * V + 9)] = NAN;
  both(b2, cand);
  auto c2 = cand;
  c2[static_cast<size_t>(8 * V + 2)] = INFINITY;
  both(base, c2);
  auto c3 = cand;
  std::fill(c3.begin() + 20 * V, c3.begin() + 21 * V, -INFINITY);
  both(base, c3);
  auto t2 = toks;
  t2[50] = static_cast<int32_t>(V);
  const std::string gpu = error_of([&] { (void)score_rows_on_device(db.get(), dc.get(), t2.data(), n, V, first); });
  EXPECT_NE(gpu.find("token id"), std::string::npos) << gpu;
}

TEST(CudaKernels, CompareRowsMatchTheCpu) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  const int64_t n = 50, d = 1000;
  auto a = random_normal(static_cast<size_t>(n * d), 21), b = random_normal(a.size(), 22);
  for (size_t i = 0; i < a.size(); ++i) b[i] = a[i] + 0.3f * b[i];
  std::fill(a.begin(), a.begin() + d, 0.0f);  // base zero
  std::fill(a.begin() + d, a.begin() + 2 * d, 0.0f);
  std::fill(b.begin() + d, b.begin() + 2 * d, 0.0f);  // both zero
  const auto want = row_similarities(a.data(), b.data(), n, d);
  cuda::Buffer<float> da, dbuf;
  da.upload(a.data(), a.size());
  dbuf.upload(b.data(), b.size());
  cuda::Buffer<double> out(static_cast<size_t>(3 * n));
  cuda::compare_rows(da.get(), dbuf.get(), n, d, out.get());
  const auto got = out.to_host(static_cast<size_t>(3 * n));
  for (int64_t i = 0; i < n; ++i) {
    const RowSimilarity& w = want[static_cast<size_t>(i)];
    EXPECT_NEAR(got[3 * i], w.cosine, 1e-12) << i;
    EXPECT_LE(rel(got[3 * i + 1], w.err2), 1e-12) << i;
    EXPECT_NEAR(got[3 * i + 2], w.ref2, 1e-12 * std::max(1.0, w.ref2)) << i;
  }
}

// verify's device path (logits and hidden states scored on the GPU) against its host path on the
// same engines: a model in f32 (base) and in bf16 (candidate), MoE so routing runs on the device.
TEST(CudaVerify, DevicePathMatchesTheHostPath) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  TempDir td;
  auto w = synth_weights(td, "mixtral", 14);
  Engine base(w, true, DeviceOptions{Device::Cuda, Precision::F32});
  Engine cand(w, true, DeviceOptions{Device::Cuda, Precision::BF16});
  const int64_t n = 96, V = base.config().vocab_size, H = base.config().hidden_size;
  VerifyAccumulator host, dev;
  HiddenStateComparison hcmp_dev;
  std::vector<LayerSimilarity> want_layers;
  {
    HiddenStateComparison hcmp_host;
    for (uint64_t c = 0; c < 2; ++c) {
      const auto toks = random_tokens(n, V, 30 + c);
      AllHidden ha, hb;
      const auto bl = base.logits(toks, &ha);
      const auto cl = cand.logits(toks, &hb);
      host.add_chunk(bl.data(), cl.data(), toks.data(), n, V, 0);
      for (size_t l = 0; l < ha.h.size(); ++l)
        hcmp_host.add(static_cast<int64_t>(l), ha.h[l].data(), hb.h[l].data(), n, H);

      HiddenRecorder rec;
      HiddenComparer hc(rec, hcmp_dev);
      const float* dbl = base.logits_on_device(toks, &rec);
      EXPECT_NE(rec.device_rows(0), nullptr);  // kept on the GPU
      const float* dcl = cand.logits_on_device(toks, &hc);
      dev.add_rows(score_rows_on_device(dbl, dcl, toks.data(), n, V, 0));
    }
    want_layers = hcmp_host.finish();
  }
  const VerifyStats want = host.finish();
  EXPECT_GT(want.kld.value, 0.0);
  expect_same_stats(dev.finish(), want, 1e-9);
  expect_same_layers(hcmp_dev.finish(), want_layers, 1e-9);
  EXPECT_THROW((void)Engine(w).logits_on_device(random_tokens(4, V, 1)), Error);  // a CPU engine
}

// An observer of hidden states only does not switch the bf16 engine to its unfused path: the same
// logits, bit for bit, as without an observer (calibrate and the other observers keep the detail).
TEST(CudaEngine, HiddenOnlyObserversKeepTheFusedBf16Path) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  for (const char* fam : {"llama", "mixtral"}) {
    TempDir td;
    auto w = synth_weights(td, fam, 15, DType::BF16);
    Engine gpu(w, true, DeviceOptions{Device::Cuda, Precision::BF16});
    const auto toks = random_tokens(80, gpu.config().vocab_size, 16);
    const auto plain = gpu.logits(toks);
    OnlyHidden only;
    EXPECT_EQ(gpu.logits(toks, &only), plain) << fam;
    AllHidden all;
    (void)gpu.logits(toks, &all);
    ASSERT_EQ(only.h.size(), all.h.size()) << fam;
    const int64_t H = gpu.config().hidden_size;
    for (size_t l = 0; l < all.h.size(); ++l) {
      double num = 0, den = 0;
      for (size_t i = 0; i < all.h[l].size(); ++i) {
        num += (static_cast<double>(all.h[l][i]) - only.h[l][i]) * (static_cast<double>(all.h[l][i]) - only.h[l][i]);
        den += static_cast<double>(all.h[l][i]) * all.h[l][i];
      }
      EXPECT_LE(num / den, 1e-4) << fam << " layer " << l << " (H " << H << ")";
    }
  }
}

}  // namespace
}  // namespace moetool::testing
