// kernels/linear_gptq.cc — GPTQ weight matrices (see linear_gptq.h).
#include "kernels/linear_gptq.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "formats/gptq_pack.h"
#include "core/dtype.h"
#include <Eigen/Dense>

#include "core/error.h"
#include "kernels/quant_dot.h"

namespace moetool {
namespace {

class GPTQMatrix final : public WeightMatrix {
 public:
  GPTQMatrix(int bits, int64_t rows, int64_t cols, int64_t ngroups, const int32_t* qweight, const int32_t* qzeros,
             const uint16_t* scales, const int32_t* g_idx, std::shared_ptr<const void> owner)
      : bits_(bits), rows_(rows), cols_(cols), ngroups_(ngroups), qweight_(qweight), qzeros_(qzeros),
        scales_(scales), g_idx_(g_idx), owner_(std::move(owner)) {
    const int64_t gsz = (cols_ + ngroups_ - 1) / ngroups_;
    for (int64_t j = 0; j < cols_ && !act_order_; ++j) act_order_ = g_idx_[j] != j / gsz;
    // The integer path needs every 32 inputs in one group, and levels q − z + 2^bits ≤ 129 (bits ≤ 6).
    int8_ok_ = bits_ <= 6 && cols_ % 32 == 0;
    for (int64_t j = 0; j < cols_ && int8_ok_; ++j) int8_ok_ = g_idx_[j] == g_idx_[j / 32 * 32];
    packed_.kind = PackedWeight::Kind::Gptq;
    packed_.bits = bits_;
    packed_.ngroups = ngroups_;
    packed_.qweight = qweight_;
    packed_.qzeros = qzeros_;
    packed_.scales = scales_;
    packed_.g_idx = g_idx_;
  }
  const PackedWeight* packed() const override { return &packed_; }

  int64_t rows() const override { return rows_; }
  int64_t cols() const override { return cols_; }
  std::string storage() const override {
    const int64_t gsz = (cols_ + ngroups_ - 1) / ngroups_;
    return str("GPTQ int", bits_, " g", gsz, act_order_ ? " act-order" : "");
  }
  uint64_t stored_bytes() const override {
    const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
    return 4 * u(cols_ * bits_ / 32) * u(rows_) + 4 * u(ngroups_) * u(rows_ * bits_ / 32) + 2 * u(ngroups_ * rows_) +
           4 * u(cols_);
  }

  void to_dense(float* out) const override {
    const int64_t tile = tile_rows();
    std::vector<float> T(static_cast<size_t>(tile * cols_));  // [cols, m]
    for (int64_t r0 = 0; r0 < rows_; r0 += tile) {
      const int64_t m = std::min(tile, rows_ - r0);
      dequantize_tile_t(r0, m, T.data(), /*parallel=*/true);
#pragma omp parallel for schedule(static) if (m * cols_ >= 65536)
      for (int64_t rl = 0; rl < m; ++rl)
        for (int64_t i = 0; i < cols_; ++i) out[(r0 + rl) * cols_ + i] = T[static_cast<size_t>(i * m + rl)];
    }
  }

  // Y[n, rows] = X[n, cols] · Wᵀ + beta · Y.
  void matmul(const float* X, int64_t n, float* Y, float beta) const override {
    if (n <= 0) return;
    if (quant_dot() == QuantDot::Int8 && int8_ok_) {
      matmul_int8(X, n, Y, beta);
      return;
    }
    if (n <= kFusedMaxTokens) {
      matmul_fused(X, n, Y, beta);
      return;
    }
    // Tiles of output rows, one per thread at a time: dequantize W_tileᵀ, then Eigen's GEMM (single-
    // threaded inside the parallel region). Alternating an OpenMP dequantization region with
    // multi-threaded BLAS calls per tile makes the two thread pools spin against each other (measured
    // 8× slower at 64 tokens on 2 cores).
    using MatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    const int64_t tile = tile_rows();
    const int64_t ntiles = (rows_ + tile - 1) / tile;
    const Eigen::Map<const MatF> Xm(X, n, cols_);
#pragma omp parallel if (ntiles > 1 && n * rows_ * cols_ >= (int64_t{1} << 22))
    {
      std::vector<float> T(static_cast<size_t>(tile * cols_));  // [cols, m] = W[r0 : r0+m, :]ᵀ
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t r0 = t * tile, m = std::min(tile, rows_ - r0);
        dequantize_tile_t(r0, m, T.data(), /*parallel=*/false);
        const Eigen::Map<const MatF> Tm(T.data(), cols_, m);
        Eigen::Map<MatF, 0, Stride> Ym(Y + r0, n, m, Stride(rows_));
        if (beta == 0.0f) {
          Ym.noalias() = Xm * Tm;
        } else {
          Ym *= beta;
          Ym.noalias() += Xm * Tm;
        }
      }
    }
  }

