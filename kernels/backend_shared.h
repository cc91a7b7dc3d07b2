// kernels/backend_shared.h — pure per-element / per-token logic shared by the CPU engine, the CUDA
// kernels (kernels/cuda/*.cu) and CPU unit tests: ggml block decoders (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), the GPTQ
// v1 int4 decoder, MoE routing selection for one token (softmax top-k; sigmoid + correction bias,
// group-limited), the causal/sliding-window key range of a query tile and the online-softmax
// (FlashAttention) running state. Everything is `__host__ __device__` inline under nvcc and plain
// inline elsewhere, with no allocation, no exceptions and no library calls beyond exp, so the code
// the GPU runs is the code the CPU tests check.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MOETOOL_HD __host__ __device__ __forceinline__
#else
#define MOETOOL_HD inline
#endif

namespace moetool::shared {

MOETOOL_HD float hd_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}

MOETOOL_HD float bits_to_float(uint32_t u) {
  union {
    uint32_t u;
    float f;
  } c{u};
  return c.f;
}
MOETOOL_HD uint32_t float_to_bits(float f) {
  union {
    float f;
    uint32_t u;
  } c{f};
  return c.u;
}

// IEEE half (as stored in ggml blocks and GPTQ scales) → float32, exact, subnormals included.
MOETOOL_HD float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0x1F) return bits_to_float(sign | 0x7F800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_to_float(sign);
    // Subnormal: normalise.
    int e = -1;
    do {
      mant <<= 1;
      ++e;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3FFu;
    return bits_to_float(sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | (mant << 13));
  }
  return bits_to_float(sign | ((exp + (127 - 15)) << 23) | (mant << 13));
}

// bfloat16 ↔ float32 (round to nearest even; NaN stays NaN).
MOETOOL_HD float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }
MOETOOL_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// x rounded to the nearest bf16 value (as float32): a bf16 engine's view of a weight or input.
MOETOOL_HD float round_bf16(float x) { return bf16_to_float(float_to_bf16(x)); }

MOETOOL_HD uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

// ---- ggml blocks (layouts in formats/ggml_quants.h) ----
constexpr int kQ8_0Bytes = 34, kQ4_0Bytes = 18, kQ4_1Bytes = 20, kQ5_0Bytes = 22, kQ5_1Bytes = 24, kQ4_KBytes = 144,
              kQ5_KBytes = 176, kQ6_KBytes = 210;
constexpr int kQ8_0Elems = 32, kQ4_0Elems = 32, kQ4_1Elems = 32, kQ5_0Elems = 32, kQ5_1Elems = 32, kQ4_KElems = 256,
              kQ5_KElems = 256, kQ6_KElems = 256;

MOETOOL_HD uint32_t load_u32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

