// formats/ggml_quant_k.cc — quantizers of ggml's K-quant super-blocks (Q4_K, Q5_K, Q6_K): the reference
// ones (ggml's quantize_row_q{4,5,6}_K_ref) and the importance-weighted ones (llama.cpp's
// quantize_row_q{4,5,6}_K_impl), operation by operation as ggml writes them. Layouts in
// formats/ggml_blocks.h.
#include "formats/ggml_quant_internal.h"

#include <algorithm>

#include "formats/ggml_blocks.h"

namespace moetool::ggml_quant {
namespace {

using namespace moetool::ggml;

// Packs eight 6-bit sub-block scales ls[] and mins lm[] into a Q4_K/Q5_K block's scales[12] (the
// inverse of k4_scale_min).
inline void pack_scale_min_k4(const uint8_t* ls, const uint8_t* lm, uint8_t* q) {
  std::memset(q, 0, 12);
  for (int j = 0; j < kQKK / 32; ++j) {
    if (j < 4) {
      q[j] = ls[j];
      q[j + 4] = lm[j];
    } else {
      q[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      q[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      q[j - 0] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// The rest of a Q4_K/Q5_K block once d, dmin (@0, @2) and scales[12] (@4) are written: every
// element re-rounded against its sub-block's stored (f16 · 6-bit) scale and min, then packed
// (Q4_K: qs[128] @16; Q5_K: qh[32] @16, qs[128] @48). L[256] is scratch holding the first-pass
// levels, kept where a sub-block's stored scale is 0.
template <int kBits>
void finish_qk_x(const float* x, uint8_t* y, uint8_t* L) {
  constexpr int nmax = (1 << kBits) - 1;
  const float d_all = f16_at(y), dmin_all = f16_at(y + 2);
  for (int j = 0; j < kQKK / 32; ++j) {
    int sc, m;
    k4_scale_min(y + BlockQ4_K::kScales, j, &sc, &m);
    const float d = d_all * static_cast<float>(sc);
    if (!d) continue;
    const float dm = dmin_all * static_cast<float>(m);
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      l = std::max(0, std::min(nmax, l));
      L[32 * j + ii] = static_cast<uint8_t>(l);
    }
  }
  if constexpr (kBits == 4) {
    uint8_t* q = y + BlockQ4_K::kQs;
    for (int j = 0; j < kQKK; j += 64) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      q += 32;
    }
  } else {
    uint8_t* qh = y + BlockQ5_K::kQh;
    uint8_t* ql = y + BlockQ5_K::kQs;
    std::memset(qh, 0, kQKK / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQKK; n += 64) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        int l2 = L[n + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
      ql += 32;
    }
  }
}

// Q4_K and Q5_K share everything but the level count and the packing of the quants.
template <int kBits>
void quant_qk_x(const float* x, uint8_t* y, int64_t nb) {
  constexpr int nmax = (1 << kBits) - 1;
  constexpr int kBlockBytes = kBits == 4 ? BlockQ4_K::kBytes : BlockQ5_K::kBytes;
  uint8_t L[kQKK];
  uint8_t Laux[32];
  float weights[32];
  float mins[kQKK / 32];
  float scales[kQKK / 32];
  uint8_t ls[kQKK / 32], lm[kQKK / 32];
  for (int64_t i = 0; i < nb; ++i, x += kQKK, y += kBlockBytes) {
    float max_scale = 0;
    float max_min = 0;
    for (int j = 0; j < kQKK / 32; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      if constexpr (kBits == 4)
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
      else
        scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < kQKK / 32; ++j) {
      ls[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_scale * scales[j])));
      lm[j] = std::min<uint8_t>(63, static_cast<uint8_t>(nearest_int(inv_min * mins[j])));
    }
    pack_scale_min_k4(ls, lm, y + BlockQ4_K::kScales);
    check_scale(y, max_scale / 63.f);
    check_scale(y + 2, max_min / 63.f);
    finish_qk_x<kBits>(x, y, L);
  }
}

// Importance path of Q4_K/Q5_K (llama.cpp's quantize_row_q{4,5}_K_impl): per super-block
// σ² = 2·Σx²/256; sub-block j gets weights qw·sqrt(σ² + x²) and a weighted scale/min search over 37
// grids (make_qkx3_quants: rmin −0.9, step 0.05, 36 steps); the eight scales and eight mins are
// then quantized to 6 bits by make_qp_quants, weighted by each sub-block's weight sum.
template <int kBits>
void quant_qk_x_imp(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  constexpr int nmax = (1 << kBits) - 1;
  constexpr int kBlockBytes = kBits == 4 ? BlockQ4_K::kBytes : BlockQ5_K::kBytes;
  uint8_t L[kQKK];
  uint8_t Laux[32];
  uint8_t Ls[kQKK / 32], Lm[kQKK / 32];
  float weights[32], ones[32];
  float sw[kQKK / 32];
  float mins[kQKK / 32];
  float scales[kQKK / 32];
  const int64_t nb = n_per_row / kQKK;
  for (int64_t i = 0; i < nb; ++i, x += kQKK, y += kBlockBytes) {
    float sum_x2 = 0;
    for (int l = 0; l < kQKK; ++l) sum_x2 += x[l] * x[l];
    const float sigma2 = 2 * sum_x2 / kQKK;
    for (int j = 0; j < kQKK / 32; ++j) {
      const float* q = block_importance(qw + kQKK * i + 32 * j, 32, ones);
      for (int l = 0; l < 32; ++l) weights[l] = q[l] * std::sqrt(sigma2 + x[32 * j + l] * x[32 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      // make_qkx3_quants with weights is make_qkx2_quants (the same operations).
      scales[j] = make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, false);
      // Guard a degenerate fit (never seen on real data): levels are stored unsigned.
      scales[j] = std::max(scales[j], 0.f);
    }
    const float d_block = make_qp_quants(kQKK / 32, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(kQKK / 32, 63, mins, Lm, sw);
    pack_scale_min_k4(Ls, Lm, y + BlockQ4_K::kScales);
    check_scale(y, d_block);
    check_scale(y + 2, m_block);
    finish_qk_x<kBits>(x, y, L);
  }
}

// Q6_K (ql[128], qh[64], int8 scales[16], f16 d). `qw` (n_per_row importance values, or null for
// the reference quantizer): llama.cpp's quantize_row_q6_K_impl weights the 16-element scale search
// by the importance itself (its sqrt(σ² + x²) factor is commented out there), everything else is
// the reference algorithm.
void quant_q6_k_w(const float* x, uint8_t* y, int64_t nb, const float* qw) {
  using B = BlockQ6_K;
  int8_t L[kQKK];
  float scales[kQKK / 16];
  float ones[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK, y += B::kBytes) {
    float max_scale = 0;
    float max_abs_scale = 0;
    if (!qw) make_qx_quants_16x16(x, L, scales);  // the reference search, all sub-blocks at once
    for (int ib = 0; ib < kQKK / 16; ++ib) {
      if (qw) scales[ib] = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, block_importance(qw + kQKK * i + 16 * ib, 16, ones));
      const float scale = scales[ib];
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(y, 0, B::kBytes);
      put_f16(y + B::kD, 0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    check_scale(y + B::kD, 1 / iscale);
    auto* ysc = reinterpret_cast<int8_t*>(y + B::kScales);
    for (int ib = 0; ib < kQKK / 16; ++ib) ysc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    const float d_all = f16_at(y + B::kD);
    for (int j = 0; j < kQKK / 16; ++j) {
      const float d = d_all * ysc[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y + B::kQl;
    uint8_t* qh = y + B::kQh;
    for (int j = 0; j < kQKK; j += 128) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                     ((L[j + l + 96] >> 4) << 6));
      }
      ql += 64;
      qh += 32;
    }
  }
}

void quant_q6_k(const float* x, uint8_t* y, int64_t nb) { quant_q6_k_w(x, y, nb, nullptr); }
void quant_q6_k_imp(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  quant_q6_k_w(x, y, n_per_row / kQKK, qw);
}

}  // namespace

const Codec* k_codec(GGMLType t) {
  static const Codec q4_k{quant_qk_x<4>, quant_qk_x_imp<4>};
  static const Codec q5_k{quant_qk_x<5>, quant_qk_x_imp<5>};
  static const Codec q6_k{quant_q6_k, quant_q6_k_imp};
  switch (t) {
    case GGMLType::Q4_K: return &q4_k;
    case GGMLType::Q5_K: return &q5_k;
    case GGMLType::Q6_K: return &q6_k;
    default: return nullptr;
  }
}

}  // namespace moetool::ggml_quant
