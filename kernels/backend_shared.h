// kernels/backend_shared.h — pure per-element / per-token logic shared by the CPU engine, the CUDA
// kernels (kernels/cuda/*.cu) and CPU unit tests: bf16 rounding, the GPTQ v1 int4 decoder, MoE routing
// selection for one token (softmax top-k; sigmoid + correction bias, group-limited), the
// causal/sliding-window key range of a query tile and the online-softmax (FlashAttention) running
// state; the ggml block decoders are formats/ggml_blocks.h's. Everything is `__host__ __device__`
// inline under nvcc and plain inline elsewhere, with no allocation, no exceptions and no library
// calls beyond exp, so the code the GPU runs is the code the CPU tests check.
#pragma once

#include <cmath>
#include <cstdint>

#include "formats/ggml_blocks.h"  // MOETOOL_HD, the ggml block decoders, half/bf16 → float

namespace moetool::shared {

using ggml::bf16_to_float;

MOETOOL_HD float hd_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}

// float32 → bfloat16, round to nearest even; NaN stays NaN.
MOETOOL_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = ggml::float_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// x rounded to the nearest bf16 value (as float32): a bf16 engine's view of a weight or input.
MOETOOL_HD float round_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }

// ---- GPTQ v1 int4 (AutoGPTQ / transformers layout) ----
// qweight [in/8, out] int32: q[i, o] = (qweight[i/8, o] >> 4·(i mod 8)) & 15.
// qzeros [groups, out/8] int32: z[g, o] = (qzeros[g, o/8] >> 4·(o mod 8)) & 15 (stored minus one).
// scales [groups, out] float; g_idx [in] int32 group of input column i.
// W[o, i] = scales[g, o] · (q[i, o] − (z[g, o] + 1)) with g = g_idx[i].
MOETOOL_HD float gptq_int4_value(const int32_t* qweight, const int32_t* qzeros, const float* scales,
                                 const int32_t* g_idx, int64_t out_features, int64_t i, int64_t o) {
  const uint32_t qw = static_cast<uint32_t>(qweight[(i >> 3) * out_features + o]);
  const int q = static_cast<int>((qw >> (4 * (i & 7))) & 15u);
  const int64_t g = g_idx[i];
  const uint32_t qz = static_cast<uint32_t>(qzeros[g * (out_features >> 3) + (o >> 3)]);
  const int z = static_cast<int>((qz >> (4 * (o & 7))) & 15u) + 1;
  return scales[g * out_features + o] * static_cast<float>(q - z);
}

// ---- MoE routing for one token (mirrors transformers; the CPU engine calls this too) ----
struct RouteParams {
  int64_t num_experts = 0, top_k = 0;
  bool sigmoid_group_limited = false;  // false: softmax top-k
  int64_t n_group = 1, topk_group = 1;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
};

// Chooses top_k experts for one token from router logits lg[E]: sel[k] (descending by choice score,
// ties to the lower index), w[k] their routing weights. bias[E] (may be null) is the correction
// bias added for selection only. score[E], choice[E] are scratch.
MOETOOL_HD void route_token(const RouteParams& p, const float* lg, const float* bias, float* score, float* choice,
                            int32_t* sel, float* w) {
  const int64_t E = p.num_experts, k = p.top_k;
  if (!p.sigmoid_group_limited) {
    float mx = lg[0];
    for (int64_t e = 1; e < E; ++e) mx = lg[e] > mx ? lg[e] : mx;
    double s = 0;
    for (int64_t e = 0; e < E; ++e) s += (score[e] = hd_exp(lg[e] - mx));
    for (int64_t e = 0; e < E; ++e) choice[e] = score[e] = static_cast<float>(score[e] / s);
  } else {
    for (int64_t e = 0; e < E; ++e) {
      score[e] = 1.0f / (1.0f + hd_exp(-lg[e]));
      choice[e] = score[e] + (bias ? bias[e] : 0.0f);
    }
    if (p.n_group > 1) {
      const int64_t per = E / p.n_group;
      // Group score: sum of its two best choice scores (one when a group has one expert). Kept
      // groups: the topk_group best, ties to the lower group index (a stable descending sort).
      // Dropped groups' experts are masked to −inf (transformers ≥ 5, DeepSeek's reference).
      uint64_t kept = 0;  // bit g: group g kept (n_group ≤ 64)
      for (int64_t r = 0; r < p.topk_group; ++r) {
        int64_t best = -1;
        float best_sum = 0;
        for (int64_t g = 0; g < p.n_group; ++g) {
          if (kept >> g & 1u) continue;
          float m1 = -INFINITY, m2 = -INFINITY;
          for (int64_t e = g * per; e < (g + 1) * per; ++e) {
            const float c = choice[e];
            if (c > m1) {
              m2 = m1;
              m1 = c;
            } else if (c > m2) {
              m2 = c;
            }
          }
          const float gsum = per >= 2 ? (0.0f + m1) + m2 : 0.0f + m1;
          if (best < 0 || gsum > best_sum) {
            best = g;
            best_sum = gsum;
          }
        }
        kept |= uint64_t{1} << best;
      }
      for (int64_t e = 0; e < E; ++e)
        if (!(kept >> (e / per) & 1u)) choice[e] = -INFINITY;
    }
  }
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) {
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e) {
      bool taken = false;
      for (int64_t t = 0; t < i; ++t) taken = taken || sel[t] == e;
      if (taken) continue;
      if (best < 0 || choice[e] > choice[best]) best = e;
    }
    sel[i] = static_cast<int32_t>(best);
    w[i] = score[best];
    sum += w[i];
  }
  if (p.norm_topk_prob) {
    const double denom = p.sigmoid_group_limited ? sum + 1e-20 : sum;
    for (int64_t i = 0; i < k; ++i) w[i] = static_cast<float>(w[i] / denom);
  }
  if (p.routed_scaling_factor != 1.0)
    for (int64_t i = 0; i < k; ++i) w[i] = static_cast<float>(w[i] * p.routed_scaling_factor);
}

