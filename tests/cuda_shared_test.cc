// tests/cuda_shared_test.cc — the CUDA backend's pure logic, checked on the CPU (no GPU needed):
// formats/ggml_blocks.h's per-element block decoders against the CPU dequantizers and core/dtype.h, the
// GPTQ int4 decoder against unpacked values, routing selection against a sort-based reference,
// attention masking/tiling against brute force, the online-softmax state against a float64
// softmax; kernels/linalg.h's CPU LAPACK path against float64 reconstructions; device selection.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "formats/ggml_blocks.h"
#include "formats/ggml_quants.h"
#include "core/dtype.h"
#include "core/error.h"
#include "kernels/backend_shared.h"
#include "kernels/device.h"
#include "kernels/linalg.h"
#include "tests/test_util.h"

namespace moetool::testing {
namespace {

TEST(CudaShared, HalfToFloatMatchesCoreForEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = ggml::half_to_float(static_cast<uint16_t>(h)), b = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a)) << h;
    } else {
      ASSERT_EQ(ggml::float_to_bits(a), ggml::float_to_bits(b)) << "half bits " << h;
    }
  }
}

TEST(CudaShared, Bf16MatchesCore) {
  std::vector<float> x = random_normal(20000, 3);
  x.push_back(0.0f);
  x.push_back(-0.0f);
  x.push_back(1e-40f);  // subnormal
  x.push_back(3.0e38f);
  x.push_back(INFINITY);
  for (float v : x) {
    ASSERT_EQ(shared::float_to_bf16(v), f32_to_bf16(v)) << v;
    ASSERT_EQ(ggml::float_to_bits(shared::bf16_to_float(f32_to_bf16(v))),
              ggml::float_to_bits(bf16_to_f32(f32_to_bf16(v))));
  }
  EXPECT_TRUE(std::isnan(shared::bf16_to_float(shared::float_to_bf16(NAN))));
}

// Quantizes random rows with the CPU quantizer, decodes every element with the per-element decoder
// the CUDA kernels run (ggml::block_value) and with the CPU dequantizer (whole blocks): identical floats.
template <class B>
void check_blocks() {
  SCOPED_TRACE(B::kName);
  const int64_t rows = 7, cols = 512;
  std::vector<float> w = random_normal(static_cast<size_t>(rows * cols), 11);
  for (int64_t i = 0; i < cols; ++i) w[static_cast<size_t>(i)] *= 0.001f;  // one row of small scales
  std::vector<uint8_t> q(static_cast<size_t>(rows) * ggml_row_size(B::kType, cols));
  ASSERT_EQ(ggml_row_size(B::kType, cols), static_cast<size_t>(cols / B::kElems * B::kBytes));
  quantize_rows(B::kType, w.data(), q.data(), rows, cols);
  std::vector<float> ref(w.size());
  dequantize_rows(B::kType, q.data(), ref.data(), rows, cols);
  int64_t nonzero = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint8_t* blk = q.data() + (r * (cols / B::kElems) + c / B::kElems) * B::kBytes;
      const float v = ggml::block_value<B>(blk, static_cast<int>(c % B::kElems));
      ASSERT_EQ(v, ref[static_cast<size_t>(r * cols + c)]) << "row " << r << " col " << c;
      nonzero += v != 0.0f;
    }
  EXPECT_GT(nonzero, rows * cols / 2);
}

TEST(CudaShared, BlockDecodersMatchCpuDequantizers) {
  check_blocks<ggml::BlockQ8_0>();
  check_blocks<ggml::BlockQ4_0>();
  check_blocks<ggml::BlockQ4_K>();
  check_blocks<ggml::BlockQ4_1>();
  check_blocks<ggml::BlockQ5_0>();
  check_blocks<ggml::BlockQ5_1>();
  check_blocks<ggml::BlockQ5_K>();
  check_blocks<ggml::BlockQ6_K>();
  check_blocks<ggml::BlockF16>();
  check_blocks<ggml::BlockBF16>();
}

