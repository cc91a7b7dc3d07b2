// engine/rope.cc — RoPE frequency tables (see rope.h).
#include "engine/rope.h"

#include <algorithm>
#include <cmath>

namespace moetool {

double yarn_get_mscale(double scale, double m) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * m * std::log(scale) + 1.0;
}

float mla_attention_scale(const ModelConfig& c, int64_t dq) {
  float scale = 1.0f / std::sqrt(static_cast<float>(dq));
  if (c.rope.type != RopeScaling::Type::Default && c.rope.mscale_all_dim.value_or(0.0) != 0.0) {
    const float ms = static_cast<float>(yarn_get_mscale(c.rope.factor, *c.rope.mscale_all_dim));
    scale *= ms * ms;
  }
  return scale;
}

RopeTable rope_table(const ModelConfig& c, int64_t dim, int64_t seq_len) {
  RopeTable t;
  const int64_t half = dim / 2;
  double base = c.rope_theta;
  const RopeScaling& rs = c.rope;
  using T = RopeScaling::Type;
  if (rs.type == T::Dynamic) {
    const int64_t maxp = rs.original_max_position_embeddings ? rs.original_max_position_embeddings
                                                               : c.max_position_embeddings;
    if (seq_len > maxp) {
      base = base * std::pow(rs.factor * static_cast<double>(seq_len) / static_cast<double>(maxp) - (rs.factor - 1.0),
                             static_cast<double>(dim) / static_cast<double>(dim - 2));
    }
  }
  // pos_freqs[i] = base^(2i / dim), as float32 (torch computes this in float32).
  std::vector<float> pos_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    pos_freq[static_cast<size_t>(i)] =
        static_cast<float>(std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim)));
  t.inv_freq.resize(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) t.inv_freq[static_cast<size_t>(i)] = 1.0f / pos_freq[static_cast<size_t>(i)];

  switch (rs.type) {
    case T::Default:
    case T::Dynamic:
      break;
    case T::Linear:
      for (auto& f : t.inv_freq) f = static_cast<float>(f / rs.factor);
      break;
    case T::Llama3: {
      const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wl = old_ctx / rs.low_freq_factor, high_wl = old_ctx / rs.high_freq_factor;
      for (auto& f : t.inv_freq) {
        const double wl = 2.0 * M_PI / f;
        double v = wl > low_wl ? f / rs.factor : f;
        if (!(wl < high_wl) && !(wl > low_wl)) {
          const double smooth = (old_ctx / wl - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
          v = (1.0 - smooth) * v / rs.factor + smooth * v;
        }
        f = static_cast<float>(v);
      }
      break;
    }
    case T::Yarn: {
      const double factor = rs.factor;
      const double orig = rs.original_max_position_embeddings ? static_cast<double>(rs.original_max_position_embeddings)
                                                              : static_cast<double>(c.max_position_embeddings);
      if (rs.attention_factor) {
        t.attention_factor = static_cast<float>(*rs.attention_factor);
      } else if (rs.mscale.value_or(0.0) != 0.0 && rs.mscale_all_dim.value_or(0.0) != 0.0) {
        t.attention_factor = static_cast<float>(yarn_get_mscale(factor, *rs.mscale) /
                                                yarn_get_mscale(factor, *rs.mscale_all_dim));
      } else {
        t.attention_factor = static_cast<float>(yarn_get_mscale(factor, 1.0));
      }
      auto corr_dim = [&](double rot) {
        return (static_cast<double>(dim) * std::log(orig / (rot * 2.0 * M_PI))) / (2.0 * std::log(base));
      };
      double low = std::floor(corr_dim(rs.beta_fast)), high = std::ceil(corr_dim(rs.beta_slow));
      low = std::max(low, 0.0);
      high = std::min(high, static_cast<double>(dim - 1));
      if (low == high) high += 0.001;
      for (int64_t i = 0; i < half; ++i) {
        const float pf = pos_freq[static_cast<size_t>(i)];
        const float extra = 1.0f / pf, inter = static_cast<float>(1.0 / (factor * pf));
        float ramp = static_cast<float>((static_cast<double>(i) - low) / (high - low));
        ramp = std::clamp(ramp, 0.0f, 1.0f);
        const float extra_factor = 1.0f - ramp;
        t.inv_freq[static_cast<size_t>(i)] = inter * (1.0f - extra_factor) + extra * extra_factor;
      }
      break;
    }
  }
  return t;
}

}  // namespace moetool
