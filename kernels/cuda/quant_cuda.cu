// kernels/cuda/quant_cuda.cu — quantized weights on the GPU (kernels/backend_cuda.h): ggml blocks
// (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and GPTQ int4 dequantized to float32 or bf16, and
// products for a few rows (decoding steps) straight from the stored form, decoded in registers as it
// is read: 0.56 bytes per Q4 weight cross the memory bus instead of 2 for bf16, where a decoding
// step is bound by exactly that. Every element comes from ggml::block_value of formats/ggml_blocks.h,
// the decoder the CPU dequantizers run too.
#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"

namespace moetool::cuda {

namespace {

// f(B{}) for the block type t (a block struct of formats/ggml_blocks.h): one switch for every kernel
// over ggml blocks.
template <class F>
void with_block(BlockType t, F&& f) {
  switch (t) {
    case BlockType::Q8_0: return f(ggml::BlockQ8_0{});
    case BlockType::Q4_0: return f(ggml::BlockQ4_0{});
    case BlockType::Q4_1: return f(ggml::BlockQ4_1{});
    case BlockType::Q5_0: return f(ggml::BlockQ5_0{});
    case BlockType::Q5_1: return f(ggml::BlockQ5_1{});
    case BlockType::Q4_K: return f(ggml::BlockQ4_K{});
    case BlockType::Q5_K: return f(ggml::BlockQ5_K{});
    case BlockType::Q6_K: return f(ggml::BlockQ6_K{});
  }
  fail("CUDA: unknown block type ", static_cast<int>(t));
}

// A float32 value stored as float32, or rounded to bf16.
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(uint16_t* p, float v) { *p = shared::float_to_bf16(v); }

template <class B, class T>
__global__ void k_dequant(const uint8_t* blocks, int64_t rows, int64_t cols, T* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  store(out + i, ggml::block_value<B>(blocks + (r * (cols / B::kElems) + c / B::kElems) * B::kBytes,
                                      static_cast<int>(c % B::kElems)));
}

template <class T>
__global__ void k_gptq(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in, int64_t outf, T* out) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= in * outf) return;
  const int64_t o = idx / in, i = idx % in;
  store(out + idx, shared::gptq_int4_value(qweight, qzeros, scales, g_idx, outf, i, o));
}

constexpr int kMaxN = static_cast<int>(kQuantGemvMaxRows);

// x(t, c): element c of input row t as the product uses it.
__device__ __forceinline__ float x_at(const float* X, const uint16_t* Xb, int64_t C, int t, int64_t c, bool bf16) {
  if (Xb) return shared::bf16_to_float(Xb[t * C + c]);
  const float v = X[t * C + c];
  return bf16 ? shared::round_bf16(v) : v;
}

// One warp per output row r: lanes walk the row's elements, decode each from its block and
// accumulate against the n input rows; a warp reduction per input row.
template <class B>
__global__ void k_gemv_blocks(const uint8_t* blocks, int64_t R, int64_t C, const float* X, const uint16_t* Xb, int n,
                              float* Y, float beta, bool bf16) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= R) return;  // whole warps leave together
  float acc[kMaxN];
#pragma unroll
  for (int t = 0; t < kMaxN; ++t) acc[t] = 0.0f;
  const uint8_t* row = blocks + r * (C / B::kElems) * B::kBytes;
  for (int64_t c = lane; c < C; c += 32) {
    float w = ggml::block_value<B>(row + (c / B::kElems) * B::kBytes, static_cast<int>(c % B::kElems));
    if (bf16) w = shared::round_bf16(w);
#pragma unroll
    for (int t = 0; t < kMaxN; ++t)
      if (t < n) acc[t] += w * x_at(X, Xb, C, t, c, bf16);
  }
#pragma unroll
  for (int t = 0; t < kMaxN; ++t) {
    if (t >= n) break;
    float v = acc[t];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) Y[t * R + r] = beta == 0.0f ? v : v + beta * Y[t * R + r];
  }
}

