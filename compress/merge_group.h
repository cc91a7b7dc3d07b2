// compress/merge_group.h — which experts of a layer merge together (issue 16): E experts into K groups.
//   dominant (MC-SMoE): the K most frequently routed experts lead; every other expert joins the
//     leader it is most similar to.
//   hierarchical (HC-SMoE): agglomerative clustering with average linkage — repeatedly join the two
//     clusters whose mean pairwise similarity is highest — until K clusters remain.
// Similarity is any symmetric E×E matrix (larger = more alike): cosine of router-logit columns over
// calibration tokens (MC-SMoE), of expert outputs on shared tokens (HC-SMoE, Sub-MoE), or of weights.
#pragma once

#include <cstdint>
#include <vector>

namespace moetool {

struct MergeGroup {
  int64_t leader = -1;              // the member whose router row and neuron order the merge keeps
  std::vector<int64_t> members;     // ascending, leader included
};

// Groups in output order (ascending leader id). Ties: the lower expert id wins everywhere.
// Throws (one line) when K is not in [1, E] or the inputs' sizes disagree.
std::vector<MergeGroup> group_dominant(const std::vector<double>& freq, const std::vector<double>& sim, int64_t K);
std::vector<MergeGroup> group_hierarchical(const std::vector<double>& freq, const std::vector<double>& sim, int64_t K);

// Cosine similarity of the rows of X[E, D] (as columns of a [D, E] logit matrix, pass its transpose):
// [E, E], 1 on the diagonal; a zero row is similar to nothing (0).
std::vector<double> row_cosine_similarity(const float* X, int64_t E, int64_t D);

}  // namespace moetool
