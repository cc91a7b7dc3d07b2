// formats/ggml_quants.cc — ggml block formats (see ggml_quants.h). The quantizers follow ggml's
// implementations operation by operation (same float operations in the same order, the same
// round-half-to-even `nearest_int` trick, the same f16 rounding of scales), so that for the same
// input they produce the same bytes as ggml's quantize_row_*_ref, and with an importance vector as
// ggml's quantize_row_*_impl (ggml_quantize_chunk with an imatrix; see tests/quant_imatrix_test.cc).
#include "formats/ggml_quants.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

// No fused multiply-add contraction here: ggml's reference quantizers round every product and sum
// separately (and ggml's own build produces those bytes), while GCC contracts a·b + c into an FMA by
// default when -mfma is on, which moves a few K-quant scales by one step.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace moetool {
namespace {

constexpr int kQK = 32;     // elements per block of the _0/_1 formats
constexpr int kQKK = 256;   // elements per K-quant super-block
constexpr float kGroupMaxEps = 1e-15f;
constexpr float kF16Max = 65504.0f;

// Thrown inside a block quantizer; carries the element index for the message.
struct ValueError {
  std::string why;
};

inline uint16_t to_f16(float f) { return f32_to_f16(f); }
inline float from_f16(uint16_t h) { return f16_to_f32(h); }
inline void put_f16(uint8_t* p, float f) {
  const uint16_t h = to_f16(f);
  std::memcpy(p, &h, 2);
}
inline float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return from_f16(h);
}
// A block scale must be a finite half: a larger one would make llama.cpp compute with Inf.
inline void check_scale(uint8_t* p, float f) {
  put_f16(p, f);
  if (!std::isfinite(get_f16(p)))
    throw ValueError{str("a block scale of ", f, " overflows half precision (values too large for this format)")};
}

// ggml's nearest_int: round half to even through the float mantissa (valid for |f| <= 4194303).
inline int nearest_int(float fval) {
  const float val = fval + 12582912.f;
  int i;
  std::memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

// ---- 32-element block formats ------------------------------------------------------------------

void quant_q8_0(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
    for (int j = 0; j < kQK; ++j) {
      const float x0 = x[j] * id;
      y[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::roundf(x0)));
    }
  }
}

void dequant_q8_0(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 34, y += kQK) {
    const float d = get_f16(x);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(static_cast<int8_t>(x[2 + j])) * d;
  }
}

// The value with the largest magnitude (the first one on ties), as ggml's _0 quantizers pick it.
inline float signed_absmax(const float* x) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    const float v = x[j];
    if (amax < std::fabs(v)) {
      amax = std::fabs(v);
      max = v;
    }
  }
  return max;
}

void quant_q4_0(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += 18) {
    const float max = signed_absmax(x);
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[kQK / 2 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 8.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 8.5f))));
      y[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void dequant_q4_0(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 18, y += kQK) {
    const float d = get_f16(x);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((x[2 + j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = static_cast<float>((x[2 + j] >> 4) - 8) * d;
    }
  }
}

void quant_q4_1(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += 20) {
    float min = std::numeric_limits<float>::max(), max = -std::numeric_limits<float>::max();
    for (int j = 0; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
    check_scale(y + 2, min);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[kQK / 2 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x0 + 0.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x1 + 0.5f))));
      y[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void dequant_q4_1(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 20, y += kQK) {
    const float d = get_f16(x), m = get_f16(x + 2);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(x[4 + j] & 0x0F) * d + m;
      y[j + kQK / 2] = static_cast<float>(x[4 + j] >> 4) * d + m;
    }
  }
}

void quant_q5_0(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += 22) {
    const float max = signed_absmax(x);
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[j] * id;
      const float x1 = x[kQK / 2 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x0 + 16.5f))));
      const uint8_t xi1 = static_cast<uint8_t>(std::min(31, static_cast<int>(static_cast<int8_t>(x1 + 16.5f))));
      y[6 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
    }
    std::memcpy(y + 2, &qh, 4);
  }
}

void dequant_q5_0(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 22, y += kQK) {
    const float d = get_f16(x);
    uint32_t qh;
    std::memcpy(&qh, x + 2, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int xh0 = static_cast<int>(((qh >> j) << 4) & 0x10);
      const int xh1 = static_cast<int>((qh >> (j + 12)) & 0x10);
      y[j] = static_cast<float>(((x[6 + j] & 0x0F) | xh0) - 16) * d;
      y[j + kQK / 2] = static_cast<float>(((x[6 + j] >> 4) | xh1) - 16) * d;
    }
  }
}