TEST(CudaShared, GptqInt4DecoderMatchesUnpackedFormula) {
  const int64_t in = 64, out = 24, group = 16, groups = in / group;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> nib(0, 15);
  std::vector<int> q(static_cast<size_t>(in * out)), z(static_cast<size_t>(groups * out));
  for (auto& v : q) v = nib(rng);
  for (auto& v : z) v = nib(rng);
  std::vector<float> scales = random_normal(static_cast<size_t>(groups * out), 6);
  // act-order: a permuted g_idx (each group still has `group` columns)
  std::vector<int32_t> g_idx(static_cast<size_t>(in));
  for (int64_t i = 0; i < in; ++i) g_idx[static_cast<size_t>(i)] = static_cast<int32_t>(i / group);
  std::shuffle(g_idx.begin(), g_idx.end(), rng);
  // Pack: qweight [in/8, out], 8 input rows per int32; qzeros [groups, out/8], 8 outputs per int32.
  std::vector<int32_t> qweight(static_cast<size_t>(in / 8 * out), 0), qzeros(static_cast<size_t>(groups * out / 8), 0);
  for (int64_t i = 0; i < in; ++i)
    for (int64_t o = 0; o < out; ++o) {
      auto& word = qweight[static_cast<size_t>((i / 8) * out + o)];
      word = static_cast<int32_t>(static_cast<uint32_t>(word) |
                                  (static_cast<uint32_t>(q[static_cast<size_t>(i * out + o)]) << (4 * (i % 8))));
    }
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t o = 0; o < out; ++o) {
      auto& word = qzeros[static_cast<size_t>(g * (out / 8) + o / 8)];
      word = static_cast<int32_t>(static_cast<uint32_t>(word) |
                                  (static_cast<uint32_t>(z[static_cast<size_t>(g * out + o)]) << (4 * (o % 8))));
    }
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      const int64_t g = g_idx[static_cast<size_t>(i)];
      const float want = scales[static_cast<size_t>(g * out + o)] *
                         static_cast<float>(q[static_cast<size_t>(i * out + o)] - (z[static_cast<size_t>(g * out + o)] + 1));
      ASSERT_EQ(shared::gptq_int4_value(qweight.data(), qzeros.data(), scales.data(), g_idx.data(), out, i, o), want)
          << "o " << o << " i " << i;
    }
}

// Sort-based routing reference written from transformers' description (independent of route_token).
void reference_route(const shared::RouteParams& p, const std::vector<float>& lg, const std::vector<float>& bias,
                     std::vector<int32_t>& sel, std::vector<double>& w) {
  const int64_t E = p.num_experts;
  std::vector<double> score(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  if (!p.sigmoid_group_limited) {
    const double mx = *std::max_element(lg.begin(), lg.end());
    double s = 0;
    for (int64_t e = 0; e < E; ++e) s += score[static_cast<size_t>(e)] = std::exp(lg[static_cast<size_t>(e)] - mx);
    for (auto& x : score) x /= s;
    choice = score;
  } else {
    for (int64_t e = 0; e < E; ++e) {
      score[static_cast<size_t>(e)] = 1.0 / (1.0 + std::exp(-static_cast<double>(lg[static_cast<size_t>(e)])));
      choice[static_cast<size_t>(e)] = score[static_cast<size_t>(e)] + (bias.empty() ? 0.0 : bias[static_cast<size_t>(e)]);
    }
    if (p.n_group > 1) {
      const int64_t per = E / p.n_group;
      std::vector<std::pair<double, int64_t>> gs;
      for (int64_t g = 0; g < p.n_group; ++g) {
        std::vector<double> m(choice.begin() + g * per, choice.begin() + (g + 1) * per);
        std::sort(m.rbegin(), m.rend());
        gs.push_back({m[0] + (per > 1 ? m[1] : 0.0), g});
      }
      std::stable_sort(gs.begin(), gs.end(), [](auto& a, auto& b) { return a.first > b.first; });
      std::vector<bool> keep(static_cast<size_t>(p.n_group));
      for (int64_t i = 0; i < p.topk_group; ++i) keep[static_cast<size_t>(gs[static_cast<size_t>(i)].second)] = true;
      for (int64_t e = 0; e < E; ++e)
        if (!keep[static_cast<size_t>(e / per)]) choice[static_cast<size_t>(e)] = -INFINITY;
    }
  }
  std::vector<int32_t> idx(static_cast<size_t>(E));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int32_t a, int32_t b) { return choice[static_cast<size_t>(a)] > choice[static_cast<size_t>(b)]; });
  sel.assign(idx.begin(), idx.begin() + p.top_k);
  w.clear();
  double sum = 0;
  for (auto e : sel) sum += w.emplace_back(score[static_cast<size_t>(e)]);
  for (auto& x : w) x = (p.norm_topk_prob ? x / sum : x) * p.routed_scaling_factor;
}

