// compress/autoround_ggml.cc — signed-gradient rounding and scale tuning over ggml blocks (see
// autoround_ggml.h).
#include "compress/autoround_ggml.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>

#include <Eigen/Dense>

#include "compress/gptq_ggml.h"
#include "compress/gptq_internal.h"
#include "core/error.h"
#include "formats/ggml_levels.h"
#include "formats/ggml_quants.h"

namespace moetool {
namespace {

using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr int64_t kChunk = 64;  // rows optimised together (fixed: the bytes must not depend on threads)

std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }

void check_inputs(const float* W, int64_t rows, int64_t cols, const double* H, GGMLType t, const AutoRoundOptions& o,
                  std::string_view what) {
  if (o.iters < 1) fail(prefix(what), "AutoRound needs at least 1 step (--iters), got ", o.iters);
  if (!(o.lr >= 0 && o.lr < 1)) fail(prefix(what), "AutoRound step (--lr) must be in (0, 1) (0: 1/iters), got ", o.lr);
  if (!(o.scale_bound >= 0 && o.scale_bound < 1))
    fail(prefix(what), "AutoRound scale bound must be in [0, 1), got ", o.scale_bound);
  gptq_detail::check_ggml_matrix(W, rows, cols, H, t, "AutoRound", what);
}

// The tunable parameters of one chunk of rows.
struct Params {
  std::vector<float> v, alpha, beta;  // [m, n] rounding offsets; [m, nb] multipliers of d and m
};

// One row of current values under parameters (v, α, β) from ggml's blocks `init` (their scale
// fields and sub-block scales): ŵ (wh), s_j, m_j and whether the element's level was clamped.
// With `out`, the row is also written there as blocks (fields α·d, β·m, the chosen levels).
struct RowEval {
  float* wh;
  float* s;
  float* mn;
  uint8_t* clamped;
};
void eval_row(GGMLType t, const uint8_t* init, const float* w, const float* v, const float* alpha, const float* beta,
              int64_t n, RowEval e, uint8_t* out) {
  const int64_t qb = ggml_block_size(t);
  const size_t ts = ggml_type_size(t);
  uint8_t tmp[512];
  GGMLBlockLevels lv;
  for (int64_t b = 0; b < n / qb; ++b) {
    const uint8_t* blk = init + static_cast<size_t>(b) * ts;
    const GGMLScaleFields f = ggml_block_scale_fields(t, blk);
    std::memcpy(tmp, blk, ts);
    ggml_block_set_scale_fields(t, tmp, alpha[b] * f.d, beta[b] * f.m);
    ggml_block_levels(t, tmp, &lv);
    for (int64_t i = 0; i < qb; ++i) {
      const int64_t k = b * qb + i;
      const int j = static_cast<int>(i);
      const float sj = lv.scale[j], mj = lv.min[j];
      int q;
      bool cl;
      if (sj == 0 || !std::isfinite(sj)) {
        q = std::clamp(-lv.offset, lv.qmin, lv.qmax), cl = true;
      } else {
        const float r = std::nearbyint((w[k] - mj) / sj - static_cast<float>(lv.offset) + v[k]);
        cl = r < static_cast<float>(lv.qmin) || r > static_cast<float>(lv.qmax);
        q = static_cast<int>(std::clamp(r, static_cast<float>(lv.qmin), static_cast<float>(lv.qmax)));
      }
      e.wh[k] = lv.value(j, q), e.s[k] = sj, e.mn[k] = mj, e.clamped[k] = cl;
      if (out) ggml_block_set_level(t, tmp, j, q);
    }
    if (out) std::memcpy(out + static_cast<size_t>(b) * ts, tmp, ts);
  }
}

// Per-row losses Σ_j Δ_j G_j (double accumulation) of G = Δ·H.
void row_losses(const RowMatF& D, const RowMatF& G, std::vector<double>& loss) {
  for (int64_t r = 0; r < D.rows(); ++r) {
    double s = 0;
    for (int64_t j = 0; j < D.cols(); ++j) s += static_cast<double>(D(r, j)) * G(r, j);
    loss[static_cast<size_t>(r)] = s;
  }
}

// The rounding offsets that reproduce the levels of the start blocks: v_j = q_j − ((w_j − m_j)/s_j − o)
// (0 where the scale is 0). For ggml's own rounding these lie in [−½, ½]; for GPTQ's, not always.
std::vector<float> start_offsets(GGMLType t, const std::vector<uint8_t>& init, const Eigen::Map<const RowMatF>& Wc,
                                 int64_t n) {
  const int64_t qb = ggml_block_size(t), m = Wc.rows();
  const size_t row_bytes = ggml_row_size(t, n), ts = ggml_type_size(t);
  std::vector<float> v(static_cast<size_t>(m * n), 0.0f);
  GGMLBlockLevels lv;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t b = 0; b < n / qb; ++b) {
      const uint8_t* blk = init.data() + r * row_bytes + static_cast<size_t>(b) * ts;
      ggml_block_levels(t, blk, &lv);
      for (int j = 0; j < qb; ++j) {
        const float sj = lv.scale[j];
        if (sj == 0 || !std::isfinite(sj)) continue;
        const float tj = (Wc(r, b * qb + j) - lv.min[j]) / sj - static_cast<float>(lv.offset);
        v[static_cast<size_t>(r * n + b * qb + j)] = static_cast<float>(ggml_block_level(t, blk, j)) - tj;
      }
    }
  return v;
}

