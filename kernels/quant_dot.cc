// kernels/quant_dot.cc — the integer dot path's portable parts (see quant_dot.h): ggml blocks unpacked
// to u8 levels with per-half scales, activations quantized per 32, the scalar kernel, and the choice of
// instruction set. The AVX2 and AVX-512 VNNI kernels are in quant_dot_avx2.cc, quant_dot_vnni.cc.
#include "kernels/quant_dot.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "formats/ggml_blocks.h"

namespace moetool {

namespace quant_dot_simd {  // quant_dot_avx2.cc, quant_dot_vnni.cc
bool avx512_vnni_usable();
void dot_rows_avx2(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta);
void dot_rows_vnni(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta);
}  // namespace quant_dot_simd

namespace {

std::atomic<QuantDot> g_quant_dot{QuantDot::Float};

// One 32-block of unpacked output: levels q[32], scales a (lanes 0..3 half 0, 4..7 half 1), b.
struct Out32 {
  uint8_t* q;
  float* a;
  float* b;
  void scales(float a0, float a1, float bj) const {
    for (int l = 0; l < 4; ++l) a[l] = a0, a[4 + l] = a1;
    *b = bj;
  }
};

// The five 32-element types: levels from nibbles (+ fifth bits) or int8.
void unpack_q8_0(const uint8_t* blk, const Out32& o) {
  for (int l = 0; l < 32; ++l) o.q[l] = static_cast<uint8_t>(static_cast<int8_t>(blk[2 + l]) + 128);
  const float d = ggml::f16_at(blk);
  o.scales(d, d, 0.0f);
}
template <int kQs, bool kMin, int kQh>
void unpack_q4q5(const uint8_t* blk, const Out32& o) {
  const uint32_t qh = kQh > 0 ? ggml::load_u32(blk + kQh) : 0u;
  for (int l = 0; l < 16; ++l) {
    int lo = blk[kQs + l] & 0xF, hi = blk[kQs + l] >> 4;
    if (kQh > 0) lo |= static_cast<int>((qh >> l) & 1u) << 4, hi |= static_cast<int>((qh >> (l + 16)) & 1u) << 4;
    o.q[l] = static_cast<uint8_t>(lo);
    o.q[16 + l] = static_cast<uint8_t>(hi);
  }
  const float d = ggml::f16_at(blk);
  o.scales(d, d, kMin ? ggml::f16_at(blk + 2) : 0.0f);
}

// K-quants: one 256-block is eight 32-blocks of the output.
template <bool kFive>
void unpack_q4q5_k(const uint8_t* blk, const Out32& o0) {
  constexpr int kQh = 16, kQs = kFive ? 48 : 16;
  const float d = ggml::f16_at(blk), dmin = ggml::f16_at(blk + 2);
  for (int s = 0; s < 8; ++s) {
    const Out32 o{o0.q + 32 * s, o0.a + 8 * s, o0.b + s};
    int sc, m;
    ggml::k4_scale_min(blk + 4, s, &sc, &m);
    for (int l = 0; l < 32; ++l) {
      int v = ggml::nibble(blk[kQs + 32 * (s >> 1) + l], s & 1);
      if (kFive) v |= ((blk[kQh + l] >> s) & 1) << 4;
      o.q[l] = static_cast<uint8_t>(v);
    }
    const float a = d * static_cast<float>(sc);
    o.scales(a, a, -(dmin * static_cast<float>(m)));
  }
}
void unpack_q6_k(const uint8_t* blk, const Out32& o0) {
  const float d = ggml::f16_at(blk + 208);
  for (int k = 0; k < 8; ++k) {
    const Out32 o{o0.q + 32 * k, o0.a + 8 * k, o0.b + k};
    const int half = k >> 2, c = k & 3;
    for (int l = 0; l < 32; ++l) {
      const int lo = ggml::nibble(blk[64 * half + 32 * (c & 1) + l], c >> 1);
      const int hi = (blk[128 + 32 * half + l] >> (2 * c)) & 3;
      o.q[l] = static_cast<uint8_t>(lo | (hi << 4));
    }
    const float a0 = d * static_cast<float>(static_cast<int8_t>(blk[192 + 2 * k]));
    const float a1 = d * static_cast<float>(static_cast<int8_t>(blk[192 + 2 * k + 1]));
    o.scales(a0, a1, 0.0f);
  }
}

using UnpackFn = void (*)(const uint8_t*, const Out32&);
UnpackFn unpack_fn(GGMLType t) {
  switch (t) {
    case GGMLType::Q8_0: return unpack_q8_0;
    case GGMLType::Q4_0: return unpack_q4q5<2, false, 0>;
    case GGMLType::Q4_1: return unpack_q4q5<4, true, 0>;
    case GGMLType::Q5_0: return unpack_q4q5<6, false, 2>;
    case GGMLType::Q5_1: return unpack_q4q5<8, true, 4>;
    case GGMLType::Q4_K: return unpack_q4q5_k<false>;
    case GGMLType::Q5_K: return unpack_q4q5_k<true>;
    case GGMLType::Q6_K: return unpack_q6_k;
    default: return nullptr;
  }
}

void dot_rows_scalar(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta) {
  const int64_t nb = W.nb;
  for (int64_t t = 0; t < X.n; ++t)
    for (int64_t r = 0; r < W.rows; ++r) {
      float acc = 0.0f;
      for (int64_t j = 0; j < nb; ++j) {
        const uint8_t* wq = W.q(r, j);
        const int8_t* xq = X.p(t, j);
        int32_t I[2] = {0, 0};
        for (int i = 0; i < 32; ++i) I[i >> 4] += (static_cast<int32_t>(wq[i]) - W.offset) * static_cast<int32_t>(xq[i]);
        const float dx = X.d(t, j);
        acc += static_cast<float>(I[0]) * (W.a(r, j)[0] * dx) + static_cast<float>(I[1]) * (W.a(r, j)[4] * dx);
        if (W.has_b) acc += W.b[r * nb + j] * X.sum[t * nb + j];
      }
      float& y = Y[t * ldy + r];
      y = acc + (beta != 0.0f ? beta * y : 0.0f);
    }
}

}  // namespace

const char* dot_path_name(DotPath p) {
  switch (p) {
    case DotPath::Scalar: return "scalar";
    case DotPath::Avx2: return "avx2";
    case DotPath::Avx512Vnni: return "avx512-vnni";
  }
  return "?";
}

bool dot_path_supported(DotPath p) {
  switch (p) {
    case DotPath::Scalar: return true;
#if defined(__x86_64__)
    case DotPath::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case DotPath::Avx512Vnni: return quant_dot_simd::avx512_vnni_usable();
#else
    default: return false;
#endif
  }
  return false;
}

DotPath best_dot_path() {
  static const DotPath best = dot_path_supported(DotPath::Avx512Vnni) ? DotPath::Avx512Vnni
                              : dot_path_supported(DotPath::Avx2)     ? DotPath::Avx2
                                                                      : DotPath::Scalar;
  return best;
}

void set_quant_dot(QuantDot d) { g_quant_dot.store(d); }
QuantDot quant_dot() { return g_quant_dot.load(); }
const char* quant_dot_name(QuantDot d) { return d == QuantDot::Int8 ? "int8" : "float"; }
QuantDot parse_quant_dot(const std::string& name) {
  if (name == "float") return QuantDot::Float;
  if (name == "int8") return QuantDot::Int8;
  fail("--dot: expected float or int8, got '", name, "'");
}

bool ggml_int8_dot_supported(GGMLType t) { return unpack_fn(t) != nullptr; }

int ggml_int8_offset(GGMLType t) {
  switch (t) {
    case GGMLType::Q8_0: return 128;
    case GGMLType::Q4_0: return 8;
    case GGMLType::Q5_0: return 16;
    case GGMLType::Q6_K: return 32;
    default: return 0;
  }
}

void quantize_acts(const float* X, int64_t n, int64_t cols, int offset, Q8Acts* out) {
  check(cols % 32 == 0, "quantize_acts: ", cols, " columns is not a multiple of 32");
  const int64_t nb = cols / 32, panels = (n + 3) / 4;
  out->n = n;
  out->nb = nb;
  out->panels.assign(static_cast<size_t>(panels * nb * kActPanelBlock), 0);  // padding tokens stay 0
  out->sum.resize(static_cast<size_t>(n * nb));
#pragma omp parallel for schedule(static) if (n * cols >= 65536)
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < nb; ++j) {
      const float* x = X + t * cols + j * 32;
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      uint8_t* blk = out->panels.data() + ((t / 4) * nb + j) * kActPanelBlock;
      int8_t* q = reinterpret_cast<int8_t*>(blk) + 32 * (t % 4);
      int32_t half[2] = {0, 0};
      for (int i = 0; i < 32; ++i) {
        q[i] = static_cast<int8_t>(std::nearbyint(x[i] * id));
        half[i >> 4] += q[i];
      }
      const int32_t init[8] = {-offset * half[0], 0, 0, 0, -offset * half[1], 0, 0, 0};
      std::memcpy(blk + 128 + 32 * (t % 4), init, sizeof init);
      std::memcpy(blk + 256 + 4 * (t % 4), &d, sizeof d);
      out->sum[static_cast<size_t>(t * nb + j)] = d * static_cast<float>(half[0] + half[1]);
    }
  }
}

