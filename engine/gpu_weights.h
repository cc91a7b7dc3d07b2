// engine/gpu_weights.h — the CUDA engine's weights on the GPU (internal to engine/engine_cuda.cc and
// engine/gpu_weights.cc): a matrix dense in float32 or bf16, a view into a layer's stacked experts,
// or quantized as stored and decoded per use; one layer's weights; their upload (quantized storage
// the GPU decodes crosses as stored bytes) and sizes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend_cuda.h"
#include "engine/engine_cuda.h"

namespace moetool {

using cuda::Buffer;

// A weight on the GPU: float32 W [rows, cols], or bf16 (float32 accumulation) — owned, or a view
// into a layer's stacked experts (GpuLayer::eg_all …) — or kept quantized (ggml blocks or GPTQ int4
// tensors, as stored) and decoded per use, or low-rank (rank > 0: its factors, W never formed).
struct GpuMatrix {
  int64_t rows = 0, cols = 0;
  bool bf16_math = false;  // multiplied in bf16 (weights and inputs rounded to bf16)
  Buffer<float> f32;
  Buffer<uint16_t> bf16;
  const uint16_t* bf16_view = nullptr;
  // Quantized storage (Packing::None when the weights are dense above).
  enum class Packing { None, Blocks, Gptq } packing = Packing::None;
  cuda::BlockType block_type = cuda::BlockType::Q8_0;
  Buffer<uint8_t> blocks;
  Buffer<int32_t> qweight, qzeros, g_idx;
  Buffer<float> scales;
  // Low-rank storage (kernels/linear_lowrank.h), when rank > 0: U [rows, rank], V [rank, cols] and
  // base [rows, cols] (empty when none), float32 or — bf16_math — bf16; multiplied as (X·Vᵀ)·Uᵀ
  // (+ X·baseᵀ), two (three) GEMMs. The dense buffers above stay empty.
  int64_t rank = 0;
  Buffer<float> u32, v32, base32;
  Buffer<uint16_t> u16, v16, base16;
  const uint16_t* w16() const { return bf16.get() ? bf16.get() : bf16_view; }
  uint64_t bytes() const {  // owned bytes
    return f32.size() * 4 + bf16.size() * 2 + blocks.size() + (qweight.size() + qzeros.size() + g_idx.size()) * 4 +
           scales.size() * 4 + (u32.size() + v32.size() + base32.size()) * 4 +
           (u16.size() + v16.size() + base16.size()) * 2;
  }
};

struct GpuLayer {
  Buffer<float> attn_norm, ffn_norm, q_bias, k_bias, v_bias, o_bias, q_norm, k_norm, qa_norm, kva_norm;
  std::unique_ptr<GpuMatrix> q, k, v, o, qa, qb, kva, kvb;
  bool moe = false;
  std::unique_ptr<GpuMatrix> gate, up, down, router, sg, su, sd, shared_gate;
  Buffer<float> gate_bias, up_bias, down_bias, router_bias;
  std::vector<std::unique_ptr<GpuMatrix>> eg, eu, ed;
  // bf16 experts of one shape stacked [E, rows, cols] (eg/eu/ed are views into them): the batched
  // expert GEMMs of the fused MoE path. Empty otherwise.
  Buffer<uint16_t> eg_all, eu_all, ed_all;
  uint64_t bytes = 0;
};

// Matrices uploaded so far: decoded on the GPU at upload, and kept quantized there.
struct UploadCounts {
  int64_t decoded = 0, packed = 0;
};

// m on the GPU in precision p (null for a null m). Quantized storage the GPU decodes (ggml blocks,
// GPTQ int4) crosses as its stored bytes and is dequantized there — or, keep_packed, kept as stored
// and decoded per use; low-rank storage crosses as its factors (rounded to bf16 in bf16) and is
// multiplied through them; any other storage is decoded on the host (WeightMatrix::to_dense), so
// every path multiplies the weights the CPU engine does.
std::unique_ptr<GpuMatrix> upload_matrix(const Mat& m, Precision p, UploadCounts* counts = nullptr,
                                         bool keep_packed = false);
Buffer<float> upload_vec(const std::vector<float>& v);
// The layer's weights on the GPU; keep_packed keeps quantized matrices in their stored form. bf16
// experts of one shape are stacked per projection (GpuLayer::eg_all …).
std::shared_ptr<GpuLayer> upload_layer(const LayerWeights& lw, Precision p, bool keep_packed, UploadCounts* counts);
// Bytes the layer's matrices take on the GPU in precision p, decoded or (packed) kept as stored.
uint64_t layer_gpu_bytes(const LayerWeights& lw, Precision p, bool packed);
// W (kept quantized) decoded into out[rows, cols], float32 or bf16.
void decode_packed(const GpuMatrix& W, float* out);
void decode_packed(const GpuMatrix& W, uint16_t* out);

}  // namespace moetool
