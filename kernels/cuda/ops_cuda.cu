// kernels/cuda/ops_cuda.cu — the CUDA backend (kernels/backend_cuda.h): context, memory, cuBLAS
// GEMMs and the engine's kernels. Per-element logic (block decoders, routing, masking, online
// softmax) comes from kernels/backend_shared.h, which the CPU tests check against the CPU code.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>

#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"

namespace moetool::cuda {

namespace {

constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}
void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail("CUDA kernel ", what, ": ", cudaGetErrorString(e));
}

}  // namespace

Context& context() {
  static Context* ctx = [] {
    auto* c = new Context;
    MOETOOL_CUDA_CHECK(cudaSetDevice(0));
    MOETOOL_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    MOETOOL_CUBLAS_CHECK(cublasCreate(&c->blas));
    MOETOOL_CUBLAS_CHECK(cublasSetStream(c->blas, c->stream));
    // Pure float32 GEMMs: no TF32 (the f32 tolerance against the CPU engine is NMSE ≤ 1e-6).
    MOETOOL_CUBLAS_CHECK(cublasSetMathMode(c->blas, CUBLAS_PEDANTIC_MATH));
    MOETOOL_CUSOLVER_CHECK(cusolverDnCreate(&c->solver));
    MOETOOL_CUSOLVER_CHECK(cusolverDnSetStream(c->solver, c->stream));
    return c;
  }();
  return *ctx;
}

void init() { (void)context(); }

void* alloc(size_t bytes) {
  init();
  void* p = nullptr;
  if (bytes == 0) return nullptr;
  const cudaError_t e = cudaMallocAsync(&p, bytes, context().stream);
  if (e != cudaSuccess)
    fail("CUDA: cannot allocate ", bytes, " bytes on the GPU (", cudaGetErrorString(e), "; ", free_memory(),
         " bytes free)");
  return p;
}

void release(void* p) noexcept {
  if (p) cudaFreeAsync(p, context().stream);
}

void upload(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  MOETOOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, context().stream));
  // Pageable host memory: the copy is staged, but the source must stay valid until it is done.
  MOETOOL_CUDA_CHECK(cudaStreamSynchronize(context().stream));
}

void download(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  MOETOOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, context().stream));
  MOETOOL_CUDA_CHECK(cudaStreamSynchronize(context().stream));
}

void copy(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  MOETOOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, context().stream));
}

void copy_2d(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t rows, int64_t width) {
  if (rows == 0 || width == 0) return;
  MOETOOL_CUDA_CHECK(cudaMemcpy2DAsync(dst, static_cast<size_t>(dst_stride) * 4, src, static_cast<size_t>(src_stride) * 4,
                                       static_cast<size_t>(width) * 4, static_cast<size_t>(rows),
                                       cudaMemcpyDeviceToDevice, context().stream));
}

void zero(void* p, size_t bytes) {
  if (bytes) MOETOOL_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, context().stream));
}

void synchronize() { MOETOOL_CUDA_CHECK(cudaStreamSynchronize(context().stream)); }

size_t free_memory() {
  init();
  synchronize();
  size_t f = 0, t = 0;
  MOETOOL_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return f;
}

size_t total_memory() {
  init();
  size_t f = 0, t = 0;
  MOETOOL_CUDA_CHECK(cudaMemGetInfo(&f, &t));
  return t;
}

// ---- GEMM ----
// Row-major Y[n, R] = X[n, C]·Wᵀ is, column-major, Yᵀ[R, n] = op_T(W as [C, R]) · Xᵀ[C, n].

void gemm_nt_f32(int64_t n, int64_t R, int64_t C, const float* X, int64_t ldx, const float* W, float* Y, int64_t ldy,
                 float beta) {
  if (n == 0 || R == 0) return;
  const float alpha = 1.0f;
  MOETOOL_CUBLAS_CHECK(cublasSgemm(context().blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(R), static_cast<int>(n),
                                   static_cast<int>(C), &alpha, W, static_cast<int>(C), X, static_cast<int>(ldx), &beta, Y,
                                   static_cast<int>(ldy)));
}