void quant_q5_1(const float* x, uint8_t* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK, y += 24) {
    float min = std::numeric_limits<float>::max(), max = -std::numeric_limits<float>::max();
    for (int j = 0; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    check_scale(y, d);
    check_scale(y + 2, min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[j] - min) * id;
      const float x1 = (x[kQK / 2 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(x0 + 0.5f);
      const uint8_t xi1 = static_cast<uint8_t>(x1 + 0.5f);
      y[8 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << j;
      qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
    }
    std::memcpy(y + 4, &qh, 4);
  }
}

void dequant_q5_1(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 24, y += kQK) {
    const float d = get_f16(x), m = get_f16(x + 2);
    uint32_t qh;
    std::memcpy(&qh, x + 4, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int xh0 = static_cast<int>(((qh >> j) << 4) & 0x10);
      const int xh1 = static_cast<int>((qh >> (j + 12)) & 0x10);
      y[j] = static_cast<float>((x[8 + j] & 0x0F) | xh0) * d + m;
      y[j + kQK / 2] = static_cast<float>((x[8 + j] >> 4) | xh1) * d + m;
    }
  }
}

// ---- K-quant helpers (ggml-quants.c) -------------------------------------------------------------

// Scale and min for `n` values with levels 0..nmax, searched over nstep+1 candidate scales
// (ggml's make_qkx2_quants). Returns the scale; *the_min receives −min (>= 0).
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    const float w = weights[i];
    best_error += w * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        const float w = weights[i];
        cur_error += w * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Symmetric scale for `n` values with levels −nmax..nmax−1 (ggml's make_qx_quants with rmse_type
// 1): the scale minimising Σ w·(x − scale·l)² over 19 candidate rounding grids, with w = qw[i]
// (importance path) or x² when qw is null (reference path). L receives level + nmax.
float make_qx_quants(int n, int nmax, const float* x, int8_t* L, const float* qw) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// Unsigned levels 0..nmax for `n` non-negative values (the sub-block scales or mins of a K-quant
// super-block) with one scale, minimising Σ qw·(x − scale·l)² (ggml's make_qp_quants): 9 candidate
// grids around nmax/max, then up to 5 rounds of moving single levels while that lowers the error.
float make_qp_quants(int n, int nmax, const float* x, uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  // x >= 0 here (scales and negated mins); levels are clamped to 0..nmax all the same, so that a
  // degenerate input cannot wrap a uint8_t.
  auto level = [nmax](float v) { return std::max(0, std::min(nmax, nearest_int(v))); };
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<uint8_t>(level(iscale * x[i]));
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    const float w = qw[i];
    best_mse += w * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = level(iscale_is * x[i]);
      const float diff = x[i] - scale_is * l;
      const float w = qw[i];
      mse += w * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = level(iscale * x[i]);
    L[i] = static_cast<uint8_t>(l);
    const float w = qw[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = level(x[i] * sl2 / slx);
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// The importance of one block: `qw` itself, or all ones when every entry is zero (columns that
// calibration never saw carry no information; weighting them all by zero would let the fit put
// the whole block on scale 0). `ones` provides the storage.
inline const float* block_importance(const float* qw, int n, float* ones) {
  for (int i = 0; i < n; ++i)
    if (qw[i] != 0.f) return qw;
  for (int i = 0; i < n; ++i) ones[i] = 1.f;
  return ones;
}

// σ² = Σx²/n over `n` values (the row for the 32-element formats; llama.cpp's imatrix quantizers
// weight element j by qw[j]·sqrt(σ² + x[j]²)).
inline float mean_square(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / static_cast<float>(n);
}

// ---- importance path of the 32-element formats (llama.cpp's quantize_row_q{4,5}_{0,1}_impl) -------
// Every block: weights w[j] = qw[j]·sqrt(σ² + x[j]²) with σ² of the whole row. _0 formats: the
// weighted symmetric search of make_qx_quants (levels −nmax..nmax−1, 19 grids); _1 formats: the
// weighted scale/min search of make_qkx3_quants (37 grids). The levels of the search are stored as
// they are (no second rounding against the f16 scale), as llama.cpp does.

template <int kBits>
void quant_qx_0_imp(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  constexpr int nmax = 1 << (kBits - 1);               // 8 or 16
  constexpr int kBlockBytes = kBits == 4 ? 18 : 22;
  float weight[kQK], ones[kQK];
  int8_t L[kQK];
  const float sigma2 = mean_square(x, n_per_row);
  const int64_t nb = n_per_row / kQK;
  for (int64_t ib = 0; ib < nb; ++ib, y += kBlockBytes) {
    const float* xb = x + kQK * ib;
    const float* q = block_importance(qw + kQK * ib, kQK, ones);
    for (int j = 0; j < kQK; ++j) weight[j] = q[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    const float d = make_qx_quants(kQK, nmax, xb, L, weight);
    check_scale(y, d);
    if constexpr (kBits == 4) {
      for (int j = 0; j < kQK / 2; ++j) y[2 + j] = static_cast<uint8_t>(L[j] | (L[j + kQK / 2] << 4));
    } else {
      uint32_t qh = 0;
      for (int j = 0; j < kQK / 2; ++j) {
        const auto xi0 = static_cast<uint8_t>(L[j]);
        const auto xi1 = static_cast<uint8_t>(L[j + kQK / 2]);
        y[6 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((xi0 & 0x10u) >> 4) << j;
        qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
      }
      std::memcpy(y + 2, &qh, 4);
    }
  }
}

template <int kBits>
void quant_qx_1_imp(const float* x, uint8_t* y, int64_t n_per_row, const float* qw) {
  constexpr int nmax = (1 << kBits) - 1;               // 15 or 31
  constexpr int kBlockBytes = kBits == 4 ? 20 : 24;
  float weight[kQK], ones[kQK];
  uint8_t L[kQK], Laux[kQK];
  const float sigma2 = mean_square(x, n_per_row);
  const int64_t nb = n_per_row / kQK;
  for (int64_t ib = 0; ib < nb; ++ib, y += kBlockBytes) {
    const float* xb = x + kQK * ib;
    const float* q = block_importance(qw + kQK * ib, kQK, ones);
    for (int j = 0; j < kQK; ++j) weight[j] = q[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
    float neg_min;
    // make_qkx3_quants with weights is make_qkx2_quants (the same operations).
    const float d = make_qkx2_quants(kQK, nmax, xb, weight, L, &neg_min, Laux, -0.9f, 0.05f, 36, false);
    check_scale(y, d);
    check_scale(y + 2, -neg_min);
    if constexpr (kBits == 4) {
      for (int j = 0; j < kQK / 2; ++j) y[4 + j] = static_cast<uint8_t>(L[j] | (L[j + kQK / 2] << 4));
    } else {
      uint32_t qh = 0;
      for (int j = 0; j < kQK / 2; ++j) {
        const uint8_t xi0 = L[j];
        const uint8_t xi1 = L[j + kQK / 2];
        y[8 + j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
        qh |= ((xi0 & 0x10u) >> 4) << j;
        qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
      }
      std::memcpy(y + 4, &qh, 4);
    }
  }
}

// 6-bit scale j and min j of a Q4_K/Q5_K block's packed scales[12].
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

// Packs eight 6-bit sub-block scales ls[] and mins lm[] into a Q4_K/Q5_K block's scales[12].
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
  const uint8_t* sc_packed = y + 4;
  const float d_all = get_f16(y), dmin_all = get_f16(y + 2);
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t sc, m;
    get_scale_min_k4(j, sc_packed, &sc, &m);
    const float d = d_all * sc;
    if (!d) continue;
    const float dm = dmin_all * m;
    for (int ii = 0; ii < 32; ++ii) {
      int l = nearest_int((x[32 * j + ii] + dm) / d);
      l = std::max(0, std::min(nmax, l));
      L[32 * j + ii] = static_cast<uint8_t>(l);
    }
  }
  if constexpr (kBits == 4) {
    uint8_t* q = y + 16;
    for (int j = 0; j < kQKK; j += 64) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
      q += 32;
    }
  } else {
    uint8_t* qh = y + 16;
    uint8_t* ql = y + 48;
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
// Block layout: d @0, dmin @2, scales[12] @4, then (Q5_K) qh[32] @16 and qs[128].
template <int kBits>
void quant_qk_x(const float* x, uint8_t* y, int64_t nb) {
  constexpr int nmax = (1 << kBits) - 1;
  constexpr int kBlockBytes = kBits == 4 ? 144 : 176;
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
    pack_scale_min_k4(ls, lm, y + 4);
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
  constexpr int kBlockBytes = kBits == 4 ? 144 : 176;
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
    pack_scale_min_k4(Ls, Lm, y + 4);
    check_scale(y, d_block);
    check_scale(y + 2, m_block);
    finish_qk_x<kBits>(x, y, L);
  }
}

void dequant_q4_k(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 144) {
    const uint8_t* q = x + 16;
    const float d = get_f16(x), min = get_f16(x + 2);
    int is = 0;
    uint8_t sc, m;
    for (int j = 0; j < kQKK; j += 64) {
      get_scale_min_k4(is + 0, x + 4, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      get_scale_min_k4(is + 1, x + 4, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
      q += 32;
      is += 2;
    }
  }
}

void dequant_q5_k(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 176) {
    const uint8_t* ql = x + 48;
    const uint8_t* qh = x + 16;
    const float d = get_f16(x), min = get_f16(x + 2);
    int is = 0;
    uint8_t sc, m;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < kQKK; j += 64) {
      get_scale_min_k4(is + 0, x + 4, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      get_scale_min_k4(is + 1, x + 4, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      ql += 32;
      is += 2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

// Q6_K layout: ql[128] @0, qh[64] @128, scales[16] @192 (int8), d @208. `qw` (n_per_row
// importance values, or null for the reference quantizer): llama.cpp's quantize_row_q6_K_impl
// weights the 16-element scale search by the importance itself (its sqrt(σ² + x²) factor is
// commented out there), everything else is the reference algorithm.
void quant_q6_k_w(const float* x, uint8_t* y, int64_t nb, const float* qw) {
  int8_t L[kQKK];
  float scales[kQKK / 16];
  float ones[16];
  for (int64_t i = 0; i < nb; ++i, x += kQKK, y += 210) {
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < kQKK / 16; ++ib) {
      const float* w = qw ? block_importance(qw + kQKK * i + 16 * ib, 16, ones) : nullptr;
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib, w);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(y, 0, 210);
      put_f16(y + 208, 0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    check_scale(y + 208, 1 / iscale);
    auto* ysc = reinterpret_cast<int8_t*>(y + 192);
    for (int ib = 0; ib < kQKK / 16; ++ib) ysc[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    const float d_all = get_f16(y + 208);
    for (int j = 0; j < kQKK / 16; ++j) {
      const float d = d_all * ysc[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
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

void dequant_q6_k(const uint8_t* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += 210) {
    const float d = get_f16(x + 208);
    const uint8_t* ql = x;
    const uint8_t* qh = x + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
    for (int n = 0; n < kQKK; n += 128) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
      y += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
}

// ---- plain types -----------------------------------------------------------------------------------

void quant_plain(GGMLType t, const float* x, uint8_t* y, int64_t n) {
  switch (t) {
    case GGMLType::F32:
      std::memcpy(y, x, static_cast<size_t>(n) * 4);
      return;
    case GGMLType::F16:
      for (int64_t i = 0; i < n; ++i) {
        if (std::fabs(x[i]) > kF16Max)
          throw ValueError{str("value ", x[i], " at column ", i, " is outside the F16 range (±65504)")};
        put_f16(y + 2 * i, x[i]);
      }
      return;
    case GGMLType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(y + 2 * i, &h, 2);
      }
      return;
    default:
      fail("unreachable");
  }
}

struct Codec {
  void (*quant)(const float*, uint8_t*, int64_t);        // nb blocks
  void (*dequant)(const uint8_t*, float*, int64_t);      // nb blocks
  // One row of n_per_row values with its n_per_row importance weights; null where the type
  // ignores importance (Q8_0, as llama.cpp's quantize_q8_0 does).
  void (*quant_imp)(const float*, uint8_t*, int64_t, const float*);
};

const Codec* codec_of(GGMLType t) {
  static const Codec q8_0{quant_q8_0, dequant_q8_0, nullptr};
  static const Codec q4_0{quant_q4_0, dequant_q4_0, quant_qx_0_imp<4>};
  static const Codec q4_1{quant_q4_1, dequant_q4_1, quant_qx_1_imp<4>};
  static const Codec q5_0{quant_q5_0, dequant_q5_0, quant_qx_0_imp<5>};
  static const Codec q5_1{quant_q5_1, dequant_q5_1, quant_qx_1_imp<5>};
  static const Codec q4_k{quant_qk_x<4>, dequant_q4_k, quant_qk_x_imp<4>};
  static const Codec q5_k{quant_qk_x<5>, dequant_q5_k, quant_qk_x_imp<5>};
  static const Codec q6_k{quant_q6_k, dequant_q6_k, quant_q6_k_imp};
  switch (t) {
    case GGMLType::Q8_0: return &q8_0;
    case GGMLType::Q4_0: return &q4_0;
    case GGMLType::Q4_1: return &q4_1;
    case GGMLType::Q5_0: return &q5_0;
    case GGMLType::Q5_1: return &q5_1;
    case GGMLType::Q4_K: return &q4_k;
    case GGMLType::Q5_K: return &q5_k;
    case GGMLType::Q6_K: return &q6_k;
    default: return nullptr;
  }
}

bool is_plain(GGMLType t) { return t == GGMLType::F32 || t == GGMLType::F16 || t == GGMLType::BF16; }

std::string prefix(std::string_view what) { return what.empty() ? std::string() : std::string(what) + ": "; }

// Runs body(row) for every row in parallel; rethrows the first failure (lowest row) as an Error.
template <class F>
void for_rows(int64_t nrows, int64_t work_per_row, std::string_view what, F body) {
  std::atomic<int64_t> bad_row{-1};
  std::mutex mu;
  std::string why;
  const bool par = nrows > 1 && nrows * work_per_row >= 16384;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t r = 0; r < nrows; ++r) {
    try {
      body(r);
    } catch (const ValueError& e) {
      std::lock_guard<std::mutex> lock(mu);
      if (bad_row.load() < 0 || r < bad_row.load()) {
        bad_row = r;
        why = e.why;
      }
    }
  }
  if (bad_row.load() >= 0) fail(prefix(what), "row ", bad_row.load(), ": ", why);
}

}  // namespace

bool ggml_quant_supported(GGMLType t) { return is_plain(t) || codec_of(t) != nullptr; }

bool ggml_dequant_supported(GGMLType t) { return ggml_quant_supported(t) || t == GGMLType::F64; }

void check_quant_row(GGMLType t, int64_t n_per_row, std::string_view what) {
  if (!ggml_quant_supported(t))
    fail(prefix(what), "ggml type ", ggml_type_name(t),
         " is not supported (expected F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K)");
  const int64_t bs = ggml_block_size(t);
  if (n_per_row <= 0 || n_per_row % bs != 0)
    fail(prefix(what), "row length ", n_per_row, " is not a multiple of ", ggml_type_name(t), "'s block size ", bs);
}

GGMLType ggml_fallback_type(GGMLType t, int64_t n_per_row) {
  if (n_per_row % ggml_block_size(t) == 0) return t;
  GGMLType r;
  switch (t) {
    case GGMLType::Q2_K:
    case GGMLType::Q3_K: r = GGMLType::Q4_0; break;
    case GGMLType::Q4_K: r = GGMLType::Q5_0; break;
    case GGMLType::Q5_K: r = GGMLType::Q5_1; break;
    case GGMLType::Q6_K: r = GGMLType::Q8_0; break;
    default: r = GGMLType::F16; break;
  }
  if (n_per_row % ggml_block_size(r) != 0) r = GGMLType::F16;
  return r;
}

bool ggml_quant_uses_importance(GGMLType t) {
  const Codec* c = codec_of(t);
  return c && c->quant_imp;
}

namespace {

void quantize_rows_impl(GGMLType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                        const float* importance, std::string_view what) {
  check_quant_row(t, n_per_row, what);
  if (nrows < 0) fail(prefix(what), "negative row count ", nrows);
  if (importance) {
    for (int64_t j = 0; j < n_per_row; ++j)
      if (!std::isfinite(importance[j]) || importance[j] < 0)
        fail(prefix(what), "importance value ", importance[j], " at column ", j,
             " is not a finite non-negative number (expected Σx² of the input column from calibration)");
  }
  const size_t row_bytes = ggml_row_size(t, n_per_row);
  const Codec* c = codec_of(t);
  const bool use_imp = importance && c && c->quant_imp;
  const int64_t nb = n_per_row / ggml_block_size(t);
  auto* out = static_cast<uint8_t*>(dst);
  for_rows(nrows, use_imp ? 4 * n_per_row : n_per_row, what, [&](int64_t r) {
    const float* x = src + r * n_per_row;
    for (int64_t j = 0; j < n_per_row; ++j)
      if (!std::isfinite(x[j])) throw ValueError{str("non-finite value ", x[j], " at column ", j)};
    uint8_t* y = out + static_cast<size_t>(r) * row_bytes;
    if (use_imp)
      c->quant_imp(x, y, n_per_row, importance);
    else if (c)
      c->quant(x, y, nb);
    else
      quant_plain(t, x, y, n_per_row);
  });
}

}  // namespace

void quantize_rows(GGMLType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                   const float* importance, std::string_view what) {
  quantize_rows_impl(t, src, dst, nrows, n_per_row, importance, what);
}

void quantize_rows(GGMLType t, const float* src, void* dst, int64_t nrows, int64_t n_per_row,
                   std::span<const float> importance, std::string_view what) {
  check_quant_row(t, n_per_row, what);
  if (static_cast<int64_t>(importance.size()) != n_per_row)
    fail(prefix(what), "importance vector has ", importance.size(), " values, expected one per input column (",
         n_per_row, ")");
  quantize_rows_impl(t, src, dst, nrows, n_per_row, importance.data(), what);
}

void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint8_t*>(src);
  if (const Codec* c = codec_of(t)) {
    c->dequant(x, dst, n / ggml_block_size(t));
    return;
  }
  switch (t) {
    case GGMLType::F32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return;
    case GGMLType::F16: convert(DType::F16, x, DType::F32, dst, static_cast<size_t>(n)); return;
    case GGMLType::BF16: convert(DType::BF16, x, DType::F32, dst, static_cast<size_t>(n)); return;
    case GGMLType::F64: convert(DType::F64, x, DType::F32, dst, static_cast<size_t>(n)); return;
    default: fail("dequantize: ggml type ", ggml_type_name(t), " is not supported");
  }
}

void dequantize_rows(GGMLType t, const void* src, float* dst, int64_t nrows, int64_t n_per_row,
                     std::string_view what) {
  if (!ggml_dequant_supported(t))
    fail(prefix(what), "cannot dequantize ggml type ", ggml_type_name(t));
  const size_t row_bytes = ggml_row_size(t, n_per_row, what);
  const auto* in = static_cast<const uint8_t*>(src);
  const bool par = nrows > 1 && nrows * n_per_row >= 65536;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t r = 0; r < nrows; ++r)
    dequantize_row(t, in + static_cast<size_t>(r) * row_bytes, dst + r * n_per_row, n_per_row);
}

double ggml_quant_error_bound(GGMLType t) {
  // Relative to the largest |x| of the block (K-quants: of the 256-element super-block). The _0
  // formats put the signed extreme on level −2^(b−1) exactly, so the opposite extreme can be a full
  // step off; f16 scales add about 2^−11 relative. K-quant bounds are looser: their 6-bit sub-block
  // scales and mins are rounded (measured maxima on Gaussian data are well below these).
  switch (t) {
    case GGMLType::F32: return 0.0;
    case GGMLType::F16: return 1.0 / 1024;
    case GGMLType::BF16: return 1.0 / 128;
    case GGMLType::Q8_0: return 0.5 / 127 + 1.0 / 1024;
    case GGMLType::Q4_0: return 1.0 / 8 + 1.0 / 512;
    case GGMLType::Q5_0: return 1.0 / 16 + 1.0 / 512;
    case GGMLType::Q4_1: return 1.0 / 15 + 1.0 / 256;
    case GGMLType::Q5_1: return 1.0 / 31 + 1.0 / 256;
    case GGMLType::Q4_K: return 0.25;
    case GGMLType::Q5_K: return 0.125;
    case GGMLType::Q6_K: return 0.05;
    default: fail("no error bound for ggml type ", ggml_type_name(t));
  }
}

double ggml_bits_per_weight(GGMLType t) {
  return 8.0 * static_cast<double>(ggml_type_size(t)) / static_cast<double>(ggml_block_size(t));
}

}  // namespace moetool