TEST(CudaShared, RouteTokenMatchesSortReference) {
  std::mt19937 rng(9);
  int checked = 0;
  for (int kind = 0; kind < 4; ++kind) {
    shared::RouteParams p;
    p.num_experts = kind == 3 ? 64 : 16;
    p.top_k = kind == 0 ? 2 : 4;
    p.sigmoid_group_limited = kind >= 2;
    p.n_group = kind == 3 ? 8 : 1;
    p.topk_group = kind == 3 ? 3 : 1;
    p.norm_topk_prob = kind != 0;
    p.routed_scaling_factor = kind == 3 ? 2.5 : 1.0;
    for (int t = 0; t < 200; ++t) {
      std::vector<float> lg = random_normal(static_cast<size_t>(p.num_experts), 1000 + t * 7 + kind);
      std::vector<float> bias;
      if (kind == 3) bias = random_normal(static_cast<size_t>(p.num_experts), 77 + t);
      if (t % 10 == 0) lg[3] = lg[5];  // an exact tie: the lower index wins
      std::vector<float> score(static_cast<size_t>(p.num_experts)), choice(score.size()), w(static_cast<size_t>(p.top_k));
      std::vector<int32_t> sel(static_cast<size_t>(p.top_k));
      shared::route_token(p, lg.data(), bias.empty() ? nullptr : bias.data(), score.data(), choice.data(), sel.data(),
                          w.data());
      std::vector<int32_t> rs;
      std::vector<double> rw;
      reference_route(p, lg, bias, rs, rw);
      ASSERT_EQ(sel, rs) << "kind " << kind << " token " << t;
      for (int64_t i = 0; i < p.top_k; ++i) EXPECT_NEAR(w[static_cast<size_t>(i)], rw[static_cast<size_t>(i)], 1e-6 * (1 + std::abs(rw[static_cast<size_t>(i)])));
      ++checked;
    }
  }
  EXPECT_EQ(checked, 800);
  (void)rng;
}

TEST(CudaShared, KeyRangeAndTileVisibilityMatchBruteForce) {
  for (int64_t window : {0, 1, 5, 17}) {
    for (int64_t qf = 0; qf < 40; qf += 3) {
      const int64_t ql = qf + 7;
      int64_t b, e;
      shared::key_range(qf, ql, window, &b, &e);
      for (int64_t k = 0; k < 60; ++k) {
        bool any = false;
        for (int64_t q = qf; q <= ql; ++q) any = any || shared::key_visible(q, k, window);
        EXPECT_EQ(any, k >= b && k < e) << "window " << window << " q " << qf << ".." << ql << " key " << k;
      }
      for (int64_t k0 = 0; k0 < 50; k0 += 4) {
        bool all = true;
        for (int64_t q = qf; q <= ql; ++q)
          for (int64_t k = k0; k < k0 + 4; ++k) all = all && shared::key_visible(q, k, window);
        EXPECT_EQ(all, shared::tile_fully_visible(qf, ql, k0, k0 + 4, window));
      }
    }
  }
  // Brute-force definition: causal and within the window.
  EXPECT_TRUE(shared::key_visible(10, 10, 0));
  EXPECT_FALSE(shared::key_visible(10, 11, 0));
  EXPECT_TRUE(shared::key_visible(10, 6, 5));
  EXPECT_FALSE(shared::key_visible(10, 5, 5));
}