void gemm_nt_bf16(int64_t n, int64_t R, int64_t C, const uint16_t* X, int64_t ldx, const uint16_t* W, float* Y,
                  int64_t ldy, float beta) {
  if (n == 0 || R == 0) return;
  const float alpha = 1.0f;
  MOETOOL_CUBLAS_CHECK(cublasGemmEx(context().blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(R), static_cast<int>(n),
                                    static_cast<int>(C), &alpha, W, CUDA_R_16BF, static_cast<int>(C), X, CUDA_R_16BF,
                                    static_cast<int>(ldx), &beta, Y, CUDA_R_32F, static_cast<int>(ldy),
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void gemm_cm_f32(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float* C, int64_t ldc, float alpha, float beta) {
  MOETOOL_CUBLAS_CHECK(cublasSgemm(context().blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                   static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha, A,
                                   static_cast<int>(lda), B, static_cast<int>(ldb), &beta, C, static_cast<int>(ldc)));
}

namespace {

__global__ void k_to_bf16(const float* x, uint16_t* y, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = shared::float_to_bf16(x[i]);
}

// One block per row; float32 sum of squares reduced in double per thread, then across the block.
__global__ void k_rmsnorm(const float* x, const float* w, float* out, int64_t d, float eps) {
  const float* xr = x + blockIdx.x * d;
  float* orow = out + blockIdx.x * d;
  double ss = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) ss += static_cast<double>(xr[j]) * xr[j];
  __shared__ double part[32];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
  __syncthreads();
  if (threadIdx.x < 32) {
    double v = threadIdx.x < (blockDim.x >> 5) ? part[threadIdx.x] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const float r = 1.0f / sqrtf(static_cast<float>(part[0] / static_cast<double>(d)) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) orow[j] = w[j] * (xr[j] * r);
}

// Thread per (row, head, i < half).
__global__ void k_rope(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride,
                       int64_t pos0, const float* inv_freq, int64_t half, float scale) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n * H * half) return;
  const int64_t i = idx % half, h = (idx / half) % H, t = idx / (half * H);
  // Angle in float32 like transformers (and kernels/cpu_ops.cc); precise sincos.
  const float ang = static_cast<float>(pos0 + t) * inv_freq[i];
  float s, c;
  sincosf(ang, &s, &c);
  c *= scale;
  s *= scale;
  float* v = x + t * stride + h * head_stride + offset;
  const float a = v[i], b = v[i + half];
  v[i] = a * c - b * s;
  v[i + half] = b * c + a * s;
}

// Thread per (row, head): permute d values from interleaved pairs to rotate-half order.
__global__ void k_deinterleave(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride,
                               int64_t d) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= n * H) return;
  float* p = x + (idx / H) * stride + (idx % H) * head_stride + offset;
  float tmp[512];
  for (int64_t i = 0; i < d; ++i) tmp[i] = p[i];
  for (int64_t i = 0; i < d / 2; ++i) {
    p[i] = tmp[2 * i];
    p[i + d / 2] = tmp[2 * i + 1];
  }
}

// Attention: a block of kRows warps handles kRows consecutive query rows of one head. Keys come in
// tiles of 32 (one per lane) staged in shared memory; each warp keeps an online-softmax state and
// an output accumulator of up to 8 dims per lane (dv ≤ 256).
constexpr int kRows = 8, kTile = 32, kMaxD = 256;