// One thread per output o (qweight's layout keeps consecutive outputs adjacent: coalesced loads);
// each walks the inputs i.
__global__ void k_gemv_gptq(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                            int64_t C, int64_t R, const float* X, const uint16_t* Xb, int n, float* Y, float beta,
                            bool bf16) {
  const int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (o >= R) return;
  float acc[kMaxN];
#pragma unroll
  for (int t = 0; t < kMaxN; ++t) acc[t] = 0.0f;
  for (int64_t i = 0; i < C; ++i) {
    float w = shared::gptq_int4_value(qweight, qzeros, scales, g_idx, R, i, o);
    if (bf16) w = shared::round_bf16(w);
#pragma unroll
    for (int t = 0; t < kMaxN; ++t)
      if (t < n) acc[t] += w * x_at(X, Xb, C, t, i, bf16);
  }
#pragma unroll
  for (int t = 0; t < kMaxN; ++t) {
    if (t >= n) break;
    Y[t * R + o] = beta == 0.0f ? acc[t] : acc[t] + beta * Y[t * R + o];
  }
}

template <class T>
void dequant_blocks_to(BlockType t, const uint8_t* blocks, int64_t rows, int64_t cols, T* out) {
  with_block(t, [&](auto b) {
    using B = decltype(b);
    check(cols % B::kElems == 0, "CUDA dequant ", B::kName, ": ", cols, " columns are not whole blocks of ", B::kElems);
    if (rows * cols == 0) return;
    k_dequant<B><<<blocks_for(rows * cols), kThreads, 0, context().stream>>>(blocks, rows, cols, out);
    check_launch("dequant_blocks");
  });
}

template <class T>
void dequant_gptq_to(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                     int64_t in_features, int64_t out_features, T* out) {
  check(in_features % 8 == 0 && out_features % 8 == 0, "CUDA GPTQ int4: ", out_features, "×", in_features,
        " is not a multiple of 8");
  const int64_t n = in_features * out_features;
  if (n == 0) return;
  k_gptq<<<blocks_for(n), kThreads, 0, context().stream>>>(qweight, qzeros, scales, g_idx, in_features, out_features,
                                                           out);
  check_launch("dequant_gptq_int4");
}

void check_gemv(int64_t n, const float* X, const uint16_t* Xb, const char* what) {
  check(n >= 0 && n <= kQuantGemvMaxRows, "CUDA ", what, ": ", n, " rows (at most ", kQuantGemvMaxRows, ")");
  check((X == nullptr) != (Xb == nullptr), "CUDA ", what, ": give the input as float32 or as bf16");
}

}  // namespace

void dequant_blocks(BlockType t, const uint8_t* blocks, int64_t rows, int64_t cols, float* out) {
  dequant_blocks_to(t, blocks, rows, cols, out);
}
void dequant_blocks(BlockType t, const uint8_t* blocks, int64_t rows, int64_t cols, uint16_t* out) {
  dequant_blocks_to(t, blocks, rows, cols, out);
}
void dequant_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in_features, int64_t out_features, float* out) {
  dequant_gptq_to(qweight, qzeros, scales, g_idx, in_features, out_features, out);
}
void dequant_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in_features, int64_t out_features, uint16_t* out) {
  dequant_gptq_to(qweight, qzeros, scales, g_idx, in_features, out_features, out);
}

void gemv_blocks(BlockType t, const uint8_t* blocks, int64_t R, int64_t C, const float* X, const uint16_t* Xb,
                 int64_t n, float* Y, float beta, bool bf16) {
  check_gemv(n, X, Xb, "gemv_blocks");
  with_block(t, [&](auto b) {
    using B = decltype(b);
    check(C % B::kElems == 0, "CUDA gemv ", B::kName, ": ", C, " columns are not whole blocks of ", B::kElems);
    if (n == 0 || R == 0) return;
    constexpr int kWarps = 8;
    k_gemv_blocks<B><<<static_cast<unsigned>((R + kWarps - 1) / kWarps), kWarps * 32, 0, context().stream>>>(
        blocks, R, C, X, Xb, static_cast<int>(n), Y, beta, bf16);
    check_launch("gemv_blocks");
  });
}

void gemv_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx, int64_t C,
                    int64_t R, const float* X, const uint16_t* Xb, int64_t n, float* Y, float beta, bool bf16) {
  check_gemv(n, X, Xb, "gemv_gptq_int4");
  check(C % 8 == 0 && R % 8 == 0, "CUDA gemv GPTQ int4: ", R, "×", C, " is not a multiple of 8");
  if (n == 0 || R == 0) return;
  k_gemv_gptq<<<blocks_for(R, 128), 128, 0, context().stream>>>(qweight, qzeros, scales, g_idx, C, R, X, Xb,
                                                                static_cast<int>(n), Y, beta, bf16);
  check_launch("gemv_gptq_int4");
}

}  // namespace moetool::cuda