 private:
  static constexpr int64_t kFusedMaxTokens = 4;
  static constexpr int64_t kTileFloats = 1 << 20;  // 4 MiB of dequantized weights per tile
  static constexpr int64_t kFusedRows = 64;        // outputs per block of the fused path

  // Rows per tile: at most kTileFloats weights, and at least one tile per thread where rows allow.
  int64_t tile_rows() const {
    const int64_t per_thread = (rows_ + omp_get_max_threads() - 1) / omp_get_max_threads();
    const int64_t t = std::min(kTileFloats / cols_, (per_thread + 15) / 16 * 16);
    return std::min(rows_, std::max<int64_t>(t / 16 * 16, 16));
  }

  // Scales and zeros (as floats) of outputs r0 .. r0+m−1 for every group: sc, zf [ngroups, m].
  void group_params(int64_t r0, int64_t m, float* sc, float* zf) const {
    const int64_t wz = rows_ * bits_ / 32;
    for (int64_t g = 0; g < ngroups_; ++g)
      for (int64_t rl = 0; rl < m; ++rl) {
        sc[g * m + rl] = f16_to_f32(scales_[g * rows_ + r0 + rl]);
        zf[g * m + rl] = static_cast<float>(static_cast<int32_t>(gptq_stream_get(qzeros_ + g * wz, 1, r0 + rl, bits_)) + 1);
      }
  }

  // Dequantized input column i of outputs r0 .. r0+m−1 into dst[m]: sc · (q − zero), as int_dequantize.
  void dequant_column(int64_t i, int64_t r0, int64_t m, const float* sc, const float* zf, float* dst) const {
    const int64_t p = i * bits_;
    const int off = static_cast<int>(p & 31);
    const uint32_t mask = (1u << bits_) - 1u;
    const uint32_t* w0 = reinterpret_cast<const uint32_t*>(qweight_) + (p >> 5) * rows_ + r0;
    const int64_t g = g_idx_[i];
    const float* s = sc + g * m;
    const float* z = zf + g * m;
    if (off + bits_ <= 32) {
      for (int64_t rl = 0; rl < m; ++rl)
        dst[rl] = s[rl] * (static_cast<float>((w0[rl] >> off) & mask) - z[rl]);
    } else {  // the value straddles two words (3, 5, 6, 7 bits)
      const uint32_t* w1 = w0 + rows_;
      for (int64_t rl = 0; rl < m; ++rl)
        dst[rl] = s[rl] * (static_cast<float>(((w0[rl] >> off) | (w1[rl] << (32 - off))) & mask) - z[rl]);
    }
  }

  // T[cols, m] = W[r0 : r0+m, :]ᵀ, optionally parallel over input columns.
  void dequantize_tile_t(int64_t r0, int64_t m, float* T, bool parallel) const {
    std::vector<float> sc(static_cast<size_t>(ngroups_ * m)), zf(sc.size());
    group_params(r0, m, sc.data(), zf.data());
#pragma omp parallel for schedule(static) if (parallel && m * cols_ >= 65536)
    for (int64_t i = 0; i < cols_; ++i) dequant_column(i, r0, m, sc.data(), zf.data(), T + i * m);
  }

  // The integer path (kernels/quant_dot.h), as for ggml blocks (kernels/linear_quant.cc): element
  // s·(q − z) is level q − z + 2^bits with offset 2^bits, a = s for both halves, no b.
  void matmul_int8(const float* X, int64_t n, float* Y, float beta) const {
    const int offset = 1 << bits_;
    int8_matmul(X, n, rows_, cols_, offset, Y, beta, [&](int64_t r0, int64_t m, U8Rows* w) {
      thread_local std::vector<float> sc, zf;
      sc.resize(static_cast<size_t>(ngroups_ * m));
      zf.resize(sc.size());
      group_params(r0, m, sc.data(), zf.data());
      w->reset(m, cols_ / 32, offset, false);
      const uint32_t mask = (1u << bits_) - 1u;
      for (int64_t i = 0; i < cols_; ++i) {
        const int64_t p = i * bits_, g = g_idx_[i];
        const int off = static_cast<int>(p & 31);
        const uint32_t* w0 = reinterpret_cast<const uint32_t*>(qweight_) + (p >> 5) * rows_ + r0;
        for (int64_t rl = 0; rl < m; ++rl) {
          uint32_t v = w0[rl] >> off;
          if (off + bits_ > 32) v |= w0[rl + rows_] << (32 - off);
          const int z = static_cast<int>(zf[static_cast<size_t>(g * m + rl)]);
          w->q(rl, i / 32)[i % 32] = static_cast<uint8_t>(static_cast<int>(v & mask) - z + offset);
        }
      }
      for (int64_t j = 0; j < cols_ / 32; ++j) {
        const int64_t g = g_idx_[j * 32];
        for (int64_t rl = 0; rl < m; ++rl) std::fill_n(w->a(rl, j), 8, sc[static_cast<size_t>(g * m + rl)]);
      }
    });
  }