__global__ void k_attention(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v,
                            int64_t v_stride, float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk,
                            int64_t dv, float scale, int64_t window) {
  extern __shared__ float smem[];
  float* Ks = smem;                      // [kTile, dk + 1]
  float* Vs = Ks + kTile * (dk + 1);     // [kTile, dv]
  float* Qs = Vs + kTile * dv;           // [kRows, dk]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t h = blockIdx.y, kh = h / (Hq / Hkv);
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int64_t rows = n - r0 < kRows ? n - r0 : kRows;
  const int64_t row = r0 + warp;
  const bool active = warp < rows;
  const int64_t qpos = pos0 + row;
  for (int64_t e = lane; e < dk; e += 32) Qs[warp * dk + e] = active ? q[row * q_stride + h * dk + e] : 0.0f;
  int64_t kb, ke;
  shared::key_range(pos0 + r0, pos0 + r0 + rows - 1, window, &kb, &ke);
  shared::OnlineSoftmax st;
  float acc[kMaxD / 32];
#pragma unroll
  for (int c = 0; c < kMaxD / 32; ++c) acc[c] = 0.0f;
  for (int64_t t0 = kb; t0 < ke; t0 += kTile) {
    const int64_t tn = ke - t0 < kTile ? ke - t0 : kTile;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < tn * dk; i += blockDim.x) {
      const int64_t j = i / dk, e = i % dk;
      Ks[j * (dk + 1) + e] = k[(t0 + j) * k_stride + kh * dk + e];
    }
    for (int64_t i = threadIdx.x; i < tn * dv; i += blockDim.x) {
      const int64_t j = i / dv, e = i % dv;
      Vs[j * dv + e] = v[(t0 + j) * v_stride + kh * dv + e];
    }
    __syncthreads();
    if (!active) continue;
    float s = -INFINITY;
    if (lane < tn && shared::key_visible(qpos, t0 + lane, window)) {
      const float* kr = Ks + lane * (dk + 1);
      const float* qr = Qs + warp * dk;
      float a = 0.0f;
      for (int64_t e = 0; e < dk; ++e) a = fmaf(qr[e], kr[e], a);
      s = a * scale;
    }
    float mx = s;
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float alpha = st.rescale(mx);
    const float p = s == -INFINITY ? 0.0f : shared::hd_exp(s - st.m);
    float ps = p;
    for (int o = 16; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
    st.l += ps;
#pragma unroll
    for (int c = 0; c < kMaxD / 32; ++c) acc[c] *= alpha;
    for (int j = 0; j < tn; ++j) {
      const float pj = __shfl_sync(0xffffffffu, p, j);
      if (pj == 0.0f) continue;
#pragma unroll
      for (int c = 0; c < kMaxD / 32; ++c) {
        const int64_t e = lane + 32 * c;
        if (e < dv) acc[c] = fmaf(pj, Vs[j * dv + e], acc[c]);
      }
    }
  }
  if (!active) return;
  const float inv = 1.0f / st.l;
#pragma unroll
  for (int c = 0; c < kMaxD / 32; ++c) {
    const int64_t e = lane + 32 * c;
    if (e < dv) out[row * Hq * dv + h * dv + e] = acc[c] * inv;
  }
}

__global__ void k_silu_mul(const float* g, const float* u, float* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void k_add_bias(float* y, const float* b, int64_t n, int64_t d) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n * d) y[i] += b[i % d];
}

__global__ void k_add(float* y, const float* x, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += x[i];
}

__global__ void k_clamp(float* x, int64_t n, float c) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = fminf(fmaxf(x[i], -c), c);
}

__global__ void k_gated_add(float* out, const float* S, const float* gate, int64_t n, int64_t d) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * d) return;
  const float g = gate ? 1.0f / (1.0f + expf(-gate[i / d])) : 1.0f;
  out[i] += g * S[i];
}

__global__ void k_route(shared::RouteParams p, const float* logits, const float* bias, int64_t n, float* scratch,
                        int32_t* sel, float* w) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n) return;
  const int64_t E = p.num_experts;
  shared::route_token(p, logits + t * E, bias, scratch + 2 * t * E, scratch + (2 * t + 1) * E, sel + t * p.top_k,
                      w + t * p.top_k);
}

__global__ void k_gather(const float* x, const int32_t* idx, int64_t m, int64_t d, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < m * d) out[i] = x[static_cast<int64_t>(idx[i / d]) * d + i % d];
}

