// compress/int_quant.cc — group-wise integer quantization: GPTQ's min/max quantizer and the
// importance-weighted scale search (see int_quant.h).
#include "compress/int_quant.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "core/error.h"

namespace moetool {
namespace {

std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }

// The smallest f16 value ≥ s (s ≥ 0, finite); the smallest subnormal for s that rounds to 0.
float f16_ceil(float s, std::string_view what) {
  uint16_t h = f32_to_f16(s);
  float v = f16_to_f32(h);
  if (v < s || v == 0.0f) v = f16_to_f32(++h);  // positive halves are ordered like their bits
  if (!std::isfinite(v)) fail(prefix(what), "a group's scale ", s, " exceeds the f16 range (|w| too large)");
  return v;
}

// The nearest f16 value to s > 0; 0 when s is not a usable scale (non-finite, overflow, underflow).
float f16_nearest(double s) {
  if (!(s > 0) || !std::isfinite(s)) return 0.0f;
  const float v = f16_to_f32(f32_to_f16(static_cast<float>(s)));
  return std::isfinite(v) && v > 0.0f ? v : 0.0f;
}

// Σ imp_j (x_j − ŵ_j)² with ŵ_j = scale · (q_j − zero), ŵ computed exactly as int_dequantize does,
// summed in order (the final, exact comparison).
double weighted_error(const float* x, const float* imp, int64_t n, IntGroupParams p, int32_t maxq) {
  double e = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float wq = p.scale * static_cast<float>(int_quantize_value(x[j], p, maxq) - p.zero);
    const double d = static_cast<double>(x[j]) - wq;
    e += static_cast<double>(imp[j]) * d * d;
  }
  return e;
}

// The same error, vectorized (the levels are int_quantize_value's, computed in float; only the
// summation order differs): what the search ranks candidates by.
double weighted_error_simd(const float* x, const float* imp, int64_t n, IntGroupParams p, int32_t maxq) {
  const float s = p.scale, z = static_cast<float>(p.zero), top = static_cast<float>(maxq);
  double e = 0;
#pragma omp simd reduction(+ : e)
  for (int64_t j = 0; j < n; ++j) {
    const float q = std::min(std::max(std::nearbyint(x[j] / s) + z, 0.0f), top);
    const double d = static_cast<double>(x[j]) - s * (q - z);
    e += static_cast<double>(imp[j]) * d * d;
  }
  return e;
}

// Weighted least-squares fits for the levels L that `p` chooses: the scale with the zero kept
// (Σ imp x m / Σ imp m², m = L − zero), and the joint ŵ = a·L + b.
struct LevelFit {
  double scale = 0;     // zero kept
  double a = 0, b = 0;  // joint; a = 0 when degenerate
};
LevelFit fit_levels(const float* x, const float* imp, int64_t n, IntGroupParams p, int32_t maxq) {
  const float s = p.scale, z = static_cast<float>(p.zero), top = static_cast<float>(maxq);
  double sw = 0, sl = 0, sll = 0, sx = 0, slx = 0;
#pragma omp simd reduction(+ : sw, sl, sll, sx, slx)
  for (int64_t j = 0; j < n; ++j) {
    const double l = std::min(std::max(std::nearbyint(x[j] / s) + z, 0.0f), top);
    const double w = imp[j];
    sw += w, sl += w * l, sll += w * l * l, sx += w * x[j], slx += w * l * x[j];
  }
  LevelFit f;
  // With m = l − z: Σ w x m = slx − z·sx, Σ w m² = sll − 2z·sl + z²·sw.
  const double zd = p.zero, den = sll - 2 * zd * sl + zd * zd * sw;
  if (den > 0) f.scale = (slx - zd * sx) / den;
  const double D = sw * sll - sl * sl;
  if (D > 0) f.a = (sw * slx - sl * sx) / D, f.b = (sll * sx - sl * slx) / D;
  return f;
}