  // A few tokens: each thread takes blocks of outputs, dequantizes one input column of the block
  // at a time and accumulates every token's dot products in double.
  void matmul_fused(const float* X, int64_t n, float* Y, float beta) const {
    const int64_t nblocks = (rows_ + kFusedRows - 1) / kFusedRows;
    const bool par = rows_ * cols_ >= 65536;
#pragma omp parallel if (par)
    {
      std::vector<float> sc(static_cast<size_t>(ngroups_ * kFusedRows)), zf(sc.size()), wv(kFusedRows);
      std::vector<double> acc(static_cast<size_t>(n * kFusedRows));  // [n, block]
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t r0 = b * kFusedRows, m = std::min(kFusedRows, rows_ - r0);
        group_params(r0, m, sc.data(), zf.data());
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t i = 0; i < cols_; ++i) {
          dequant_column(i, r0, m, sc.data(), zf.data(), wv.data());
          for (int64_t t = 0; t < n; ++t) {
            const double x = X[t * cols_ + i];
            double* a = acc.data() + t * kFusedRows;
            for (int64_t rl = 0; rl < m; ++rl) a[rl] += x * wv[static_cast<size_t>(rl)];
          }
        }
        for (int64_t t = 0; t < n; ++t)
          for (int64_t rl = 0; rl < m; ++rl) {
            float& y = Y[t * rows_ + r0 + rl];
            y = static_cast<float>(acc[static_cast<size_t>(t * kFusedRows + rl)]) + (beta != 0.0f ? beta * y : 0.0f);
          }
      }
    }
  }

  int bits_;
  int64_t rows_, cols_, ngroups_;
  const int32_t* qweight_;  // [cols·bits/32, rows]
  const int32_t* qzeros_;   // [ngroups, rows·bits/32]
  const uint16_t* scales_;  // [ngroups, rows] f16
  const int32_t* g_idx_;    // [cols]
  std::shared_ptr<const void> owner_;
  bool act_order_ = false;
  bool int8_ok_ = false;  // the integer path applies (see the constructor)
  PackedWeight packed_;
};

}  // namespace

std::shared_ptr<const WeightMatrix> make_gptq_matrix(int bits, int64_t rows, int64_t cols, int64_t ngroups,
                                                     const int32_t* qweight, const int32_t* qzeros,
                                                     const uint16_t* scales, const int32_t* g_idx,
                                                     std::shared_ptr<const void> owner, const std::string& name) {
  const std::string what = str("tensor '", name, "'");
  check_gptq_shape(bits, rows, cols, ngroups, what);
  if (!qweight || !qzeros || !scales || !g_idx) fail(what, ": missing GPTQ tensor data");
  check_gptq_g_idx(g_idx, cols, ngroups, what);
  for (int64_t k = 0; k < ngroups * rows; ++k)
    if (!std::isfinite(f16_to_f32(scales[k])))
      fail(what, ": scales[", k / rows, ", ", k % rows, "] is ", f16_to_f32(scales[k]), " (must be finite)");
  return std::make_shared<GPTQMatrix>(bits, rows, cols, ngroups, qweight, qzeros, scales, g_idx, std::move(owner));
}

std::shared_ptr<const WeightMatrix> make_gptq_matrix(const IntQuantized& q, const std::string& name) {
  std::shared_ptr<GPTQTensors> t;
  try {
    t = std::make_shared<GPTQTensors>(gptq_pack(q));
  } catch (const Error& e) {
    fail("tensor '", name, "': ", e.what());
  }
  return make_gptq_matrix(t->bits, t->rows, t->cols, t->ngroups, t->qweight.data(), t->qzeros.data(),
                          t->scales.data(), t->g_idx.data(), std::shared_ptr<const void>(t, t.get()), name);
}

}  // namespace moetool