void U8Rows::reset(int64_t nrows, int64_t nblocks, int off, bool with_b) {
  rows = nrows;
  nb = nblocks;
  offset = off;
  has_b = with_b;
  const int64_t panel_count = (rows + 3) / 4;
  panels.resize(static_cast<size_t>(panel_count * nb * kWeightPanelBlock));
  b.assign(static_cast<size_t>(rows * nb), 0.0f);
  // Padding rows of the last panel: levels and scales 0 (their products are never stored).
  for (int64_t r = rows; r < panel_count * 4; ++r)
    for (int64_t j = 0; j < nb; ++j) {
      std::memset(q(r, j), 0, 32);
      std::memset(a(r, j), 0, 32);
    }
}

void unpack_ggml_rows(GGMLType t, const uint8_t* data, int64_t rows, int64_t cols, U8Rows* out) {
  const UnpackFn fn = unpack_fn(t);
  check(fn != nullptr, "unpack_ggml_rows: no integer dot path for ", ggml_type_name(t));
  const int64_t bs = ggml_block_size(t);
  check(cols % bs == 0, "unpack_ggml_rows: ", cols, " columns is not a multiple of ", bs);
  const int64_t nb = cols / 32, nblk = cols / bs, per = bs / 32;
  const size_t row_bytes = ggml_row_size(t, cols), blk_bytes = ggml_type_size(t);
  out->reset(rows, nb, ggml_int8_offset(t),
             t == GGMLType::Q4_1 || t == GGMLType::Q5_1 || t == GGMLType::Q4_K || t == GGMLType::Q5_K);
  float bj[8];
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = data + static_cast<size_t>(r) * row_bytes;
    for (int64_t k = 0; k < nblk; ++k) {
      // The `per` 32-blocks of this ggml block: each goes to its own panel block.
      uint8_t q[256];
      float a[64];
      fn(row + k * blk_bytes, Out32{q, a, bj});
      for (int64_t s = 0; s < per; ++s) {
        const int64_t j = k * per + s;
        std::memcpy(out->q(r, j), q + 32 * s, 32);
        std::memcpy(out->a(r, j), a + 8 * s, 32);
        out->b[static_cast<size_t>(r * nb + j)] = bj[s];
      }
    }
  }
}

