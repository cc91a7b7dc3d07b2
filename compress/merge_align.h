// compress/merge_align.h — the arithmetic of merging experts (issue 16's first step; the merge job
// and its grouping come next): neuron alignment by weight matching and frequency-weighted averaging
// (MC-SMoE, "Merge, Then Compress"). A gated expert computes down · (act(gate · x) ⊙ (up · x)); any
// permutation π of its intermediate neurons (gate and up rows, down columns, all by the same π)
// leaves that function unchanged, so before averaging two experts their neurons are put in the order
// that best matches: π maximises Σ_i ⟨w_L,i , w_M,π(i)⟩, with w_·,i neuron i's gate row, up row and
// down column stacked (a linear assignment, solved exactly by kernels/assignment.h).
#pragma once

#include <cstdint>
#include <vector>

namespace moetool {

// One gated expert in float32: gate, up [I, H] (row i: neuron i's input weights), down [H, I].
struct ExpertMatrices {
  int64_t I = 0, H = 0;
  std::vector<float> gate, up, down;
};

// perm[i]: the member's neuron that goes to slot i (to sit beside the leader's neuron i). Throws
// (one line) when the shapes differ.
std::vector<int64_t> align_neurons(const ExpertMatrices& leader, const ExpertMatrices& member);

// The member with its neurons reordered: out neuron i = in neuron perm[i] (gate/up rows, down columns).
ExpertMatrices permute_neurons(const ExpertMatrices& e, const std::vector<int64_t>& perm);

// Σ_m w_m E_m / Σ_m w_m, matrix by matrix (MC-SMoE's frequency-weighted merge; w: routing
// frequencies). Accumulates in double. Throws when the shapes differ, a weight is negative or all
// are zero.
ExpertMatrices weighted_average(const std::vector<const ExpertMatrices*>& experts, const std::vector<double>& w);

// The expert's output for x[n, H] → y[n, H] with SiLU (for tests and measurements; the engine has
// the fast path).
std::vector<float> expert_forward(const ExpertMatrices& e, const float* x, int64_t n);

}  // namespace moetool
