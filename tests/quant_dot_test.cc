// tests/quant_dot_test.cc — the integer dot path (kernels/quant_dot.h), on seeded random weights and
// activations, for every block type, every instruction set this CPU has, and shapes that are not
// multiples of the 4 × 4 tile:
//  * unpacking: a·(q − o) + b is ggml's decoded weight, to the rounding of ggml's own float ops;
//  * activations: |x − dx·p| ≤ dx/2 with dx = max|x|/127, and the sums/inits the kernels use;
//  * kernels against a float64 evaluation of the same integer formula. Bound (derived): each block
//    term I·fl(a·dx) carries two roundings, the FMA chain over nb blocks per lane and the 3-step lane
//    sum (and the b terms' own chain) at most nb + 6 more, so |y − y64| ≤ γ_{nb+8} · T with
//    T = Σ |terms| and γ_k = k·u/(1 − k·u), u = 2⁻²⁴. A wrong lane, scale, offset or half breaks
//    this by orders of magnitude (checked: the bound is < 1e-4 of the outputs' size);
//  * the engine's matrices (ggml blocks and GPTQ) in Int8 mode against the float64 product of the
//    decoded weights and the unquantized activations: the bound adds the activation rounding
//    Σ_j (dx_j/2)·Σ_{i∈j} |w_i|; what has no integer path falls back to the float path exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "formats/ggml_quants.h"
#include "compress/int_quant.h"
#include "kernels/linear_gptq.h"
#include "kernels/linear_quant.h"
#include "kernels/quant_dot.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

const GGMLType kTypes[] = {GGMLType::Q8_0, GGMLType::Q4_0, GGMLType::Q4_1, GGMLType::Q5_0,
                           GGMLType::Q5_1, GGMLType::Q4_K, GGMLType::Q5_K, GGMLType::Q6_K};

double gamma_k(int64_t k) {
  const double u = std::ldexp(1.0, -24);
  return k * u / (1 - k * u);
}

std::vector<uint8_t> quantize(GGMLType t, const std::vector<float>& W, int64_t rows, int64_t cols) {
  std::vector<uint8_t> q(rows * ggml_row_size(t, cols));
  quantize_rows(t, W.data(), q.data(), rows, cols, nullptr, "w");
  return q;
}

// Restores the activations' previous mode at the end of a test.
struct DotModeGuard {
  QuantDot saved = quant_dot();
  ~DotModeGuard() { set_quant_dot(saved); }
};

TEST(QuantDot, UnpackedLevelsDecodeLikeGgml) {
  const int64_t rows = 5, cols = 512;
  const auto W = testing::random_normal(static_cast<size_t>(rows * cols), 11);
  for (GGMLType t : kTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    const auto bytes = quantize(t, W, rows, cols);
    std::vector<float> D(W.size());
    dequantize_rows(t, bytes.data(), D.data(), rows, cols);
    U8Rows u;
    unpack_ggml_rows(t, bytes.data(), rows, cols, &u);
    ASSERT_EQ(u.nb, cols / 32);
    EXPECT_EQ(u.offset, ggml_int8_offset(t));
    const double eps = std::ldexp(1.0, -24);
    int64_t distinct_halves = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t j = c / 32, h = (c % 32) / 16;
        const double a = u.a(r, j)[4 * h], b = u.b[r * u.nb + j];
        const int q = u.q(r, j)[c % 32];
        if (t != GGMLType::Q8_0) EXPECT_LE(q, 63);
        const double w = a * (q - u.offset) + b;
        // ggml: float(s·float(q + o)) + m — two roundings of at most u relative each.
        EXPECT_NEAR(w, D[r * cols + c], 2 * eps * (std::fabs(a * (q - u.offset)) + std::fabs(b)) + 1e-30);
        if (h == 1 && u.a(r, j)[0] != u.a(r, j)[4]) ++distinct_halves;
        if (!u.has_b) EXPECT_EQ(b, 0.0);
      }
    // Q6_K's two 16-element halves have their own scales; the others share one.
    if (t == GGMLType::Q6_K)
      EXPECT_GT(distinct_halves, 0);
    else
      EXPECT_EQ(distinct_halves, 0);
  }
}

