// tests/cpu_gemm_test.cc — ops::gemm_nt (kernels/cpu_ops.cc) on products large enough to be split by
// output columns over the OpenMP threads (each slice a single-threaded sgemm): against a float64
// product within sgemm's rounding bound, with strided A/B/C, alpha and beta accumulation, widths
// that do not divide into 16-column slices; and equal, element for element, to the same product on
// one thread (no slicing) — each output is one dot product over all of K either way.
#include <gtest/gtest.h>

#include <omp.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

TEST(CpuGemm, SlicedProductsEqualTheFloat64ProductAndTheUnslicedOne) {
  struct Case {
    int64_t M, N, K;
  };
  // M·N·K ≥ 2^24 and N ≥ 64 · threads: the sliced path (with 2+ OpenMP threads).
  for (const Case c : {Case{96, 1000, 200}, Case{33, 4099, 130}, Case{512, 2048, 64}}) {
    SCOPED_TRACE(str(c.M, "x", c.N, "x", c.K));
    const int64_t lda = c.K + 3, ldb = c.K + 5, ldc = c.N + 7;
    const auto A = testing::random_normal(static_cast<size_t>(c.M * lda), 1);
    const auto B = testing::random_normal(static_cast<size_t>(c.N * ldb), 2);
    const auto C0 = testing::random_normal(static_cast<size_t>(c.M * ldc), 3);
    const float alpha = 0.75f, beta = -0.5f;
    std::vector<float> C = C0;
    ops::gemm_nt(c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C.data(), ldc, alpha, beta);
    // float64 reference; sgemm's error bound per element: K·eps·Σ|a·b| (+ the beta term's rounding).
    double worst = 0;
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < ldc; ++j) {
        const size_t at = static_cast<size_t>(i * ldc + j);
        if (j >= c.N) {  // padding columns are never written
          ASSERT_EQ(C[at], C0[at]) << i << "," << j;
          continue;
        }
        double s = 0, mag = 0;
        for (int64_t k = 0; k < c.K; ++k) {
          const double p = static_cast<double>(A[static_cast<size_t>(i * lda + k)]) * B[static_cast<size_t>(j * ldb + k)];
          s += p;
          mag += std::fabs(p);
        }
        const double want = alpha * s + beta * static_cast<double>(C0[at]);
        const double bound = (static_cast<double>(c.K) + 2) * 6e-8 * (std::fabs(alpha) * mag + std::fabs(beta * C0[at]));
        worst = std::max(worst, std::fabs(C[at] - want) / bound);
      }
    EXPECT_LE(worst, 1.0);
    // The same product on one thread: not sliced.
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    std::vector<float> C1 = C0;
    ops::gemm_nt(c.M, c.N, c.K, A.data(), lda, B.data(), ldb, C1.data(), ldc, alpha, beta);
    omp_set_num_threads(threads);
    EXPECT_TRUE(C1 == C);
  }
}

}  // namespace
}  // namespace moetool
