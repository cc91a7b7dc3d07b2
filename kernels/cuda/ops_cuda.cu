// kernels/cuda/ops_cuda.cu — the CUDA backend (kernels/backend_cuda.h): context, memory, cuBLAS
// GEMMs and the engine's elementwise and row kernels (attention: attention_cuda.cu; quantized
// weights: quant_cuda.cu). Per-element logic (routing) comes from kernels/backend_shared.h, which
// the CPU tests check against the CPU code.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstring>

#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"

namespace moetool::cuda {

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
    // Freed stream-ordered memory stays in the device's pool instead of going back to the driver at
    // each synchronisation: the engine's per-layer buffers are then reused, not re-allocated.
    cudaMemPool_t pool = nullptr;
    MOETOOL_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
    uint64_t keep = UINT64_MAX;
    MOETOOL_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
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

namespace {
// Two pinned staging buffers: large downloads (logits) copy chunk i+1 from the GPU while chunk i is
// copied on to the pageable destination.
constexpr size_t kStage = size_t{16} << 20;
struct Staging {
  void* buf[2] = {nullptr, nullptr};
  cudaEvent_t done[2] = {nullptr, nullptr};
};
Staging& staging() {
  static Staging* st = [] {
    auto* s = new Staging;
    for (int i = 0; i < 2; ++i) {
      MOETOOL_CUDA_CHECK(cudaMallocHost(&s->buf[i], kStage));
      MOETOOL_CUDA_CHECK(cudaEventCreateWithFlags(&s->done[i], cudaEventDisableTiming));
    }
    return s;
  }();
  return *st;
}
}  // namespace

void download(void* dst, const void* src, size_t bytes) {
  if (!bytes) return;
  cudaStream_t s = context().stream;
  if (bytes <= kStage / 4) {
    MOETOOL_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    MOETOOL_CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  Staging& st = staging();
  const size_t chunks = (bytes + kStage - 1) / kStage;
  auto issue = [&](size_t c) {
    const size_t off = c * kStage, len = std::min(kStage, bytes - off);
    MOETOOL_CUDA_CHECK(cudaMemcpyAsync(st.buf[c % 2], static_cast<const char*>(src) + off, len, cudaMemcpyDeviceToHost, s));
    MOETOOL_CUDA_CHECK(cudaEventRecord(st.done[c % 2], s));
  };
  issue(0);
  for (size_t c = 0; c < chunks; ++c) {
    if (c + 1 < chunks) issue(c + 1);
    MOETOOL_CUDA_CHECK(cudaEventSynchronize(st.done[c % 2]));
    const size_t off = c * kStage, len = std::min(kStage, bytes - off);
    std::memcpy(static_cast<char*>(dst) + off, st.buf[c % 2], len);
  }
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

void gemm_nt_bf16_batched(int64_t batch, int64_t n, int64_t R, int64_t C, const uint16_t* X, int64_t ldx, int64_t sx,
                          const uint16_t* W, int64_t sw, float* Y, int64_t ldy, int64_t sy, float beta) {
  if (batch == 0 || n == 0 || R == 0) return;
  const float alpha = 1.0f;
  MOETOOL_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      context().blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(R), static_cast<int>(n), static_cast<int>(C), &alpha, W,
      CUDA_R_16BF, static_cast<int>(C), static_cast<long long>(sw), X, CUDA_R_16BF, static_cast<int>(ldx),
      static_cast<long long>(sx), &beta, Y, CUDA_R_32F, static_cast<int>(ldy), static_cast<long long>(sy),
      static_cast<int>(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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

// A float32 result stored as float32, or rounded to bf16 (the next GEMM's input).
__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(uint16_t* p, float v) { *p = shared::float_to_bf16(v); }

template <class T>
__global__ void k_silu_mul(const float* g, const float* u, T* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) put(out + i, g[i] / (1.0f + expf(-g[i])) * u[i]);
}

template <class T>
__global__ void k_gather(const float* x, const int32_t* idx, int64_t m, int64_t d, T* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= m * d) return;
  const int32_t r = idx[i / d];
  put(out + i, r < 0 ? 0.0f : x[static_cast<int64_t>(r) * d + i % d]);
}

__global__ void k_combine(const float* Y, const int32_t* pos, const float* w, int64_t n, int64_t k, int64_t d,
                          float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n * d) return;
  const int64_t t = i / d, c = i % d;
  float acc = 0.0f;
  for (int64_t j = 0; j < k; ++j) acc += w[t * k + j] * Y[static_cast<int64_t>(pos[t * k + j]) * d + c];
  out[i] += acc;
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

__global__ void k_scatter_add(const float* y, const int32_t* idx, const float* w, int64_t m, int64_t d, float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < m * d) out[static_cast<int64_t>(idx[i / d]) * d + i % d] += w[i / d] * y[i];
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

void silu_mul(const float* g, const float* u, float* out, int64_t n) {
  if (n == 0) return;
  k_silu_mul<<<blocks_for(n), kThreads, 0, context().stream>>>(g, u, out, n);
  check_launch("silu_mul");
}

void silu_mul_bf16(const float* g, const float* u, uint16_t* out, int64_t n) {
  if (n == 0) return;
  k_silu_mul<<<blocks_for(n), kThreads, 0, context().stream>>>(g, u, out, n);
  check_launch("silu_mul_bf16");
}

void gather_rows_bf16(const float* x, const int32_t* idx, int64_t m, int64_t d, uint16_t* out) {
  if (m * d == 0) return;
  k_gather<<<blocks_for(m * d), kThreads, 0, context().stream>>>(x, idx, m, d, out);
  check_launch("gather_rows_bf16");
}

void combine_rows(const float* Y, const int32_t* pos, const float* w, int64_t n, int64_t k, int64_t d, float* out) {
  if (n * d == 0) return;
  k_combine<<<blocks_for(n * d), kThreads, 0, context().stream>>>(Y, pos, w, n, k, d, out);
  check_launch("combine_rows");
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

}  // namespace moetool::cuda
