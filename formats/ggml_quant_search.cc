// formats/ggml_quant_search.cc — the scale searches of ggml's quantizers (make_qkx2_quants,
// make_qx_quants, make_qp_quants in ggml-quants.c) and the block importance rule, shared by the
// 32-element and the K-quant quantizers (declared in formats/ggml_quant_internal.h).
#include "formats/ggml_quant_internal.h"

#include <immintrin.h>

#include <algorithm>

namespace moetool::ggml_quant {

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

void make_qx_quants_16x16(const float* x, int8_t* L, float* scales) {
  // Lane j is sub-block j: every lane runs make_qx_quants(16, 32, x + 16·j, ..., null)'s operations
  // in its order (the products and sums of one lane are never mixed with another's), so the compiler
  // may vectorize across lanes without changing a bit.
  constexpr int N = 16, nmax = 32;
  alignas(64) float xt[N][N], w[N][N];
  alignas(64) int32_t Lt[N][N], lt[N][N];
  alignas(64) float mx[N], amx[N], sumlx[N], suml2[N], scale[N], best[N], iscale[N];
  alignas(64) int32_t upd[N];
  for (int j = 0; j < N; ++j) mx[j] = amx[j] = 0;
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) xt[i][j] = x[N * j + i];
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      const float ax = std::fabs(xt[i][j]);
      const bool g = ax > amx[j];
      amx[j] = g ? ax : amx[j];
      mx[j] = g ? xt[i][j] : mx[j];
      w[i][j] = xt[i][j] * xt[i][j];
    }
  // One pass of levels and sums for iscale[]; the levels (offset by nmax) into `out`. Per lane:
  // l = clamp(nearest_int(iscale·x), −nmax, nmax − 1) (nearest_int's magic-number rounding),
  // sumlx += (w·x)·l, suml2 += (w·l)·l — make_qx_quants' operations, eight lanes per AVX2 register.
  const auto pass = [&](int32_t (*out)[N]) {
    const __m256 magic = _mm256_set1_ps(12582912.f);
    const __m256i mant = _mm256_set1_epi32(0x007fffff), bias = _mm256_set1_epi32(0x00400000);
    const __m256i lo = _mm256_set1_epi32(-nmax), hi = _mm256_set1_epi32(nmax - 1), off = _mm256_set1_epi32(nmax);
    for (int h = 0; h < N; h += 8) {
      const __m256 is = _mm256_load_ps(iscale + h);
      __m256 slx = _mm256_setzero_ps(), sl2 = _mm256_setzero_ps();
      for (int i = 0; i < N; ++i) {
        const __m256 xv = _mm256_load_ps(&xt[i][h]), wv = _mm256_load_ps(&w[i][h]);
        const __m256i bits = _mm256_castps_si256(_mm256_add_ps(_mm256_mul_ps(is, xv), magic));
        __m256i l = _mm256_sub_epi32(_mm256_and_si256(bits, mant), bias);
        l = _mm256_max_epi32(lo, _mm256_min_epi32(hi, l));
        _mm256_store_si256(reinterpret_cast<__m256i*>(&out[i][h]), _mm256_add_epi32(l, off));
        const __m256 fl = _mm256_cvtepi32_ps(l);
        slx = _mm256_add_ps(slx, _mm256_mul_ps(_mm256_mul_ps(wv, xv), fl));
        sl2 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(wv, fl), fl));
      }
      _mm256_store_ps(sumlx + h, slx);
      _mm256_store_ps(suml2 + h, sl2);
    }
  };
  for (int j = 0; j < N; ++j) iscale[j] = -nmax / mx[j];
  pass(Lt);
  for (int j = 0; j < N; ++j) {
    scale[j] = suml2[j] ? sumlx[j] / suml2[j] : 0.0f;
    best[j] = scale[j] * sumlx[j];
  }
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    const float num = -(nmax + 0.1f * is);
    for (int j = 0; j < N; ++j) iscale[j] = num / mx[j];
    pass(lt);
    for (int j = 0; j < N; ++j) {
      upd[j] = suml2[j] > 0 && sumlx[j] * sumlx[j] > best[j] * suml2[j];
      if (upd[j]) {
        scale[j] = sumlx[j] / suml2[j];
        best[j] = scale[j] * sumlx[j];
      }
    }
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j) Lt[i][j] = upd[j] ? lt[i][j] : Lt[i][j];
  }
  for (int j = 0; j < N; ++j) {
    const bool zero = amx[j] < kGroupMaxEps;  // all (near) zero: levels 0, scale 0
    scales[j] = zero ? 0.f : scale[j];
    for (int i = 0; i < N; ++i) L[N * j + i] = static_cast<int8_t>(zero ? 0 : Lt[i][j]);
  }
}

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

const float* block_importance(const float* qw, int n, float* ones) {
  for (int i = 0; i < n; ++i)
    if (qw[i] != 0.f) return qw;
  for (int i = 0; i < n; ++i) ones[i] = 1.f;
  return ones;
}

}  // namespace moetool::ggml_quant
