// convert/split.h — partitions of an FFN's intermediate neurons into equal groups (the experts of
// factorization): seeded random; LLaMA-MoE's balanced k-means on L2-normalised gate (or up) rows;
// MoEfication's balanced clustering of the neuron co-activation graph measured on calibration text;
// and the choice of always-active "shared" neurons (Read-ME / DeepSeek style).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetool {

enum class SplitMethod { Random, KMeans, Coactivation };
SplitMethod parse_split_method(const std::string& s);  // "random" | "kmeans" | "coactivation"
const char* split_method_name(SplitMethod m);

// groups[g] = ascending neuron indices of group g; all groups the same size.
using NeuronGroups = std::vector<std::vector<int64_t>>;

// Each point i gets a cluster in [0, K) so that every cluster has exactly n / K points (n divisible
// by K), greedily maximising Σ score[i, cluster(i)] (pairs taken in descending score; ties by index).
std::vector<int32_t> balanced_assign(const std::vector<float>& score, int64_t n, int64_t K);

// `neurons` (n of them, n divisible by `groups`) split uniformly at random with stream `key`.
NeuronGroups split_random(const std::vector<int64_t>& neurons, int64_t groups, uint64_t key);

// Balanced k-means (cosine) on the rows rows[i, 0..dim) of the given neurons, L2-normalised;
// k-means++ seeding from stream `key`.
NeuronGroups split_kmeans(const float* rows, int64_t dim, const std::vector<int64_t>& neurons, int64_t groups,
                          uint64_t key, int max_iters = 50);

// Co-activation affinity of neurons from activations A[T, I]: C_ij = Σ_t max(a_ti·a_tj, 0), returned
// for the listed neurons as a dense [n, n] matrix (row-major, double).
std::vector<double> coactivation_matrix(const float* A, int64_t T, int64_t I, const std::vector<int64_t>& neurons);

// Balanced partition of the co-activation graph maximising the normalised affinity
// Ĉ_ij = C_ij / sqrt(C_ii C_jj) kept inside groups: balanced k-means on the neurons' affinity
// profiles (rows of Ĉ) as a start, then pairwise swaps between groups while they gain. `within` (if given) receives the fraction of the off-diagonal
// co-activation mass inside groups (1/groups on average for a random split).
NeuronGroups split_coactivation(const std::vector<double>& C, const std::vector<int64_t>& neurons, int64_t groups,
                                uint64_t key, double* within = nullptr);
// That fraction for any partition of `neurons` (C as from coactivation_matrix over `neurons`).
double coactivation_within(const std::vector<double>& C, const std::vector<int64_t>& neurons,
                           const NeuronGroups& groups);

// The `count` neurons most often active on A[T, I]: neuron i is active on token t when
// |a_ti| exceeds the token's mean |a_t·|. Ties by total |a|, then index. Ascending indices.
std::vector<int64_t> most_active_neurons(const float* A, int64_t T, int64_t I, int64_t count);

}  // namespace moetool