__global__ void k_scatter_add(const float* y, const int32_t* idx, const float* w, int64_t m, int64_t d, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < m * d) out[static_cast<int64_t>(idx[i / d]) * d + i % d] += w[i / d] * y[i];
}

template <int kBytes, int kElems, float (*Decode)(const uint8_t*, int)>
__global__ void k_dequant(const uint8_t* blocks, int64_t rows, int64_t cols, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  const uint8_t* blk = blocks + (r * (cols / kElems) + c / kElems) * kBytes;
  out[i] = Decode(blk, static_cast<int>(c % kElems));
}

__device__ float dec_q8_0(const uint8_t* b, int j) { return shared::q8_0_value(b, j); }
__device__ float dec_q4_0(const uint8_t* b, int j) { return shared::q4_0_value(b, j); }
__device__ float dec_q4_k(const uint8_t* b, int j) { return shared::q4_k_value(b, j); }

__global__ void k_gptq(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in, int64_t outf, float* out) {
  const int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (idx >= in * outf) return;
  const int64_t o = idx / in, i = idx % in;
  out[idx] = shared::gptq_int4_value(qweight, qzeros, scales, g_idx, outf, i, o);
}

}  // namespace

void to_bf16(const float* x, uint16_t* y, int64_t n) {
  if (n == 0) return;
  k_to_bf16<<<blocks_for(n), kThreads, 0, context().stream>>>(x, y, n);
  check_launch("to_bf16");
}

void rmsnorm(const float* x, const float* w, float* out, int64_t n, int64_t d, float eps) {
  if (n == 0) return;
  k_rmsnorm<<<static_cast<unsigned>(n), 256, 0, context().stream>>>(x, w, out, d, eps);
  check_launch("rmsnorm");
}

void rope(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride, int64_t pos0,
          const float* inv_freq, int64_t half, float scale) {
  const int64_t total = n * H * half;
  if (total == 0) return;
  k_rope<<<blocks_for(total), kThreads, 0, context().stream>>>(x, n, H, head_stride, offset, stride, pos0, inv_freq,
                                                               half, scale);
  check_launch("rope");
}

void deinterleave(float* x, int64_t n, int64_t H, int64_t head_stride, int64_t offset, int64_t stride, int64_t d) {
  check(d <= 512, "CUDA deinterleave: rope dim ", d, " exceeds 512");
  if (n * H == 0) return;
  k_deinterleave<<<blocks_for(n * H), kThreads, 0, context().stream>>>(x, n, H, head_stride, offset, stride, d);
  check_launch("deinterleave");
}

void attention(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
               float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk, int64_t dv, float scale,
               int64_t window) {
  check(dk <= kMaxD && dv <= kMaxD, "CUDA attention: head dims ", dk, "/", dv, " exceed ", kMaxD);
  check(Hkv > 0 && Hq % Hkv == 0, "CUDA attention: ", Hq, " query heads are not a multiple of ", Hkv, " KV heads");
  if (n == 0) return;
  const size_t smem = (static_cast<size_t>(kTile) * (dk + 1 + dv) + static_cast<size_t>(kRows) * dk) * sizeof(float);
  static bool attr = false;
  if (!attr) {
    MOETOOL_CUDA_CHECK(cudaFuncSetAttribute(k_attention, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>((kTile * (2 * kMaxD + 1) + kRows * kMaxD) * sizeof(float))));
    attr = true;
  }
  const dim3 grid(static_cast<unsigned>((n + kRows - 1) / kRows), static_cast<unsigned>(Hq));
  k_attention<<<grid, kRows * 32, smem, context().stream>>>(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq,
                                                            Hkv, dk, dv, scale, window);
  check_launch("attention");
}

void silu_mul(const float* g, const float* u, float* out, int64_t n) {
  if (n == 0) return;
  k_silu_mul<<<blocks_for(n), kThreads, 0, context().stream>>>(g, u, out, n);
  check_launch("silu_mul");
}

