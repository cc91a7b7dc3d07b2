// compress/gptq_ggml.cc — GPTQ whose rounding step is a ggml block quantizer (see gptq_ggml.h).
#include "compress/gptq_ggml.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include <Eigen/Dense>

#include "compress/gptq_internal.h"
#include "core/error.h"
#include "formats/ggml_levels.h"
#include "formats/ggml_quants.h"

namespace moetool {
namespace {

std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }

// The problem in processing order (whole ggml blocks permuted; see gptq.cc's Plan).
struct Plan {
  int64_t rows = 0, n = 0, qb = 0;  // W [rows, n]; ggml block size
  size_t tsize = 0, row_bytes = 0;  // bytes per ggml block and per encoded row
  std::vector<float> Wd;            // [rows, n] W with dead columns zeroed (original column order)
  std::vector<int64_t> perm;        // [n] processing order: k-th processed column is perm[k]
  std::vector<float> imp;           // [n] importance (diag(H)/nsamples) in processing order, or empty
  std::vector<float> U;             // [n, n] upper Cholesky factor of (H_perm + λI)⁻¹
  std::vector<double> Ud;           // [n] its diagonal
  double damp = 0, lambda = 0;
  int64_t ndead = 0;
};

void check_inputs(const float* W, int64_t rows, int64_t cols, const double* H, GGMLType t,
                  const GPTQGGMLOptions& o, std::string_view what) {
  if (!(o.damp >= 0) || !std::isfinite(o.damp)) fail(prefix(what), "GPTQ damping must be ≥ 0, got ", o.damp);
  if (o.block_size < 1) fail(prefix(what), "GPTQ block size must be ≥ 1, got ", o.block_size);
  gptq_detail::check_ggml_matrix(W, rows, cols, H, t, "GPTQ", what);
}

Plan make_plan(const float* W, int64_t rows, int64_t cols, const double* H, int64_t nsamples, GGMLType t,
               const GPTQGGMLOptions& o, std::string_view what) {
  Plan P;
  const int64_t n = cols;
  P.rows = rows, P.n = n, P.qb = ggml_block_size(t);
  P.tsize = ggml_type_size(t);
  P.row_bytes = ggml_row_size(t, n, what);
  // Dead columns: H_jj = 0 → H_jj = 1, W[:, j] = 0.
  std::vector<double> diag;
  std::vector<char> dead;
  P.ndead = gptq_detail::dead_columns(W, rows, H, n, diag, dead, P.Wd, what);

  // Whole blocks, by decreasing Σ diag(H) with act-order (stable: ties keep their order).
  const int64_t nb = n / P.qb;
  std::vector<int64_t> border(static_cast<size_t>(nb));
  std::iota(border.begin(), border.end(), int64_t{0});
  if (o.act_order) {
    std::vector<double> mass(static_cast<size_t>(nb), 0.0);
    for (int64_t j = 0; j < n; ++j) mass[static_cast<size_t>(j / P.qb)] += dead[j] ? 0.0 : diag[j];
    std::stable_sort(border.begin(), border.end(), [&](int64_t a, int64_t b) { return mass[a] > mass[b]; });
  }
  P.perm.resize(static_cast<size_t>(n));
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t i = 0; i < P.qb; ++i) P.perm[static_cast<size_t>(b * P.qb + i)] = border[b] * P.qb + i;

  if (o.importance && ggml_quant_uses_importance(t)) {
    P.imp.resize(static_cast<size_t>(n));
    const double ns = static_cast<double>(std::max<int64_t>(nsamples, 1));
    for (int64_t k = 0; k < n; ++k) {
      const int64_t j = P.perm[k];
      P.imp[static_cast<size_t>(k)] = dead[j] ? 0.0f : static_cast<float>(diag[j] / ns);
    }
  }
  gptq_detail::Factor F = gptq_detail::factor_hessian(H, n, diag, P.perm, o.damp, what);
  P.U = std::move(F.U);
  P.Ud = std::move(F.Ud);
  P.damp = F.damp, P.lambda = F.lambda;
  return P;
}

