// tests/merge_svd_test.cc — Sub-MoE's joint-SVD merge (compress/merge_svd.h): at full rank the joint
// SVD reproduces every member and the merge equals the frequency-weighted average; members that share a
// rank-r output basis are reproduced at rank r (the shared subspace is found); bad input is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "compress/merge_svd.h"
#include "core/error.h"
#include "tests/test_util.h"

namespace moetool {
namespace {

using testing::random_normal;

float max_abs(const std::vector<float>& v) {
  float m = 0;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}
float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// A float32 SVD is backward stable: ‖A − UΣVᵀ‖₂ ≤ c·p·ε·‖A‖₂ with p the larger dimension (≤ 60 here)
// and ε = 6e-8; an element of the error is at most its spectral norm, and ‖A‖₂ ≤ √(size)·max|A| (size
// ≤ 24·60): c·60·6e-8·38 ≈ 1.4e-4·c. We allow 2e-4 of max|A| (c ≈ 1.5).
constexpr float kRel = 2e-4f;

TEST(MergeSvd, FullRankReproducesEveryMemberAndMergesToTheAverage) {
  const int64_t out = 24, in = 16;
  const auto a = random_normal(out * in, 1), b = random_normal(out * in, 2), c = random_normal(out * in, 3);
  const JointSvd j = joint_svd({a.data(), b.data(), c.data()}, out, in, 0);
  EXPECT_EQ(j.rank, std::min<int64_t>(out, 3 * in));
  for (const auto& [m, w] : {std::pair{0, &a}, {1, &b}, {2, &c}}) {
    const auto r = joint_svd_member(j, static_cast<size_t>(m));
    EXPECT_LE(max_diff(r, *w), kRel * max_abs(*w)) << "member " << m;
  }
  const auto merged = joint_svd_merge(j, {1, 2, 5});
  std::vector<float> want(a.size());
  for (size_t i = 0; i < a.size(); ++i) want[i] = (1 * a[i] + 2 * b[i] + 5 * c[i]) / 8;
  EXPECT_LE(max_diff(merged, want), kRel * max_abs(want));
}

TEST(MergeSvd, SharedBasisIsFoundAtItsRank) {
  // W_m = B · C_m with B [out, r] shared: the group's joint SVD has rank r, and rank r reproduces all.
  const int64_t out = 32, in = 20, r = 5;
  const auto B = random_normal(out * r, 11);
  std::vector<std::vector<float>> W;
  for (uint64_t m = 0; m < 3; ++m) {
    const auto C = random_normal(r * in, 20 + m);
    std::vector<float> w(static_cast<size_t>(out * in), 0.f);
    for (int64_t i = 0; i < out; ++i)
      for (int64_t k = 0; k < r; ++k)
        for (int64_t c = 0; c < in; ++c) w[static_cast<size_t>(i * in + c)] += B[static_cast<size_t>(i * r + k)] * C[static_cast<size_t>(k * in + c)];
    W.push_back(std::move(w));
  }
  const JointSvd j = joint_svd({W[0].data(), W[1].data(), W[2].data()}, out, in, r);
  EXPECT_EQ(j.rank, r);
  for (size_t m = 0; m < 3; ++m) EXPECT_LE(max_diff(joint_svd_member(j, m), W[m]), kRel * max_abs(W[m])) << m;
  // One rank fewer loses a real direction: the check above is not vacuous.
  const JointSvd lo = joint_svd({W[0].data(), W[1].data(), W[2].data()}, out, in, r - 1);
  EXPECT_GT(max_diff(joint_svd_member(lo, 0), W[0]), 1e-2f * max_abs(W[0]));
}

TEST(MergeSvd, SubspaceMergeOfExpertsAndBadInput) {
  const ExpertMatrices e{8, 6, random_normal(48, 31), random_normal(48, 32), random_normal(48, 33)};
  const ExpertMatrices f{8, 6, random_normal(48, 41), random_normal(48, 42), random_normal(48, 43)};
  const ExpertMatrices full = subspace_merge({&e, &f}, {1, 3}, 1.0);
  const ExpertMatrices avg = weighted_average({&e, &f}, {1, 3});
  EXPECT_LE(max_diff(full.gate, avg.gate), kRel * max_abs(avg.gate));
  EXPECT_LE(max_diff(full.down, avg.down), kRel * max_abs(avg.down));
  const ExpertMatrices half = subspace_merge({&e, &f}, {1, 3}, 0.5);
  EXPECT_GT(max_diff(half.up, avg.up), 1e-3f * max_abs(avg.up)) << "a truncated subspace changes random experts";
  EXPECT_THROW(subspace_merge({&e, &f}, {1, 3}, 0.0), Error);
  EXPECT_THROW(subspace_merge({&e, &f}, {0, 0}, 1.0), Error);
  EXPECT_THROW(subspace_merge({}, {}, 1.0), Error);
}

// --device cuda (cuSOLVER): at full rank the merge is the weighted average, as on the CPU, within the
// same float32 backward-stability bound (kRel). (At a truncated rank the kept subspace depends on the
// gap σ_r − σ_{r+1}, so two libraries' results are only as close as that gap allows: not compared.)
TEST(MergeSvd, CudaJointSvdMatchesTheAverageAtFullRank) {
  MOETOOL_REQUIRE_GPU_OR_SKIP();
  const ExpertMatrices e{8, 6, random_normal(48, 51), random_normal(48, 52), random_normal(48, 53)};
  const ExpertMatrices f{8, 6, random_normal(48, 61), random_normal(48, 62), random_normal(48, 63)};
  const ExpertMatrices avg = weighted_average({&e, &f}, {2, 1});
  const ExpertMatrices full = subspace_merge({&e, &f}, {2, 1}, 1.0, Device::Cuda);
  EXPECT_LE(max_diff(full.gate, avg.gate), kRel * max_abs(avg.gate));
  EXPECT_LE(max_diff(full.up, avg.up), kRel * max_abs(avg.up));
  EXPECT_LE(max_diff(full.down, avg.down), kRel * max_abs(avg.down));
}

}  // namespace
}  // namespace moetool
