// verify/score_device.h — VerifyAccumulator's per-row scoring for logits a CUDA engine left in GPU
// memory (Engine::logits_on_device): the same statistics in double, computed on the GPU
// (cuda::score_logit_rows), so a chunk sends back five numbers per position instead of its logits.
#pragma once

#include <cstdint>
#include <vector>

#include "verify/metrics.h"

namespace moetool {

// Rows [first_scored, n_tokens − 1) of base and candidate logits [n_tokens, vocab] (device pointers),
// row i predicting tokens[i + 1] (host ids). The same checks and error messages as
// VerifyAccumulator::add_chunk: token ids outside the vocabulary, NaN/+inf logits, rows of −inf.
std::vector<ScoredRow> score_rows_on_device(const float* base, const float* cand, const int32_t* tokens,
                                            int64_t n_tokens, int64_t vocab, int64_t first_scored);

// The top token of one logits row in GPU memory and its probability (the row is copied to the
// host: used for the few worst positions of a chunk).
struct RowTop {
  int32_t id = -1;
  double p = kNaN;
};
RowTop row_top_on_device(const float* drow, int64_t vocab);

}  // namespace moetool