void int8_matmul(const float* X, int64_t n, int64_t rows, int64_t cols, int offset, float* Y, float beta,
                 const std::function<void(int64_t, int64_t, U8Rows*)>& unpack) {
  thread_local Q8Acts local;  // this thread's; the workers below see it through `acts`
  const Q8Acts& acts = local;
  quantize_acts(X, n, cols, offset, &local);
  const int64_t unpacked_row = cols + cols / 32 * 36;  // q + a[8] + b per block
  const int64_t tile = std::clamp<int64_t>((int64_t{256} << 10) / unpacked_row / 4 * 4, 4, 64);
  const int64_t ntiles = (rows + tile - 1) / tile;
  const DotPath path = best_dot_path();
#pragma omp parallel for schedule(dynamic) if (ntiles > 1 && rows * cols * n >= 262144)
  for (int64_t k = 0; k < ntiles; ++k) {
    thread_local U8Rows w;
    const int64_t r0 = k * tile, m = std::min(tile, rows - r0);
    unpack(r0, m, &w);
    dot_rows(w, acts, Y + r0, rows, beta, path);
  }
}

void dot_rows(const U8Rows& W, const Q8Acts& X, float* Y, int64_t ldy, float beta, DotPath path) {
  check(W.nb == X.nb, "dot_rows: weight rows of ", W.nb, " blocks, activations of ", X.nb);
  if (W.rows == 0 || X.n == 0) return;
  switch (path) {
    case DotPath::Scalar: dot_rows_scalar(W, X, Y, ldy, beta); return;
    case DotPath::Avx2: quant_dot_simd::dot_rows_avx2(W, X, Y, ldy, beta); return;
    case DotPath::Avx512Vnni: quant_dot_simd::dot_rows_vnni(W, X, Y, ldy, beta); return;
  }
}

}  // namespace moetool