// The few best candidates seen (lowest weighted error first).
struct Best {
  static constexpr int kKeep = 4;
  IntGroupParams p[kKeep];
  double err[kKeep];
  int count = 0;
  void offer(IntGroupParams c, double e) {
    for (int i = 0; i < count; ++i)
      if (p[i].scale == c.scale && p[i].zero == c.zero) return;
    int i = count < kKeep ? count++ : kKeep;
    if (i == kKeep && !(e < err[kKeep - 1])) return;
    if (i == kKeep) i = kKeep - 1;
    for (; i > 0 && e < err[i - 1]; --i) p[i] = p[i - 1], err[i] = err[i - 1];
    p[i] = c, err[i] = e;
  }
};

// Importance-weighted parameters of one (row, group); never worse than `plain` in weighted error.
// Stage 1 ranks a grid of candidates; stage 2 refits the best few (the scale for the levels they
// chose, and for asymmetric the joint fit ŵ = a·L + b with b rounded to a multiple of a, since the
// zero is an integer), one more round; the winner is compared with `plain` in the exact error.
IntGroupParams search_params(const float* x, const float* imp, int64_t n, int bits, bool sym, IntGroupParams plain) {
  const int32_t maxq = (1 << bits) - 1;
  float xmin = 0, xmax = 0;
  for (int64_t j = 0; j < n; ++j) xmin = std::min(xmin, x[j]), xmax = std::max(xmax, x[j]);
  Best best;
  const auto offer = [&](IntGroupParams c) {
    if (c.scale > 0) best.offer(c, weighted_error_simd(x, imp, n, c, maxq));
  };
  offer(plain);
  const auto zero_for = [&](double scale, double offset) {  // offset = the value of level 0 (≤ 0)
    return static_cast<int32_t>(std::clamp<double>(std::nearbyint(-offset / scale), 1.0, maxq));
  };
  if (sym) {
    // Levels −h .. h−1 around zero = h: scales amax / t for t around h (make_qx_quants' grid of
    // inverse scales nmax ± 0.9, widened).
    const int32_t h = 1 << (bits - 1);
    const double amax = std::max(-xmin, xmax);
    if (amax == 0) return plain;
    for (int k = 0; k <= 20; ++k) offer({f16_nearest(amax / (h * (0.75 + 0.025 * k))), h});
  } else {
    // Scales range / (maxq + δ), δ ∈ [−1, 1] (make_qkx3_quants' grid), and range / (maxq · f),
    // f ∈ [0.7, 1.3] (what matters at high widths); the zero placed so the grid starts at xmin, or
    // centred on the range (clipping both ends).
    const double range = static_cast<double>(xmax) - xmin;
    if (range == 0) return plain;
    for (int k = 0; k <= 41; ++k) {
      const float sc = f16_nearest(k <= 20 ? range / (maxq - 1.0 + 0.1 * k) : range / (maxq * (0.7 + 0.03 * (k - 21))));
      if (!(sc > 0)) continue;
      offer({sc, zero_for(sc, xmin)});
      offer({sc, zero_for(sc, 0.5 * (double(xmin) + xmax) - 0.5 * sc * maxq)});
    }
  }
  for (int round = 0; round < 3; ++round) {
    const Best seeds = best;
    for (int i = 0; i < seeds.count; ++i) {
      const LevelFit f = fit_levels(x, imp, n, seeds.p[i], maxq);
      offer({f16_nearest(f.scale), seeds.p[i].zero});
      if (!sym && f.a > 0) {
        const float a16 = f16_nearest(f.a);
        if (a16 > 0) offer({a16, zero_for(a16, f.b)});
      }
    }
  }
  const IntGroupParams winner = best.p[0];
  return weighted_error(x, imp, n, winner, maxq) < weighted_error(x, imp, n, plain, maxq) ? winner : plain;
}

