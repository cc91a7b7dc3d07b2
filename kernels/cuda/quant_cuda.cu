// kernels/cuda/quant_cuda.cu — products with quantized weights for a few rows (decoding steps), the
// weights decoded in registers as they are read (kernels/backend_cuda.h gemv_blocks, gemv_gptq_int4):
// 0.56 bytes per Q4 weight cross the memory bus instead of 2 for bf16, where a decoding step is bound
// by exactly that.
#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"

namespace moetool::cuda {

namespace {

constexpr int kMaxN = static_cast<int>(kQuantGemvMaxRows);

__device__ __forceinline__ float round16(float x) { return shared::bf16_to_float(shared::float_to_bf16(x)); }

// x(t, c): element c of input row t as the product uses it.
__device__ __forceinline__ float x_at(const float* X, const uint16_t* Xb, int64_t C, int t, int64_t c, bool bf16) {
  if (Xb) return shared::bf16_to_float(Xb[t * C + c]);
  const float v = X[t * C + c];
  return bf16 ? round16(v) : v;
}

// One warp per output row r: lanes walk the row's elements, decode each from its block and
// accumulate against the n input rows; a warp reduction per input row.
template <int kBytes, int kElems, float (*Decode)(const uint8_t*, int)>
__global__ void k_gemv_blocks(const uint8_t* blocks, int64_t R, int64_t C, const float* X, const uint16_t* Xb,
                              int n, float* Y, float beta, bool bf16) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (r >= R) return;  // whole warps leave together
  float acc[kMaxN];
#pragma unroll
  for (int t = 0; t < kMaxN; ++t) acc[t] = 0.0f;
  const uint8_t* row = blocks + r * (C / kElems) * kBytes;
  for (int64_t c = lane; c < C; c += 32) {
    float w = Decode(row + (c / kElems) * kBytes, static_cast<int>(c % kElems));
    if (bf16) w = round16(w);
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

__device__ float dq8_0(const uint8_t* b, int j) { return shared::q8_0_value(b, j); }
__device__ float dq4_0(const uint8_t* b, int j) { return shared::q4_0_value(b, j); }
__device__ float dq4_k(const uint8_t* b, int j) { return shared::q4_k_value(b, j); }

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
    if (bf16) w = round16(w);
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

void check_gemv(int64_t n, const float* X, const uint16_t* Xb, const char* what) {
  check(n >= 0 && n <= kQuantGemvMaxRows, "CUDA ", what, ": ", n, " rows (at most ", kQuantGemvMaxRows, ")");
  check((X == nullptr) != (Xb == nullptr), "CUDA ", what, ": give the input as float32 or as bf16");
}

}  // namespace

void gemv_blocks(BlockType t, const uint8_t* blocks, int64_t R, int64_t C, const float* X, const uint16_t* Xb,
                 int64_t n, float* Y, float beta, bool bf16) {
  check_gemv(n, X, Xb, "gemv_blocks");
  if (n == 0 || R == 0) return;
  constexpr int kWarps = 8;
  const unsigned g = static_cast<unsigned>((R + kWarps - 1) / kWarps);
  cudaStream_t s = context().stream;
  const int ni = static_cast<int>(n);
  switch (t) {
    case BlockType::Q8_0:
      check(C % shared::kQ8_0Elems == 0, "CUDA gemv Q8_0: ", C, " columns");
      k_gemv_blocks<shared::kQ8_0Bytes, shared::kQ8_0Elems, dq8_0><<<g, kWarps * 32, 0, s>>>(blocks, R, C, X, Xb, ni, Y,
                                                                                            beta, bf16);
      break;
    case BlockType::Q4_0:
      check(C % shared::kQ4_0Elems == 0, "CUDA gemv Q4_0: ", C, " columns");
      k_gemv_blocks<shared::kQ4_0Bytes, shared::kQ4_0Elems, dq4_0><<<g, kWarps * 32, 0, s>>>(blocks, R, C, X, Xb, ni, Y,
                                                                                            beta, bf16);
      break;
    case BlockType::Q4_K:
      check(C % shared::kQ4_KElems == 0, "CUDA gemv Q4_K: ", C, " columns");
      k_gemv_blocks<shared::kQ4_KBytes, shared::kQ4_KElems, dq4_k><<<g, kWarps * 32, 0, s>>>(blocks, R, C, X, Xb, ni, Y,
                                                                                            beta, bf16);
      break;
  }
  check_launch("gemv_blocks");
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