void add_bias(float* y, const float* b, int64_t n, int64_t d) {
  if (n * d == 0 || !b) return;
  k_add_bias<<<blocks_for(n * d), kThreads, 0, context().stream>>>(y, b, n, d);
  check_launch("add_bias");
}

void add(float* y, const float* x, int64_t n) {
  if (n == 0) return;
  k_add<<<blocks_for(n), kThreads, 0, context().stream>>>(y, x, n);
  check_launch("add");
}

void clamp(float* x, int64_t n, float c) {
  if (n == 0) return;
  k_clamp<<<blocks_for(n), kThreads, 0, context().stream>>>(x, n, c);
  check_launch("clamp");
}

void gated_add(float* out, const float* S, const float* gate, int64_t n, int64_t d) {
  if (n * d == 0) return;
  k_gated_add<<<blocks_for(n * d), kThreads, 0, context().stream>>>(out, S, gate, n, d);
  check_launch("gated_add");
}

void route(const shared::RouteParams& p, const float* logits, const float* bias, int64_t n, float* scratch,
           int32_t* sel, float* w) {
  check(p.n_group <= 64, "CUDA route: more than 64 expert groups");
  if (n == 0) return;
  k_route<<<blocks_for(n, 64), 64, 0, context().stream>>>(p, logits, bias, n, scratch, sel, w);
  check_launch("route");
}

void gather_rows(const float* x, const int32_t* idx, int64_t m, int64_t d, float* out) {
  if (m * d == 0) return;
  k_gather<<<blocks_for(m * d), kThreads, 0, context().stream>>>(x, idx, m, d, out);
  check_launch("gather_rows");
}

void scatter_add_rows(const float* y, const int32_t* idx, const float* w, int64_t m, int64_t d, float* out) {
  if (m * d == 0) return;
  k_scatter_add<<<blocks_for(m * d), kThreads, 0, context().stream>>>(y, idx, w, m, d, out);
  check_launch("scatter_add_rows");
}

void dequant_blocks(BlockType t, const uint8_t* blocks, int64_t rows, int64_t cols, float* out) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  const unsigned g = blocks_for(n);
  cudaStream_t s = context().stream;
  switch (t) {
    case BlockType::Q8_0:
      check(cols % shared::kQ8_0Elems == 0, "CUDA dequant Q8_0: ", cols, " columns");
      k_dequant<shared::kQ8_0Bytes, shared::kQ8_0Elems, dec_q8_0><<<g, kThreads, 0, s>>>(blocks, rows, cols, out);
      break;
    case BlockType::Q4_0:
      check(cols % shared::kQ4_0Elems == 0, "CUDA dequant Q4_0: ", cols, " columns");
      k_dequant<shared::kQ4_0Bytes, shared::kQ4_0Elems, dec_q4_0><<<g, kThreads, 0, s>>>(blocks, rows, cols, out);
      break;
    case BlockType::Q4_K:
      check(cols % shared::kQ4_KElems == 0, "CUDA dequant Q4_K: ", cols, " columns");
      k_dequant<shared::kQ4_KBytes, shared::kQ4_KElems, dec_q4_k><<<g, kThreads, 0, s>>>(blocks, rows, cols, out);
      break;
  }
  check_launch("dequant_blocks");
}

void dequant_gptq_int4(const int32_t* qweight, const int32_t* qzeros, const float* scales, const int32_t* g_idx,
                       int64_t in_features, int64_t out_features, float* out) {
  check(in_features % 8 == 0 && out_features % 8 == 0, "CUDA GPTQ int4: ", out_features, "×", in_features,
        " is not a multiple of 8");
  const int64_t n = in_features * out_features;
  if (n == 0) return;
  k_gptq<<<blocks_for(n), kThreads, 0, context().stream>>>(qweight, qzeros, scales, g_idx, in_features, out_features,
                                                           out);
  check_launch("dequant_gptq_int4");
}

}  // namespace moetool::cuda