// One ggml block of one row at processing column k0: its scales from ggml's quantizer on the
// current (updated) values, then each element's nearest level with error feedback to the rest of
// the lazy batch [k0 + j + 1, i2). Writes the block to `blk` and the scaled errors to err[0 : qb].
// Returns Σ e².
double quantize_block(const Plan& P, GGMLType t, float* w, int64_t k0, int64_t i2, uint8_t* blk, float* err,
                      GGMLBlockLevels& lv, std::string_view what) {
  quantize_row(t, w + k0, blk, P.qb, P.imp.empty() ? nullptr : P.imp.data() + k0, what);
  ggml_block_levels(t, blk, &lv);
  double e2 = 0;
  for (int64_t i = 0; i < P.qb; ++i) {
    const int64_t k = k0 + i;
    const float x = w[k];
    const int q = lv.nearest(static_cast<int>(i), x);
    ggml_block_set_level(t, blk, static_cast<int>(i), q);
    const float e = static_cast<float>((x - lv.value(static_cast<int>(i), q)) / P.Ud[k]);
    err[i] = e;
    e2 += static_cast<double>(e) * e;
    const float* u = P.U.data() + k * P.n;
    for (int64_t j = k + 1; j < i2; ++j) w[j] -= e * u[j];
  }
  return e2;
}

// The blocked sweep (rows in parallel chunks, as gptq.cc's sweep_columns): out receives each row's
// blocks in the original order, e2[r] Σ e² of row r.
void sweep(const Plan& P, GGMLType t, const GPTQGGMLOptions& o, std::vector<uint8_t>& out, std::vector<double>& e2,
           std::string_view what) {
  const int64_t rows = P.rows, n = P.n, qb = P.qb;
  std::vector<float> Wp(static_cast<size_t>(rows * n));  // [rows, n] working copy in processing order
#pragma omp parallel for schedule(static) if (rows * n >= 65536)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < n; ++k) Wp[static_cast<size_t>(r * n + k)] = P.Wd[static_cast<size_t>(r * n + P.perm[k])];

  const int64_t bs = (std::max<int64_t>(o.block_size, 1) + qb - 1) / qb * qb;
  const int64_t bmax = std::min(bs, n);
  const int nthreads = omp_get_max_threads();
  const bool small = rows * n * n < (int64_t{1} << 22);
  const bool par = rows * n * qb >= (int64_t{1} << 20) && nthreads > 1;
  const int64_t chunk = par ? std::clamp<int64_t>((rows + nthreads - 1) / nthreads, 1, 256) : std::min<int64_t>(rows, 256);
  const int64_t nchunks = (rows + chunk - 1) / chunk;
  std::string err;
#pragma omp parallel if (par)
  {
    std::vector<float> Err(static_cast<size_t>(chunk * bmax));  // [m, B] scaled errors of a batch
    GGMLBlockLevels lv;
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < nchunks; ++c) {
      try {
        const int64_t r0 = c * chunk, m = std::min(chunk, rows - r0);
        for (int64_t i1 = 0; i1 < n; i1 += bs) {
          const int64_t i2 = std::min(i1 + bs, n), B = i2 - i1;
          for (int64_t rl = 0; rl < m; ++rl) {
            const int64_t r = r0 + rl;
            float* w = Wp.data() + r * n;
            for (int64_t k0 = i1; k0 < i2; k0 += qb) {
              uint8_t* blk = out.data() + static_cast<size_t>(r) * P.row_bytes + static_cast<size_t>(P.perm[k0] / qb) * P.tsize;
              e2[static_cast<size_t>(r)] +=
                  quantize_block(P, t, w, k0, i2, blk, Err.data() + rl * B + (k0 - i1), lv, what);
            }
          }
          gptq_detail::batch_update(Wp.data(), n, r0, m, i1, i2, Err.data(), P.U.data(), small);
        }
      } catch (const std::exception& e) {
#pragma omp critical(moetool_gptq_ggml_err)
        if (err.empty()) err = e.what();
      }
    }
  }
  if (!err.empty()) throw Error(err);
}

}  // namespace