TEST(QuantDot, ActivationsRoundWithinHalfAStep) {
  const int64_t n = 3, cols = 96;
  auto X = testing::random_normal(static_cast<size_t>(n * cols), 12);
  for (int i = 32; i < 64; ++i) X[i] = 0.0f;  // an all-zero block: dx = 0, p = 0
  Q8Acts a;
  quantize_acts(X.data(), n, cols, 8, &a);
  ASSERT_EQ(a.nb, 3);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < a.nb; ++j) {
      const int64_t k = t * a.nb + j;
      float amax = 0;
      int32_t half[2] = {0, 0};
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(X[t * cols + j * 32 + i]));
      EXPECT_FLOAT_EQ(a.d(t, j), amax / 127.0f);
      for (int i = 0; i < 32; ++i) {
        const int p = a.p(t, j)[i];
        EXPECT_LE(std::abs(p), 127);
        EXPECT_LE(std::fabs(X[t * cols + j * 32 + i] - a.d(t, j) * p), a.d(t, j) * 0.5f * (1 + 1e-6f));
        half[i / 16] += p;
      }
      EXPECT_EQ(a.init(t, j)[0], -8 * half[0]);
      EXPECT_EQ(a.init(t, j)[4], -8 * half[1]);
      for (int l : {1, 2, 3, 5, 6, 7}) EXPECT_EQ(a.init(t, j)[l], 0);
      EXPECT_FLOAT_EQ(a.sum[k], a.d(t, j) * static_cast<float>(half[0] + half[1]));
    }
  EXPECT_EQ(a.d(0, 1), 0.0f);
  EXPECT_THROW(quantize_acts(X.data(), 1, 48, 0, &a), Error);
}

// y64 and T (see the header) for row r of W and token t of X.
void reference(const U8Rows& W, const Q8Acts& X, int64_t r, int64_t t, double* y, double* T) {
  *y = 0;
  *T = 0;
  for (int64_t j = 0; j < W.nb; ++j) {
    int64_t I[2] = {0, 0};
    for (int i = 0; i < 32; ++i)
      I[i / 16] += (int64_t{W.q(r, j)[i]} - W.offset) * X.p(t, j)[i];
    for (int h = 0; h < 2; ++h) {
      const double term = double(I[h]) * W.a(r, j)[4 * h] * X.d(t, j);
      *y += term;
      *T += std::fabs(term);
    }
    const double bt = double(W.b[r * W.nb + j]) * X.sum[t * X.nb + j];
    *y += bt;
    *T += std::fabs(bt);
  }
}

TEST(QuantDot, KernelsMatchTheIntegerFormulaInFloat64) {
  std::vector<DotPath> paths;
  for (DotPath p : {DotPath::Scalar, DotPath::Avx2, DotPath::Avx512Vnni})
    if (dot_path_supported(p)) paths.push_back(p);
    else std::printf("[ SKIPPED  ] dot path %s: not supported by this CPU\n", dot_path_name(p));
  for (GGMLType t : kTypes)
    for (int64_t cols : {256, 768}) {
      const int64_t rows = 11;
      auto W = testing::random_normal(static_cast<size_t>(rows * cols), 13 + cols);
      auto bytes = quantize(t, W, rows, cols);
      if (t == GGMLType::Q8_0)  // level −128 (never written by ggml, legal in a file): the AVX2 sign trick's edge
        for (int64_t k = 0; k < rows * cols / 32; k += 3) bytes[k * 34 + 2 + (k % 32)] = 0x80;
      U8Rows u;
      unpack_ggml_rows(t, bytes.data(), rows, cols, &u);
      for (int64_t n : {1, 2, 7}) {
        auto X = testing::random_normal(static_cast<size_t>(n * cols), 14 + n);
        Q8Acts a;
        quantize_acts(X.data(), n, cols, u.offset, &a);
        const auto Y0 = testing::random_normal(static_cast<size_t>(n * rows), 15);
        for (DotPath p : paths)
          for (float beta : {0.0f, 0.5f}) {
            SCOPED_TRACE(::testing::Message() << ggml_type_name(t) << " cols=" << cols << " n=" << n << " "
                                            << dot_path_name(p) << " beta=" << beta);
            std::vector<float> Y = Y0;
            dot_rows(u, a, Y.data(), rows, beta, p);
            double worst = 0, size = 0;
            for (int64_t tt = 0; tt < n; ++tt)
              for (int64_t r = 0; r < rows; ++r) {
                double y, T;
                reference(u, a, r, tt, &y, &T);
                const double y0 = Y0[tt * rows + r];
                y += beta * y0;
                T += std::fabs(beta * y0);
                const double bound = gamma_k(u.nb + 8) * T;
                const double err = std::fabs(Y[tt * rows + r] - y);
                EXPECT_LE(err, bound) << "row " << r << " token " << tt;
                worst = std::max(worst, bound);
                size = std::max(size, std::fabs(y));
              }
            EXPECT_LT(worst, 1e-4 * size);  // the bound is tight enough to catch a wrong term
          }
      }
    }
}

