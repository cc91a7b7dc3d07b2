// compress/merge_svd.h — Sub-MoE's subspace merge of a group of experts: for each of the three
// matrices (W_m [out, in] per member m), the members are concatenated along the input dimension,
// A = [W_1 | W_2 | … | W_n] [out, n·in], and one truncated SVD A ≈ U_r Σ_r V_rᵀ gives a basis U_r of
// the output space shared by the whole group and per-member coefficient blocks V_mᵀ [r, in] (the
// columns of V_rᵀ that belong to member m: W_m ≈ U_r Σ_r V_mᵀ). The merged matrix keeps the shared
// basis and averages the coefficients by routing frequency: W = U_r Σ_r (Σ_m f_m V_mᵀ / Σ_m f_m).
// At full rank this is the frequency-weighted average of the members; below it, each member is first
// projected onto the group's top-r shared subspace (what Sub-MoE keeps of an expert). SVD:
// kernels/linalg.h (LAPACK on the CPU, cuSOLVER on the GPU).
#pragma once

#include <cstdint>
#include <vector>

#include "compress/merge_align.h"
#include "kernels/device.h"

namespace moetool {

struct JointSvd {
  int64_t out = 0, in = 0, rank = 0;
  std::vector<float> US;                 // [out, rank]: U_r Σ_r
  std::vector<std::vector<float>> Vt;    // per member [rank, in]
};

// W: the members' [out, in] matrices (row-major); rank 0 or ≥ min(out, n·in): full rank. Throws on
// an empty group.
JointSvd joint_svd(const std::vector<const float*>& W, int64_t out, int64_t in, int64_t rank,
                   Device dev = Device::Cpu);

// Member m reconstructed from the joint SVD, U_r Σ_r V_mᵀ [out, in].
std::vector<float> joint_svd_member(const JointSvd& j, size_t m);

// U_r Σ_r (Σ_m w_m V_mᵀ / Σ_m w_m) [out, in]; w as in weighted_average.
std::vector<float> joint_svd_merge(const JointSvd& j, const std::vector<double>& w);

// The Sub-MoE merge of a group of (aligned) experts, each matrix at rank ⌈rank_fraction · min(out, n·in)⌉
// (rank_fraction 1: full rank).
ExpertMatrices subspace_merge(const std::vector<const ExpertMatrices*>& experts, const std::vector<double>& w,
                              double rank_fraction, Device dev = Device::Cpu);

}  // namespace moetool