// Scale refit (see gptq_ggml.h): one Gauss-Seidel pass over the blocks of row chunks with the
// gradient rows G = Δ·H kept current (Δ = Wd − Ŵ, H undamped, original column order); a block's
// new fields are kept only when their f16-rounded, exactly decoded change c lowers
// (Δ − c)H(Δ − c)ᵀ = ΔHΔᵀ − 2c·g + cᵀH_bb c. Returns Σ_r Δ_r H Δ_rᵀ after the refit.
double ggml_refit_scale_fields(const float* Wd, int64_t rows, int64_t n, GGMLType t, const double* H,
                               std::vector<uint8_t>& out) {
  using RowMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t qb = ggml_block_size(t), nb = n / qb;
  const size_t tsize = ggml_type_size(t), row_bytes = ggml_row_size(t, n);
  const Eigen::Map<const RowMat> Hm(H, n, n);
  const int nthreads = omp_get_max_threads();
  const bool par = rows * n * n >= (int64_t{1} << 22) && nthreads > 1;
  const int64_t chunk = par ? std::clamp<int64_t>((rows + nthreads - 1) / nthreads, 1, 64) : std::min<int64_t>(rows, 64);
  const int64_t nchunks = (rows + chunk - 1) / chunk;
  double total = 0;
#pragma omp parallel for schedule(dynamic, 1) reduction(+ : total) if (par)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t r0 = c * chunk, m = std::min(chunk, rows - r0);
    RowMat D(m, n), C(m, qb);
    std::vector<float> dec(static_cast<size_t>(n));
    for (int64_t rl = 0; rl < m; ++rl) {
      dequantize_row(t, out.data() + static_cast<size_t>(r0 + rl) * row_bytes, dec.data(), n);
      for (int64_t j = 0; j < n; ++j)
        D(rl, j) = static_cast<double>(Wd[static_cast<size_t>((r0 + rl) * n + j)]) - dec[static_cast<size_t>(j)];
    }
    RowMat G = D * Hm;
    std::vector<float> a(static_cast<size_t>(qb)), bt(static_cast<size_t>(qb)), o(static_cast<size_t>(qb)),
        w(static_cast<size_t>(qb));
    uint8_t tmp[256];
    for (int64_t b = 0; b < nb; ++b) {
      C.setZero();
      const auto Hbb = Hm.block(b * qb, b * qb, qb, qb);
      for (int64_t rl = 0; rl < m; ++rl) {
        uint8_t* blk = out.data() + static_cast<size_t>(r0 + rl) * row_bytes + static_cast<size_t>(b) * tsize;
        const GGMLScaleFields f = ggml_block_scale_fields(t, blk);
        std::copy(blk, blk + tsize, tmp);
        ggml_block_set_scale_fields(t, tmp, 1.0f, 0.0f);
        dequantize_row(t, tmp, a.data(), qb);  // α_j: the value per unit of d
        if (f.has_m) {
          ggml_block_set_scale_fields(t, tmp, 0.0f, 1.0f);
          dequantize_row(t, tmp, bt.data(), qb);  // β_j: per unit of m
        }
        const Eigen::Map<const Eigen::VectorXf> av(a.data(), qb), bv(bt.data(), qb);
        const Eigen::VectorXd ad = av.cast<double>(), bd = bv.cast<double>();
        const Eigen::VectorXd ha = Hbb * ad, gb = G.row(rl).segment(b * qb, qb).transpose();
        double dd = 0, dm = 0;
        const double m00 = ad.dot(ha), r0v = ad.dot(gb);
        if (!(m00 > 0)) continue;
        if (f.has_m) {
          const Eigen::VectorXd hb = Hbb * bd;
          const double m01 = ad.dot(hb), m11 = bd.dot(hb), r1v = bd.dot(gb), det = m00 * m11 - m01 * m01;
          if (det > 1e-12 * m00 * m11) dd = (r0v * m11 - r1v * m01) / det, dm = (m00 * r1v - m01 * r0v) / det;
          else dd = r0v / m00;
        } else {
          dd = r0v / m00;
        }
        const double nd = f.d + dd, nm = f.m + dm;
        if (!std::isfinite(nd) || !std::isfinite(nm) || std::fabs(nd) > 65504 || std::fabs(nm) > 65504) continue;
        std::copy(blk, blk + tsize, tmp);
        ggml_block_set_scale_fields(t, tmp, static_cast<float>(nd), static_cast<float>(nm));
        dequantize_row(t, blk, o.data(), qb);
        dequantize_row(t, tmp, w.data(), qb);
        Eigen::VectorXd cv(qb);
        for (int64_t j = 0; j < qb; ++j) cv(j) = static_cast<double>(w[static_cast<size_t>(j)]) - o[static_cast<size_t>(j)];
        const double dl = -2.0 * cv.dot(gb) + cv.dot(Hbb * cv);
        if (!(dl < 0)) continue;
        std::copy(tmp, tmp + tsize, blk);
        C.row(rl) = cv.transpose();
        D.row(rl).segment(b * qb, qb) -= cv.transpose();
      }
      G.noalias() -= C * Hm.middleRows(b * qb, qb);
    }
    for (int64_t rl = 0; rl < m; ++rl) total += D.row(rl).dot(G.row(rl));
  }
  return total;
}