// Element j (0 ≤ j < 32) of a Q8_0 block: x = q·d.
MOETOOL_HD float q8_0_value(const uint8_t* blk, int j) {
  return half_to_float(load_u16(blk)) * static_cast<float>(static_cast<int8_t>(blk[2 + j]));
}
// Element j (0 ≤ j < 32) of a Q4_0 block: x = (q − 8)·d; j < 16 low nibble of qs[j], else high of qs[j−16].
MOETOOL_HD float q4_0_value(const uint8_t* blk, int j) {
  const uint8_t b = blk[2 + (j & 15)];
  const int q = j < 16 ? (b & 0xF) : (b >> 4);
  return static_cast<float>(q - 8) * half_to_float(load_u16(blk));
}
// Element j (0 ≤ j < 32) of a Q4_1 block: x = q·d + m (q as in Q4_0).
MOETOOL_HD float q4_1_value(const uint8_t* blk, int j) {
  const uint8_t b = blk[4 + (j & 15)];
  const int q = j < 16 ? (b & 0xF) : (b >> 4);
  return static_cast<float>(q) * half_to_float(load_u16(blk)) + half_to_float(load_u16(blk + 2));
}
// The fifth bit of element j of a Q5_0/Q5_1 block (bit j of qh), as 0 or 16.
MOETOOL_HD int q5_high(uint32_t qh, int j) { return static_cast<int>((qh >> j) & 1u) << 4; }
// Element j (0 ≤ j < 32) of a Q5_0 block: x = (q − 16)·d, q = 4 low bits as in Q4_0 | bit j of qh.
MOETOOL_HD float q5_0_value(const uint8_t* blk, int j) {
  const uint8_t b = blk[6 + (j & 15)];
  const int q = (j < 16 ? (b & 0xF) : (b >> 4)) | q5_high(load_u32(blk + 2), j);
  return static_cast<float>(q - 16) * half_to_float(load_u16(blk));
}
// Element j (0 ≤ j < 32) of a Q5_1 block: x = q·d + m.
MOETOOL_HD float q5_1_value(const uint8_t* blk, int j) {
  const uint8_t b = blk[8 + (j & 15)];
  const int q = (j < 16 ? (b & 0xF) : (b >> 4)) | q5_high(load_u32(blk + 4), j);
  return static_cast<float>(q) * half_to_float(load_u16(blk)) + half_to_float(load_u16(blk + 2));
}
// 6-bit scale and min of sub-block s (0 ≤ s < 8) of a Q4_K block's packed scales[12].
MOETOOL_HD void q4_k_scale_min(const uint8_t* sc12, int s, int* sc, int* m) {
  if (s < 4) {
    *sc = sc12[s] & 63;
    *m = sc12[s + 4] & 63;
  } else {
    *sc = (sc12[s + 4] & 0xF) | ((sc12[s - 4] >> 6) << 4);
    *m = (sc12[s + 4] >> 4) | ((sc12[s] >> 6) << 4);
  }
}
// Element j (0 ≤ j < 256) of a Q4_K block: d·sc·q − dmin·m. Elements come in groups of 64: the first
// 32 are the low nibbles of qs[32g .. 32g+31] with sub-block 2g, the next 32 the high nibbles with 2g+1.
MOETOOL_HD float q4_k_value(const uint8_t* blk, int j) {
  const int g = j >> 6, w = j & 63, s = 2 * g + (w >> 5);
  int sc, m;
  q4_k_scale_min(blk + 4, s, &sc, &m);
  const uint8_t b = blk[16 + 32 * g + (w & 31)];
  const int q = w < 32 ? (b & 0xF) : (b >> 4);
  const float d = half_to_float(load_u16(blk)), dmin = half_to_float(load_u16(blk + 2));
  // Same operation order as ggml's dequantize_row_q4_K: (d·sc)·q − (dmin·m).
  return (d * static_cast<float>(sc)) * static_cast<float>(q) - dmin * static_cast<float>(m);
}

// Element j (0 ≤ j < 256) of a Q5_K block (d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48):
// Q4_K's element with a fifth bit from qh (bit 2g of qh[l] for the low nibbles of group g, 2g+1 for
// the high ones).
MOETOOL_HD float q5_k_value(const uint8_t* blk, int j) {
  const int g = j >> 6, w = j & 63, s = 2 * g + (w >> 5), l = w & 31;
  int sc, m;
  q4_k_scale_min(blk + 4, s, &sc, &m);
  const uint8_t b = blk[48 + 32 * g + l];
  const int q = (w < 32 ? (b & 0xF) : (b >> 4)) + (((blk[16 + l] >> s) & 1) ? 16 : 0);
  const float d = half_to_float(load_u16(blk)), dmin = half_to_float(load_u16(blk + 2));
  return (d * static_cast<float>(sc)) * static_cast<float>(q) - dmin * static_cast<float>(m);
}
// Element j (0 ≤ j < 256) of a Q6_K block (ql[128] @0, qh[64] @128, int8 scales[16] @192, d @208):
// halves of 128; in a half, quarter c of 32 takes low (c = 0, 1) or high (c = 2, 3) nibbles of
// ql[l + 32·(c mod 2)], two bits 2c of qh[l], and scale 2c + l/16; x = d·scale·(q − 32).
MOETOOL_HD float q6_k_value(const uint8_t* blk, int j) {
  const int h = j >> 7, r = j & 127, c = r >> 5, l = r & 31;
  const uint8_t* ql = blk + 64 * h;
  const uint8_t* qh = blk + 128 + 32 * h;
  const int8_t sc = static_cast<int8_t>(blk[192 + 8 * h + l / 16 + 2 * c]);
  const uint8_t b = ql[l + 32 * (c & 1)];
  const int q = ((c < 2 ? (b & 0xF) : (b >> 4)) | (((qh[l] >> (2 * c)) & 3) << 4)) - 32;
  return half_to_float(load_u16(blk + 208)) * static_cast<float>(sc) * static_cast<float>(q);
}

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
