// engine/gpu_ops.cc — building blocks of the CUDA engine's forward pass (engine/gpu_ops.h).
#include "engine/gpu_ops.h"

#include <memory>

#include "engine/rope.h"

namespace moetool {

// inv_freq of rope_table(c, d, len) on the device (uploaded when (d, len) changes); returns
// {half, attention factor}.
std::pair<int64_t, float> device_rope(const ModelConfig& c, int64_t d, int64_t len, GpuScratch& s) {
  if (s.rope_dim != d || s.rope_len != len) {
    const RopeTable rt = rope_table(c, d, len);
    s.inv_freq.upload(rt.inv_freq.data(), rt.inv_freq.size());
    s.rope_dim = d;
    s.rope_len = len;
    s.rope_factor = rt.attention_factor;
    s.rope_half = static_cast<int64_t>(rt.inv_freq.size());
  }
  return {s.rope_half, s.rope_factor};
}

// The bf16 copy of X[elems] in buf when the engine runs in bf16 (one conversion for the GEMMs that
// share an input), else null.
const uint16_t* bf16_input(Precision p, const float* X, int64_t elems, Buffer<uint16_t>& buf) {
  if (p != Precision::BF16) return nullptr;
  buf.resize(static_cast<size_t>(elems));
  cuda::to_bf16(X, buf.get(), elems);
  return buf.get();
}

// Device K/V rows of every layer: [capacity, k_width], [capacity, v_width].
struct GpuKV {
  std::vector<Buffer<float>> k, v;
};

std::pair<float*, float*> device_kv(const ModelConfig& c, KVCache& cache, int64_t l) {
  const int64_t Hq = c.num_heads;
  if (!cache.gpu) cache.gpu = std::make_shared<GpuKV>();
  GpuKV& kv = *std::static_pointer_cast<GpuKV>(cache.gpu);
  if (kv.k.size() < static_cast<size_t>(c.num_layers)) {
    kv.k.resize(static_cast<size_t>(c.num_layers));
    kv.v.resize(static_cast<size_t>(c.num_layers));
  }
  int64_t kw, vw;
  if (c.mla) {
    kw = Hq * (c.mla->qk_nope_head_dim + c.mla->qk_rope_head_dim);
    vw = Hq * c.mla->v_head_dim;
  } else {
    kw = vw = c.num_kv_heads * c.head_dim;
  }
  Buffer<float>& Kb = kv.k[static_cast<size_t>(l)];
  Buffer<float>& Vb = kv.v[static_cast<size_t>(l)];
  if (!Kb.get()) {
    Kb.resize(static_cast<size_t>(cache.capacity * kw));
    Vb.resize(static_cast<size_t>(cache.capacity * vw));
  }
  return {Kb.get(), Vb.get()};
}

// A low-rank W = U·V (+ base): T[n, rank] = X·Vᵀ, Y = T·Uᵀ + beta·Y (+ X·baseᵀ) — in bf16 (T rounded
// to bf16 for the second GEMM, float32 accumulation) or float32, W never formed.
static void matmul_lowrank(const GpuMatrix& W, const float* X, int64_t n, float* Y, GpuScratch& s, float beta,
                           const uint16_t* Xb) {
  if (n == 0) return;
  const int64_t r = W.rank;
  Buffer<float> T(static_cast<size_t>(n * r));
  if (W.bf16_math) {
    if (!Xb) {
      s.xb.resize(static_cast<size_t>(n * W.cols));
      cuda::to_bf16(X, s.xb.get(), n * W.cols);
      Xb = s.xb.get();
    }
    Buffer<uint16_t> Tb(static_cast<size_t>(n * r));
    cuda::gemm_nt_bf16(n, r, W.cols, Xb, W.cols, W.v16.get(), T.get(), r);
    cuda::to_bf16(T.get(), Tb.get(), n * r);
    cuda::gemm_nt_bf16(n, W.rows, r, Tb.get(), r, W.u16.get(), Y, W.rows, beta);
    if (W.base16.get()) cuda::gemm_nt_bf16(n, W.rows, W.cols, Xb, W.cols, W.base16.get(), Y, W.rows, 1.0f);
  } else {
    cuda::gemm_nt_f32(n, r, W.cols, X, W.cols, W.v32.get(), T.get(), r);
    cuda::gemm_nt_f32(n, W.rows, r, T.get(), r, W.u32.get(), Y, W.rows, beta);
    if (W.base32.get()) cuda::gemm_nt_f32(n, W.rows, W.cols, X, W.cols, W.base32.get(), Y, W.rows, 1.0f);
  }
}

// Y[n, rows] = X[n, cols] · Wᵀ + beta · Y. Xb: X already in bf16 (shared by several GEMMs), or null.
void matmul(const GpuMatrix& W, const float* X, int64_t n, float* Y, GpuScratch& s, float beta, const uint16_t* Xb) {
  if (W.rank > 0) {
    matmul_lowrank(W, X, n, Y, s, beta, Xb);
    return;
  }
  const bool packed = W.packing != GpuMatrix::Packing::None;
  if (packed && n <= cuda::kQuantGemvMaxRows) {  // a few rows (decoding): straight from the stored form
    const float* Xf = Xb ? nullptr : X;
    if (W.packing == GpuMatrix::Packing::Blocks)
      cuda::gemv_blocks(W.block_type, W.blocks.get(), W.rows, W.cols, Xf, Xb, n, Y, beta, W.bf16_math);
    else
      cuda::gemv_gptq_int4(W.qweight.get(), W.qzeros.get(), W.scales.get(), W.g_idx.get(), W.cols, W.rows, Xf, Xb, n, Y,
                           beta, W.bf16_math);
    return;
  }
  // A weight kept quantized is decoded once into a scratch buffer for the GEMM.
  if (W.bf16_math) {
    const uint16_t* w = W.w16();
    if (packed) {
      s.wq16.resize(static_cast<size_t>(W.rows * W.cols));
      decode_packed(W, s.wq16.get());
      w = s.wq16.get();
    }
    if (!Xb) {
      s.xb.resize(static_cast<size_t>(n * W.cols));
      cuda::to_bf16(X, s.xb.get(), n * W.cols);
      Xb = s.xb.get();
    }
    cuda::gemm_nt_bf16(n, W.rows, W.cols, Xb, W.cols, w, Y, W.rows, beta);
  } else {
    const float* w = W.f32.get();
    if (packed) {
      s.wq32.resize(static_cast<size_t>(W.rows * W.cols));
      decode_packed(W, s.wq32.get());
      w = s.wq32.get();
    }
    cuda::gemm_nt_f32(n, W.rows, W.cols, X, W.cols, w, Y, W.rows, beta);
  }
}

}  // namespace moetool