// Runs body(r) for every row in parallel; the first moetool::Error thrown is rethrown after the loop.
template <class F>
void parallel_rows(int64_t rows, int64_t work_per_row, F&& body) {
  std::string err;
  const bool par = rows * work_per_row >= (int64_t{1} << 20);
#pragma omp parallel for schedule(dynamic, 8) if (par)
  for (int64_t r = 0; r < rows; ++r) {
    try {
      body(r);
    } catch (const std::exception& e) {
#pragma omp critical(moetool_int_quant_err)
      if (err.empty()) err = e.what();
    }
  }
  if (!err.empty()) throw Error(err);
}

}  // namespace

IntGroupParams int_minmax_params(const float* x, int64_t n, int bits, bool sym, std::string_view what) {
  const int32_t maxq = (1 << bits) - 1;
  float xmin = 0, xmax = 0;  // the range always contains 0
  for (int64_t j = 0; j < n; ++j) xmin = std::min(xmin, x[j]), xmax = std::max(xmax, x[j]);
  IntGroupParams p;
  if (sym) {
    float amax = std::max(-xmin, xmax);
    if (amax == 0) amax = 1;  // GPTQ: an all-zero group gets [−1, 1]
    p.scale = f16_ceil(2.0f * amax / static_cast<float>(maxq), what);
    p.zero = 1 << (bits - 1);
    return p;
  }
  if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
  p.scale = f16_ceil((xmax - xmin) / static_cast<float>(maxq), what);
  p.zero = static_cast<int32_t>(std::min<float>(std::nearbyint(-xmin / p.scale), static_cast<float>(maxq)));
  if (p.zero < 1) {  // range starts (within half a step) at 0: zero = 1, levels −1 .. maxq − 1
    p.scale = f16_ceil(xmax / static_cast<float>(maxq - 1), what);
    p.zero = 1;
  }
  return p;
}

IntQuantized rtn_quantize(const float* W, int64_t rows, int64_t cols, const IntQuantSpec& spec,
                          const float* importance, std::string_view what) {
  check_int_spec(spec, rows, cols, what);
  if (importance)
    for (int64_t j = 0; j < cols; ++j)
      if (!std::isfinite(importance[j]) || importance[j] < 0)
        fail(prefix(what), "importance of input column ", j, " is ", importance[j], " (must be finite and ≥ 0)");
  IntQuantized out;
  out.spec = spec;
  out.rows = rows, out.cols = cols;
  out.ngroups = int_quant_ngroups(spec, cols);
  const int64_t gs = spec.group_size == -1 ? cols : spec.group_size;
  out.q.resize(static_cast<size_t>(rows * cols));
  out.scales.resize(static_cast<size_t>(out.ngroups * rows));
  out.zeros.resize(out.scales.size());
  out.g_idx.resize(static_cast<size_t>(cols));
  for (int64_t j = 0; j < cols; ++j) out.g_idx[static_cast<size_t>(j)] = static_cast<int32_t>(j / gs);
  const int32_t maxq = (1 << spec.bits) - 1;
  parallel_rows(rows, cols * (importance ? 64 : 1), [&](int64_t r) {
    const float* wr = W + r * cols;
    for (int64_t j = 0; j < cols; ++j)
      if (!std::isfinite(wr[j])) fail(prefix(what), "weight [", r, ", ", j, "] is ", wr[j]);
    for (int64_t g = 0; g < out.ngroups; ++g) {
      const float* x = wr + g * gs;
      IntGroupParams p = int_minmax_params(x, gs, spec.bits, spec.sym, what);
      if (importance) p = search_params(x, importance + g * gs, gs, spec.bits, spec.sym, p);
      out.scales[static_cast<size_t>(g * rows + r)] = p.scale;
      out.zeros[static_cast<size_t>(g * rows + r)] = p.zero;
      uint8_t* qr = out.q.data() + r * cols + g * gs;
      for (int64_t j = 0; j < gs; ++j) qr[j] = static_cast<uint8_t>(int_quantize_value(x[j], p, maxq));
    }
  });
  return out;
}

}  // namespace moetool