// ---- attention tiling ----
// Whether key position kpos is visible from query position qpos (causal; window > 0 keeps the
// last `window` positions: qpos − window < kpos ≤ qpos).
// The bf16 attention of the CUDA engine (tensor cores) and its CPU emulation (ops::attention_bf16)
// work through keys in tiles of this many, in ascending order.
constexpr int kAttnKeyTile = 64;
// Whether the bf16 attention takes the tensor-core path (else float32): prefill of ≥ 16 rows, equal
// head dims of 16, 32, 64 or 128, row strides of whole 16-byte units (the CUDA side also needs
// 16-byte-aligned base pointers, which its buffers have).
MOETOOL_HD bool attention_bf16_tiles(int64_t n, int64_t dk, int64_t dv, int64_t q_stride, int64_t k_stride,
                                     int64_t v_stride) {
  return n >= 16 && dk == dv && (dk == 16 || dk == 32 || dk == 64 || dk == 128) && q_stride % 4 == 0 &&
         k_stride % 4 == 0 && v_stride % 4 == 0;
}

MOETOOL_HD bool key_visible(int64_t qpos, int64_t kpos, int64_t window) {
  return kpos <= qpos && (window <= 0 || kpos > qpos - window);
}
// Keys [*begin, *end) that any query of positions qfirst .. qlast (inclusive) can see.
MOETOOL_HD void key_range(int64_t qfirst, int64_t qlast, int64_t window, int64_t* begin, int64_t* end) {
  *begin = window > 0 ? (qfirst - window + 1 > 0 ? qfirst - window + 1 : 0) : 0;
  *end = qlast + 1;
}
// Whether a key tile [k0, k1) is entirely visible to every query in [qfirst, qlast] (no masking
// needed inside the tile).
MOETOOL_HD bool tile_fully_visible(int64_t qfirst, int64_t qlast, int64_t k0, int64_t k1, int64_t window) {
  return k1 - 1 <= qfirst && (window <= 0 || k0 > qlast - window);
}

// ---- online softmax (FlashAttention running state) ----
// For scores arriving tile by tile: m = running max, l = Σ exp(s − m). Before adding a tile whose
// max is tile_max, call rescale(): it moves m to the new max and returns the factor the running
// output accumulator (and l, already updated here) must be multiplied by. Then add each
// p = exp(s − m) to l and p·v to the accumulator; the result is acc / l.
struct OnlineSoftmax {
  float m = -INFINITY;
  float l = 0.0f;
  MOETOOL_HD float rescale(float tile_max) {
    const float nm = tile_max > m ? tile_max : m;
    if (nm == -INFINITY) return 1.0f;  // nothing visible yet
    const float a = m == -INFINITY ? 0.0f : hd_exp(m - nm);
    m = nm;
    l *= a;
    return a;
  }
  // Merges another partial state (its own max and sum) into this one; returns the factors
  // (*fa for this accumulator, *fb for the other's) to combine the two accumulators.
  MOETOOL_HD void merge(const OnlineSoftmax& o, float* fa, float* fb) {
    const float nm = o.m > m ? o.m : m;
    if (nm == -INFINITY) {
      *fa = *fb = 0.0f;
      return;
    }
    *fa = m == -INFINITY ? 0.0f : hd_exp(m - nm);
    *fb = o.m == -INFINITY ? 0.0f : hd_exp(o.m - nm);
    l = l * *fa + o.l * *fb;
    m = nm;
  }
};

}  // namespace moetool::shared
