// tests/reference_forward.h — an independent, slow, float64 reference forward pass of every supported
// family, written directly from Hugging Face transformers' modeling code (plain loops, no BLAS, no
// shared code with verify/ or kernels/), to check moetool's inference engine against.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "formats/model.h"

namespace moetool::testing {

// Diagnostics of one reference run, so a test can tell a real disagreement from a routing decision
// that float32 rounding could flip.
struct ReferenceStats {
  // Smallest gap, over all tokens and MoE layers, between the last selected and the first rejected
  // selection score (softmax probability, or deepseek_v3's biased sigmoid score / group score).
  double min_routing_margin = std::numeric_limits<double>::infinity();
};

// RoPE frequencies of one config, as transformers' ROPE_INIT_FUNCTIONS compute them (in double).
struct ReferenceRope {
  std::vector<double> inv_freq;  // [dim / 2]
  double attention_factor = 1.0;  // multiplies cos and sin
};
// dim: rotated dims per head; seq_len: the length processed (only "dynamic" depends on it).
ReferenceRope reference_rope(const ModelConfig& c, int64_t dim, int64_t seq_len);

// Teacher-forced logits [tokens.size(), vocab] of `m` on `tokens` (positions 0..n-1), in double.
std::vector<double> reference_logits(const Model& m, const std::vector<int32_t>& tokens,
                                     ReferenceStats* stats = nullptr);

}  // namespace moetool::testing
