// engine/rope.h — rotary-embedding frequencies for every scaling variant transformers implements
// for our families (default, linear, dynamic NTK, llama3, yarn), and the attention factor that
// scales cos/sin (yarn). Computed as transformers' _compute_*_parameters do, in float32 results.
#pragma once

#include <cstdint>
#include <vector>

#include "formats/model_config.h"

namespace moetool {

struct RopeTable {
  std::vector<float> inv_freq;  // [rot_dim / 2]
  float attention_factor = 1.0f;  // multiplies cos and sin
};

// rot_dim: the rotated dims per head (head_dim, or qk_rope_head_dim for MLA). seq_len: the total
// length being processed (only the dynamic variant depends on it).
RopeTable rope_table(const ModelConfig& c, int64_t rot_dim, int64_t seq_len);

// yarn's mscale: 1 for scale ≤ 1, else 0.1·m·ln(scale) + 1.
double yarn_get_mscale(double scale, double m);

// MLA's softmax scale for query/key width dq: 1/√dq, times mscale(factor, mscale_all_dim)² under
// YaRN-style scaling with mscale_all_dim (DeepSeek-V3), as transformers does.
float mla_attention_scale(const ModelConfig& c, int64_t dq);

}  // namespace moetool
