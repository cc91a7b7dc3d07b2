// kernels/ops.h — the compute operations of the inference engine on float32 row-major buffers
// (CPU implementations in kernels/cpu_ops.cc; the CUDA backend mirrors these signatures).
// Shapes are given in comments as [rows, cols]; n = tokens, H = heads, d = head dim.
#pragma once

#include <cstdint>
#include <vector>

namespace moetool::ops {

// C[M, N] = alpha · A[M, K] · B[N, K]ᵀ + beta · C  (leading dimensions lda, ldb, ldc).
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc, float alpha = 1.0f, float beta = 0.0f);
// C[M, N] = alpha · A[M, K] · B[K, N] + beta · C.
void gemm_nn(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
             int64_t ldc, float alpha = 1.0f, float beta = 0.0f);

// out[n, d] = x / sqrt(mean(x²) + eps) · w  (per row; out may alias x).
void rmsnorm(const float* x, const float* w, float* out, int64_t n, int64_t d, float eps);

// Rotary embedding in the "rotate half" layout of HF transformers on x[n, H, d] (row stride
// `stride` floats between tokens): for i < rot/2, (x_i, x_{i+rot/2}) rotate by pos·inv_freq[i];
// dims ≥ rot are untouched. cos/sin are multiplied by `scale` (yarn's attention factor).
void rope(float* x, int64_t n, int64_t H, int64_t d, int64_t stride, const int64_t* pos,
          const std::vector<float>& inv_freq, float scale);

// Causal multi-head attention with grouped KV heads.
// q[n, Hq·dk] (row stride q_stride) for query positions pos0 .. pos0+n-1; k[T, Hkv·dk] and v[T, Hkv·dv]
// (row strides k_stride, v_stride) hold positions 0 .. T-1 with T = pos0 + n. Query head h attends
// with KV head h / (Hq / Hkv). window > 0 limits attention to the last `window` positions
// (key j visible from query i iff i - window < j ≤ i). out[n, Hq·dv].
void attention(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
               float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk, int64_t dv, float scale,
               int64_t window);

// The same as the CUDA engine computes it in bf16 (kernels/cuda/attention_cuda.cu, tensor-core path —
// use where shared::attention_bf16_tiles holds): q, k, v rounded to bf16; per query row, keys in
// tiles of shared::kAttnKeyTile from position 0, scores s = (q·k)·scale·log2 e with a running
// maximum m over the tiles so far, p = bf16(2^(s − m)), normaliser l and output o rescaled by
// 2^(m_old − m_new) at each tile, out = o / l. Float32 throughout, so the GPU differs only in
// summation order.
void attention_bf16(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v,
                    int64_t v_stride, float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk,
                    int64_t dv, float scale, int64_t window);

// out[i] = silu(g[i]) · u[i] for n elements.
void silu_mul(const float* g, const float* u, float* out, int64_t n);
// In-place row softmax of x[n, d].
void softmax_rows(float* x, int64_t n, int64_t d);
// y[i] += a · x[i].
void axpy(int64_t n, float a, const float* x, float* y);

}  // namespace moetool::ops