// A matrix in Int8 mode against float64 (the decoded weights times the unquantized activations), for
// the fused and tiled shapes alike; `int8` false: the matrix must fall back to the float path exactly.
void check_int8_matmul(const WeightMatrix& m, bool int8, uint64_t seed) {
  DotModeGuard guard;
  const int64_t rows = m.rows(), cols = m.cols();
  std::vector<float> D(static_cast<size_t>(rows * cols));
  m.to_dense(D.data());
  for (int64_t n : {1, 5, 40}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    const auto X = testing::random_normal(static_cast<size_t>(n * cols), seed + n);
    Q8Acts a;
    quantize_acts(X.data(), n, cols, 0, &a);
    std::vector<float> Yi(n * rows), Yf(n * rows);
    set_quant_dot(QuantDot::Int8);
    m.matmul(X.data(), n, Yi.data());
    set_quant_dot(QuantDot::Float);
    m.matmul(X.data(), n, Yf.data());
    if (!int8) {
      EXPECT_EQ(Yi, Yf) << "expected the float path";
      continue;
    }
    double differs = 0, worst_ratio = 0, err2 = 0, expect2 = 0;
    for (int64_t tt = 0; tt < n; ++tt)
      for (int64_t r = 0; r < rows; ++r) {
        double y = 0, act = 0, T = 0, var = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const double w = D[r * cols + c], x = X[tt * cols + c], dx = a.d(tt, c / 32);
          y += w * x;
          act += std::fabs(w) * 0.5 * dx;
          T += std::fabs(w) * (std::fabs(x) + 0.5 * dx);
          var += w * w * dx * dx / 12;  // uniform rounding
        }
        // activation rounding + float part (γ_{nb+8}) + the unpacked-vs-decoded weights (2u per weight)
        const double bound = act + (gamma_k(cols / 32 + 8) + gamma_k(2)) * T;
        const double err = std::fabs(Yi[tt * rows + r] - y);
        EXPECT_LE(err, bound) << "row " << r << " token " << tt;
        worst_ratio = std::max(worst_ratio, err / bound);
        differs = std::max(differs, double(std::fabs(Yi[tt * rows + r] - Yf[tt * rows + r])));
        err2 += err * err;
        expect2 += var;
      }
    EXPECT_GT(differs, 0.0) << "Int8 mode did not take the integer path";
    EXPECT_GT(worst_ratio, 0.01) << "bound far looser than the measured error";
    // The worst case above assumes every rounding error aligned; on random data they are independent,
    // uniform in ±dx/2: the error's RMS is that of Σ w·e, √(Σ w²·dx²/12). Within a factor 1.5 either way
    // (a kernel with the wrong scale or unrounded activations misses it).
    const double ratio = std::sqrt(err2 / expect2);
    EXPECT_GT(ratio, 1 / 1.5);
    EXPECT_LT(ratio, 1.5);
  }
}

TEST(QuantDot, Int8MatmulWithinTheActivationRoundingOfFloat64) {
  const int64_t rows = 70, cols = 512;
  const auto W = testing::random_normal(static_cast<size_t>(rows * cols), 16);
  for (GGMLType t : kTypes) {
    SCOPED_TRACE(ggml_type_name(t));
    check_int8_matmul(*quantize_matrix(t, W.data(), rows, cols, "w"), true, 17);
  }
  // F16/BF16 have no integer path: Int8 mode leaves them on the float path.
  check_int8_matmul(*quantize_matrix(GGMLType::F16, W.data(), rows, cols, "w"), false, 18);
}

// GPTQ int2..6 (levels q − z + 2^bits), every group size a 32-block fits in, symmetric or not; int7/8
// and an act-order g_idx whose groups change inside a 32-block stay on the float path.
TEST(QuantDot, GptqInt8MatmulWithinTheActivationRoundingOfFloat64) {
  const int64_t rows = 96, cols = 256;
  const auto W = testing::random_normal(static_cast<size_t>(rows * cols), 19);
  for (int bits : {2, 3, 4, 5, 6, 7, 8})
    for (int64_t group : {int64_t{32}, int64_t{128}, int64_t{-1}})
      for (bool sym : {true, false}) {
        SCOPED_TRACE(::testing::Message() << "int" << bits << " g" << group << (sym ? " sym" : " asym"));
        const IntQuantized q = rtn_quantize(W.data(), rows, cols, IntQuantSpec{bits, group, sym});
        check_int8_matmul(*make_gptq_matrix(q, "w"), bits <= 6, 20);
      }
  IntQuantized q = rtn_quantize(W.data(), rows, cols, IntQuantSpec{4, 32, true});
  for (int64_t c = 0; c < cols; ++c) q.g_idx[c] = static_cast<int32_t>((c * 5 + c / 7) % q.ngroups);
  check_int8_matmul(*make_gptq_matrix(q, "w"), false, 21);
  for (int64_t c = 0; c < cols; ++c) q.g_idx[c] = static_cast<int32_t>((c / 32 * 3) % q.ngroups);  // permuted, 32-aligned
  check_int8_matmul(*make_gptq_matrix(q, "w"), true, 22);
}

}  // namespace
}  // namespace moetool