TEST(CudaShared, OnlineSoftmaxTilesEqualFloat64Softmax) {
  std::mt19937 rng(21);
  for (int trial = 0; trial < 50; ++trial) {
    const int T = 1 + trial * 7, dv = 5;
    std::vector<float> s = random_normal(static_cast<size_t>(T), 300 + trial), v = random_normal(static_cast<size_t>(T * dv), 400 + trial);
    for (auto& x : s) x *= 6.0f;
    // A masked prefix (as a sliding window leaves) on some trials.
    const int masked = trial % 3 == 0 ? T / 2 : 0;
    for (int j = 0; j < masked; ++j) s[static_cast<size_t>(j)] = -INFINITY;
    double mx = -INFINITY, sum = 0;
    for (int j = masked; j < T; ++j) mx = std::max(mx, static_cast<double>(s[static_cast<size_t>(j)]));
    std::vector<double> want(dv, 0.0);
    for (int j = masked; j < T; ++j) {
      const double p = std::exp(s[static_cast<size_t>(j)] - mx);
      sum += p;
      for (int e = 0; e < dv; ++e) want[static_cast<size_t>(e)] += p * v[static_cast<size_t>(j * dv + e)];
    }
    // Tiles of random width, as the kernel's key loop sees them.
    shared::OnlineSoftmax st;
    std::vector<float> acc(dv, 0.0f);
    std::uniform_int_distribution<int> wd(1, 9);
    for (int t0 = 0; t0 < T;) {
      const int t1 = std::min(T, t0 + wd(rng));
      float tmax = -INFINITY;
      for (int j = t0; j < t1; ++j) tmax = std::max(tmax, s[static_cast<size_t>(j)]);
      const float a = st.rescale(tmax);
      for (auto& x : acc) x *= a;
      for (int j = t0; j < t1; ++j) {
        const float p = s[static_cast<size_t>(j)] == -INFINITY ? 0.0f : std::exp(s[static_cast<size_t>(j)] - st.m);
        st.l += p;
        for (int e = 0; e < dv; ++e) acc[static_cast<size_t>(e)] += p * v[static_cast<size_t>(j * dv + e)];
      }
      t0 = t1;
    }
    for (int e = 0; e < dv; ++e)
      EXPECT_NEAR(acc[static_cast<size_t>(e)] / st.l, want[static_cast<size_t>(e)] / sum, 2e-5) << "trial " << trial;
    // Merging two halves' states gives the same normaliser.
    shared::OnlineSoftmax a, b;
    for (int j = 0; j < T; ++j) {
      shared::OnlineSoftmax& x = j < T / 2 ? a : b;
      x.rescale(s[static_cast<size_t>(j)]);
      if (s[static_cast<size_t>(j)] != -INFINITY) x.l += std::exp(s[static_cast<size_t>(j)] - x.m);
    }
    float fa, fb;
    a.merge(b, &fa, &fb);
    EXPECT_NEAR(a.l * std::exp(static_cast<double>(a.m) - mx), sum, 1e-4 * sum);
  }
}

// ---- linalg (CPU) ----

std::vector<float> random_matrix(int64_t m, int64_t n, uint64_t seed) { return random_normal(static_cast<size_t>(m * n), seed); }

// max |A − U S Vt| in float64.
double reconstruction_error(const float* A, const linalg::Svd& s) {
  double err = 0;
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      double a = 0;
      for (int64_t r = 0; r < s.k; ++r)
        a += static_cast<double>(s.U[static_cast<size_t>(i * s.k + r)]) * s.S[static_cast<size_t>(r)] * s.Vt[static_cast<size_t>(r * s.n + j)];
      err = std::max(err, std::abs(a - A[i * s.n + j]));
    }
  return err;
}

double orthonormality_error(const std::vector<float>& M, int64_t rows, int64_t cols, bool columns) {
  double err = 0;
  const int64_t k = columns ? cols : rows, len = columns ? rows : cols;
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = 0; b < k; ++b) {
      double d = 0;
      for (int64_t i = 0; i < len; ++i)
        d += static_cast<double>(columns ? M[static_cast<size_t>(i * cols + a)] : M[static_cast<size_t>(a * cols + i)]) *
             (columns ? M[static_cast<size_t>(i * cols + b)] : M[static_cast<size_t>(b * cols + i)]);
      err = std::max(err, std::abs(d - (a == b ? 1.0 : 0.0)));
    }
  return err;
}

TEST(CudaLinalgCpu, SvdReconstructsAndIsOrthonormal) {
  for (auto [m, n] : {std::pair<int64_t, int64_t>{37, 23}, {23, 37}, {64, 64}, {1, 9}}) {
    SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n));
    const std::vector<float> A = random_matrix(m, n, static_cast<uint64_t>(m * 100 + n));
    const linalg::Svd s = linalg::svd(A.data(), m, n);
    ASSERT_EQ(s.k, std::min(m, n));
    EXPECT_LT(reconstruction_error(A.data(), s), 1e-4);
    EXPECT_LT(orthonormality_error(s.U, m, s.k, true), 1e-4);
    EXPECT_LT(orthonormality_error(s.Vt, s.k, n, false), 1e-4);
    for (int64_t i = 1; i < s.k; ++i) EXPECT_GE(s.S[static_cast<size_t>(i - 1)], s.S[static_cast<size_t>(i)]);
  }
  const std::vector<float> B = random_matrix(3 * 10 * 6, 1, 4);
  const auto bs = linalg::svd_batched(B.data(), 3, 10, 6);
  ASSERT_EQ(bs.size(), 3u);
  for (int b = 0; b < 3; ++b) EXPECT_LT(reconstruction_error(B.data() + b * 60, bs[static_cast<size_t>(b)]), 1e-4);
}

