// formats/ggml_quants.cc — ggml block formats (see ggml_quants.h): the row API, its checks and
// parallel loop, the plain types, and the dispatch to the quantizers (formats/ggml_quant_legacy.cc,
// formats/ggml_quant_k.cc, which follow ggml operation by operation: same float operations in the
// same order, the same round-half-to-even `nearest_int` trick, the same f16 rounding of scales, so
// the same bytes as ggml's quantize_row_*_ref, and with an importance vector as ggml's
// quantize_row_*_impl) and to the block decoders of formats/ggml_blocks.h.
#include "formats/ggml_quants.h"

#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>

#include "core/dtype.h"
#include "core/error.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_quant_internal.h"

namespace moetool {
namespace {

using ggml_quant::Codec;
using ggml_quant::ValueError;

constexpr float kF16Max = 65504.0f;

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
        ggml_quant::put_f16(y + 2 * i, x[i]);
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

const Codec* codec_of(GGMLType t) {
  const Codec* c = ggml_quant::legacy_codec(t);
  return c ? c : ggml_quant::k_codec(t);
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
    uint32_t bad = 0;  // any exponent all ones (inf, nan): a vectorized scan, then the culprit
#pragma omp simd reduction(| : bad)
    for (int64_t j = 0; j < n_per_row; ++j) {
      uint32_t u;
      std::memcpy(&u, x + j, 4);
      bad |= static_cast<uint32_t>((u & 0x7F800000u) == 0x7F800000u);
    }
    if (bad)
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

void quantize_row(GGMLType t, const float* src, void* dst, int64_t n, const float* importance, std::string_view what) {
  const Codec* c = codec_of(t);
  auto* y = static_cast<uint8_t*>(dst);
  try {
    for (int64_t j = 0; j < n; ++j)
      if (!std::isfinite(src[j])) throw ValueError{str("non-finite value ", src[j], " at column ", j)};
    if (importance && c && c->quant_imp)
      c->quant_imp(src, y, n, importance);
    else if (c)
      c->quant(src, y, n / ggml_block_size(t));
    else
      quant_plain(t, src, y, n);
  } catch (const ValueError& e) {
    fail(prefix(what), e.why);
  }
}

void dequantize_row(GGMLType t, const void* src, float* dst, int64_t n) {
  const auto* x = static_cast<const uint8_t*>(src);
  if (ggml::with_block(t, [&](auto b) { ggml::decode_blocks<decltype(b)>(x, dst, n / decltype(b)::kElems); })) return;
  switch (t) {
    case GGMLType::F32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return;
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
