// compress/int_quant.h — group-wise integer quantization of a weight matrix W [rows = out, cols = in]
// in the layout GPTQ checkpoints store (formats/gptq_pack.h packs it): every (row, group of input
// columns) has an f16 scale and an integer zero, and W[r, j] ≈ (q[r, j] − zero[g, r]) · scale[g, r]
// with g = g_idx[j] and q in 0 .. 2^bits − 1.
//
// The min/max quantizer is GPTQ's (the reference gptq.py / GPTQModel `Quantizer.find_params`):
//   range [xmin, xmax] of the group, widened to contain 0 (an all-zero group gets [−1, 1]);
//   symmetric:  amax = max(|xmin|, xmax), scale = 2·amax / maxq, zero = 2^(bits−1);
//   asymmetric: scale = (xmax − xmin) / maxq, zero = round(−xmin / scale);
//   q = clamp(round(w / scale) + zero, 0, maxq), round half to even (torch.round).
// Two deliberate differences: the scale is rounded UP to f16 (what the file stores) before q is
// computed, so the stored scale is the one used and every weight stays within half a step of its
// reconstruction; and an asymmetric zero is at least 1 (a group whose range starts at 0 gets
// scale = xmax / (maxq − 1), zero = 1), because the v1 checkpoint layout stores zero − 1 and
// cannot hold zero = 0 (AutoGPTQ's packer silently corrupts it).
//
// Importance-weighted RTN (an imatrix: Σx² per input column) searches each group's scale (and
// zero) for the least Σ_j imp_j (w_j − ŵ_j)², in the spirit of llama.cpp's make_qx_quants /
// make_qkx3_quants: a grid of candidate scales (asymmetric: and zero placements) is ranked by that
// error, the best few are refitted by weighted least squares for the levels they chose (the scale;
// asymmetric also the joint scale and offset, the offset rounded to whole steps) for three rounds,
// and the winner replaces the plain min/max choice only when its exact weighted error is lower —
// so the result is never worse than min/max in that error. All-zero importance in a group keeps
// min/max.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>
#include <vector>

#include "formats/int_codec.h"

namespace moetool {

// Round-to-nearest. importance[cols] (Σx² per input column from calibration, may be null): when
// given, per (row, group) the scale (and zero, asymmetric) are chosen to minimise
// Σ_j importance_j (w_j − ŵ_j)² by a search over candidate scales, never worse (in that weighted
// error) than the plain min/max choice. Parallel over rows (OpenMP). Throws naming `what` on a bad
// spec, a NaN or infinite weight, a negative / NaN / infinite importance, or a scale beyond f16.
IntQuantized rtn_quantize(const float* W, int64_t rows, int64_t cols, const IntQuantSpec& spec,
                          const float* importance = nullptr, std::string_view what = {});

// --- building blocks shared with GPTQ (compress/gptq.cc) ---

// GPTQ's min/max parameters for the values x[0..n) of one (row, group): the f16-representable
// scale (rounded up) and the zero, as described at the top of this file.
struct IntGroupParams {
  float scale = 1;
  int32_t zero = 0;
};
IntGroupParams int_minmax_params(const float* x, int64_t n, int bits, bool sym, std::string_view what = {});
// q = clamp(round(x / scale) + zero, 0, maxq), round half to even (the default rounding mode).
inline int32_t int_quantize_value(float x, IntGroupParams p, int32_t maxq) {
  const float v = std::nearbyint(x / p.scale) + static_cast<float>(p.zero);
  return v <= 0.0f ? 0 : (v >= static_cast<float>(maxq) ? maxq : static_cast<int32_t>(v));
}

}  // namespace moetool