float sgn(double x) { return x > 0 ? 1.0f : x < 0 ? -1.0f : 0.0f; }

// AutoRound of rows [r0, r0 + m) of Wd, starting from (and never worse than) ggml's blocks in out;
// the chosen rows are written back to out. Returns the rows that beat ggml's.
int64_t tune_chunk(const std::vector<float>& Wd, int64_t r0, int64_t m, int64_t n, GGMLType t,
                   const Eigen::Map<const RowMatF>& Hf, const AutoRoundOptions& o, std::vector<uint8_t>& out) {
  const int64_t qb = ggml_block_size(t), nb = n / qb;
  const size_t row_bytes = ggml_row_size(t, n);
  const Eigen::Map<const RowMatF> Wc(Wd.data() + r0 * n, m, n);
  RowMatF Wh(m, n), S(m, n), Mn(m, n), D(m, n), G(m, n);
  std::vector<uint8_t> cl(static_cast<size_t>(m * n));
  std::vector<double> loss(static_cast<size_t>(m)), best(static_cast<size_t>(m));
  std::vector<char> tuned(static_cast<size_t>(m), 0);
  std::vector<uint8_t> init(out.begin() + static_cast<ptrdiff_t>(r0 * row_bytes),
                            out.begin() + static_cast<ptrdiff_t>((r0 + m) * row_bytes));

  // ggml's own blocks: the loss to beat.
  for (int64_t r = 0; r < m; ++r) dequantize_row(t, init.data() + r * row_bytes, Wh.data() + r * n, n);
  D = Wc - Wh;
  G.noalias() = D * Hf;
  row_losses(D, G, best);

  Params p{start_offsets(t, init, Wc, n), std::vector<float>(static_cast<size_t>(m * nb), 1.0f),
           std::vector<float>(static_cast<size_t>(m * nb), 1.0f)};
  const std::vector<float> v0 = p.v;
  Params bp = p;
  const double lr0 = o.lr > 0 ? o.lr : 1.0 / o.iters;
  const float lo = static_cast<float>(1 - o.scale_bound), hi = static_cast<float>(1 + o.scale_bound);
  for (int it = 0; it <= o.iters; ++it) {
    for (int64_t r = 0; r < m; ++r)
      eval_row(t, init.data() + r * row_bytes, Wc.data() + r * n, p.v.data() + r * n, p.alpha.data() + r * nb,
               p.beta.data() + r * nb, n, {Wh.data() + r * n, S.data() + r * n, Mn.data() + r * n, cl.data() + r * n},
               nullptr);
    D = Wc - Wh;
    G.noalias() = D * Hf;
    row_losses(D, G, loss);
    for (int64_t r = 0; r < m; ++r) {
      if (!(loss[static_cast<size_t>(r)] < best[static_cast<size_t>(r)])) continue;
      best[static_cast<size_t>(r)] = loss[static_cast<size_t>(r)], tuned[static_cast<size_t>(r)] = 1;
      std::copy_n(p.v.begin() + r * n, n, bp.v.begin() + r * n);
      std::copy_n(p.alpha.begin() + r * nb, nb, bp.alpha.begin() + r * nb);
      std::copy_n(p.beta.begin() + r * nb, nb, bp.beta.begin() + r * nb);
    }
    if (it == o.iters) break;
    const double decay = 1.0 - static_cast<double>(it) / o.iters;
    const float lr = static_cast<float>(lr0 * decay);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t b = 0; b < nb; ++b) {
        double ga = 0, gb = 0;  // −∂L/∂α · α/2 and −∂L/∂β · β/2
        for (int64_t k = b * qb; k < (b + 1) * qb; ++k) {
          const float g = G(r, k);
          float& v = p.v[static_cast<size_t>(r * n + k)];
          if (cl[static_cast<size_t>(r * n + k)]) {
            ga += static_cast<double>(g) * (Wh(r, k) - Mn(r, k));
            gb += static_cast<double>(g) * Mn(r, k);
          } else {
            ga += static_cast<double>(g) * (Wh(r, k) - Wc(r, k));
            const float c = v0[static_cast<size_t>(r * n + k)];
            v = std::clamp(v + lr * sgn(static_cast<double>(g) * S(r, k)), c - 0.5f, c + 0.5f);
          }
        }
        if (o.scale_bound > 0) {
          float& a = p.alpha[static_cast<size_t>(r * nb + b)];
          float& be = p.beta[static_cast<size_t>(r * nb + b)];
          a = std::clamp(a + lr * sgn(ga), lo, hi);
          be = std::clamp(be + lr * sgn(gb), lo, hi);
        }
      }
  }
  int64_t improved = 0;
  for (int64_t r = 0; r < m; ++r) {
    if (!tuned[static_cast<size_t>(r)]) continue;
    ++improved;
    eval_row(t, init.data() + r * row_bytes, Wc.data() + r * n, bp.v.data() + r * n, bp.alpha.data() + r * nb,
             bp.beta.data() + r * nb, n, {Wh.data() + r * n, S.data() + r * n, Mn.data() + r * n, cl.data() + r * n},
             out.data() + static_cast<size_t>(r0 + r) * row_bytes);
  }
  return improved;
}