TEST(CudaLinalgCpu, RandomizedSvdFindsLowRankSpectrum) {
  // A = X·Y (rank 12) + small noise: the randomized top-12 matches the exact SVD's.
  const int64_t m = 200, n = 150, r = 12;
  const std::vector<float> X = random_matrix(m, r, 1), Y = random_matrix(r, n, 2), N = random_matrix(m, n, 3);
  std::vector<float> A(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double a = 0;
      for (int64_t t = 0; t < r; ++t) a += static_cast<double>(X[static_cast<size_t>(i * r + t)]) * Y[static_cast<size_t>(t * n + j)];
      A[static_cast<size_t>(i * n + j)] = static_cast<float>(a + 1e-3 * N[static_cast<size_t>(i * n + j)]);
    }
  const linalg::Svd exact = linalg::svd(A.data(), m, n);
  const linalg::Svd rs = linalg::svd_randomized(A.data(), m, n, r, 8, 2, 42);
  ASSERT_EQ(rs.k, r);
  for (int64_t i = 0; i < r; ++i)
    EXPECT_NEAR(rs.S[static_cast<size_t>(i)], exact.S[static_cast<size_t>(i)], 1e-4 * exact.S[0]) << i;
  EXPECT_LT(orthonormality_error(rs.U, m, r, true), 1e-4);
  EXPECT_LT(orthonormality_error(rs.Vt, r, n, false), 1e-4);
  // Reconstruction error of the rank-r part is at the noise level.
  EXPECT_LT(reconstruction_error(A.data(), rs), 0.02);
}

TEST(CudaLinalgCpu, EighAndCholesky) {
  const int64_t n = 40;
  const std::vector<float> G = random_matrix(n, n, 8);
  std::vector<float> A(static_cast<size_t>(n * n));  // A = G Gᵀ + n·I: symmetric positive definite
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double a = i == j ? static_cast<double>(n) : 0.0;
      for (int64_t t = 0; t < n; ++t) a += static_cast<double>(G[static_cast<size_t>(i * n + t)]) * G[static_cast<size_t>(j * n + t)];
      A[static_cast<size_t>(i * n + j)] = static_cast<float>(a);
    }
  std::vector<float> w, V;
  linalg::eigh(A.data(), n, w, V);
  for (int64_t i = 1; i < n; ++i) EXPECT_LE(w[static_cast<size_t>(i - 1)], w[static_cast<size_t>(i)]);
  EXPECT_LT(orthonormality_error(V, n, n, true), 1e-4);
  double err = 0, scale = w.back();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double a = 0;
      for (int64_t t = 0; t < n; ++t) a += static_cast<double>(V[static_cast<size_t>(i * n + t)]) * w[static_cast<size_t>(t)] * V[static_cast<size_t>(j * n + t)];
      err = std::max(err, std::abs(a - A[static_cast<size_t>(i * n + j)]));
    }
  EXPECT_LT(err, 1e-5 * scale);
  const std::vector<float> L = linalg::cholesky(A.data(), n);
  err = 0;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      if (j > i) EXPECT_EQ(L[static_cast<size_t>(i * n + j)], 0.0f);
      double a = 0;
      for (int64_t t = 0; t < n; ++t) a += static_cast<double>(L[static_cast<size_t>(i * n + t)]) * L[static_cast<size_t>(j * n + t)];
      err = std::max(err, std::abs(a - A[static_cast<size_t>(i * n + j)]));
    }
  EXPECT_LT(err, 1e-5 * scale);
  std::vector<float> bad = A;
  bad[0] = -1.0f;  // not positive definite
  EXPECT_THROW(linalg::cholesky(bad.data(), n), Error);
}

TEST(CudaDevice, SelectionWithoutGpu) {
  EXPECT_EQ(resolve_device("cpu"), Device::Cpu);
  EXPECT_THROW(resolve_device("gpu"), Error);
  EXPECT_EQ(parse_precision("bf16"), Precision::BF16);
  EXPECT_THROW(parse_precision("fp8"), Error);
  if (cuda_device_count() > 0) {
    EXPECT_EQ(resolve_device("auto"), Device::Cuda);
    GTEST_SKIP() << "a GPU is present: the no-GPU error paths are not reachable";
  }
  EXPECT_EQ(resolve_device("auto"), Device::Cpu);
  try {
    resolve_device("cuda");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("no usable GPU"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  const std::vector<float> A = random_matrix(4, 4, 1);
  EXPECT_THROW(linalg::svd(A.data(), 4, 4, Device::Cuda), Error);
}

}  // namespace
}  // namespace moetool::testing