bool gptq_ggml_supports(GGMLType t) { return ggml_has_levels(t); }

std::vector<uint8_t> gptq_quantize_ggml(const float* W, int64_t rows, int64_t cols, const double* H,
                                        int64_t nsamples, GGMLType t, const GPTQGGMLOptions& o, GPTQStats* stats,
                                        std::string_view what) {
  check_inputs(W, rows, cols, H, t, o, what);
  const Plan P = make_plan(W, rows, cols, H, nsamples, t, o, what);
  std::vector<uint8_t> out(static_cast<size_t>(rows) * P.row_bytes);
  std::vector<double> e2(static_cast<size_t>(rows), 0.0);
  sweep(P, t, o, out, e2, what);
  if (o.refit_scales) {
    const double loss = ggml_refit_scale_fields(P.Wd.data(), rows, cols, t, H, out);
    if (stats) {
      stats->loss = loss / static_cast<double>(std::max<int64_t>(nsamples, 1));
      stats->damp_used = P.damp;
      stats->lambda = P.lambda;
      stats->dead_columns = P.ndead;
    }
    return out;
  }
  if (stats) {
    // ‖Wd − Ŵ‖² from the decoded rows, for the λ correction of Σ e² (see GPTQStats::loss).
    double dw2 = 0;
#pragma omp parallel for schedule(static) reduction(+ : dw2) if (rows * cols >= 65536)
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<float> dec(static_cast<size_t>(cols));
      dequantize_row(t, out.data() + static_cast<size_t>(r) * P.row_bytes, dec.data(), cols);
      for (int64_t j = 0; j < cols; ++j) {
        const double d = static_cast<double>(P.Wd[static_cast<size_t>(r * cols + j)]) - dec[static_cast<size_t>(j)];
        dw2 += d * d;
      }
    }
    const double sum_e2 = std::accumulate(e2.begin(), e2.end(), 0.0);
    stats->loss = (sum_e2 - P.lambda * dw2) / static_cast<double>(std::max<int64_t>(nsamples, 1));
    stats->damp_used = P.damp;
    stats->lambda = P.lambda;
    stats->dead_columns = P.ndead;
  }
  return out;
}

}  // namespace moetool