// Σ_r Δ_r H Δ_rᵀ of the decoded rows, in double.
double exact_loss(const std::vector<float>& Wd, int64_t rows, int64_t n, GGMLType t, const double* H,
                  const std::vector<uint8_t>& bytes) {
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMat> Hm(H, n, n);
  const size_t row_bytes = ggml_row_size(t, n);
  double total = 0;
  std::vector<float> dec(static_cast<size_t>(n));
  Eigen::VectorXd d(n);
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(t, bytes.data() + static_cast<size_t>(r) * row_bytes, dec.data(), n);
    for (int64_t j = 0; j < n; ++j) d(j) = static_cast<double>(Wd[static_cast<size_t>(r * n + j)]) - dec[static_cast<size_t>(j)];
    total += d.dot(Hm * d);
  }
  return total;
}

}  // namespace

std::vector<uint8_t> autoround_quantize_ggml(const float* W, int64_t rows, int64_t cols, const double* H,
                                             int64_t nsamples, GGMLType t, const AutoRoundOptions& o,
                                             AutoRoundStats* stats, std::string_view what, const uint8_t* start) {
  check_inputs(W, rows, cols, H, t, o, what);
  const int64_t n = cols;
  std::vector<double> diag;
  std::vector<char> dead;
  std::vector<float> Wd;
  const int64_t ndead = gptq_detail::dead_columns(W, rows, H, n, diag, dead, Wd, what);
  const double ns = static_cast<double>(std::max<int64_t>(nsamples, 1));
  std::vector<float> imp(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) imp[static_cast<size_t>(j)] = dead[j] ? 0.0f : static_cast<float>(diag[j] / ns);

  std::vector<uint8_t> out(static_cast<size_t>(rows) * ggml_row_size(t, n, what));
  if (start) std::copy(start, start + out.size(), out.begin());
  else quantize_rows(t, Wd.data(), out.data(), rows, n, std::span<const float>(imp), what);
  const double init_loss = stats ? exact_loss(Wd, rows, n, t, H, out) : 0.0;

  std::vector<float> Hf(static_cast<size_t>(n * n));
  for (size_t k = 0; k < Hf.size(); ++k) Hf[k] = static_cast<float>(H[k]);
  const Eigen::Map<const RowMatF> Hm(Hf.data(), n, n);
  const int64_t nchunks = (rows + kChunk - 1) / kChunk;
  const bool par = nchunks > 1 && omp_get_max_threads() > 1 && rows * n * n >= (int64_t{1} << 18);
  int64_t improved = 0;
  std::string err;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : improved) if (par)
  for (int64_t c = 0; c < nchunks; ++c) {
    try {
      improved += tune_chunk(Wd, c * kChunk, std::min(kChunk, rows - c * kChunk), n, t, Hm, o, out);
    } catch (const std::exception& e) {
#pragma omp critical(moetool_autoround_err)
      if (err.empty()) err = e.what();
    }
  }
  if (!err.empty()) throw Error(err);
  const double loss = o.refit_scales ? ggml_refit_scale_fields(Wd.data(), rows, n, t, H, out)
                                     : (stats ? exact_loss(Wd, rows, n, t, H, out) : 0.0);
  if (stats) {
    stats->init_loss = init_loss / ns;
    stats->loss = loss / ns;
    stats->rows_improved = improved;
    stats->dead_columns = ndead;
  }
  return out;
}

}  // namespace moetool
