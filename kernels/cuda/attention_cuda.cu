// kernels/cuda/attention_cuda.cu — the CUDA backend's attention (kernels/backend_cuda.h): a float32
// kernel with online softmax for any head dims up to 256, and a tensor-core bf16 kernel
// (FlashAttention-2's schedule) for prefill with head dims 16/32/64/128. Masks and the online
// softmax come from kernels/backend_shared.h, which the CPU tests check against the CPU code.
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"

namespace moetool::cuda {

namespace {

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

// Tensor-core attention (bf16 precision), FlashAttention-2's schedule. K and V are first staged
// as bf16 per KV head (K [Hkv, Tp, D], V transposed [Hkv, D, Tp], Tp = T rounded up to 64 with zero
// rows), so key tiles arrive by cp.async 16-byte copies, double-buffered: tile i+1 loads while
// tile i is multiplied. A block of 4 warps handles 64 query rows of one head, 16 rows per warp,
// with Q in registers. S = Q·Kᵀ and O += P·V are mma.sync m16n8k16 (bf16 in, f32 accumulate) whose
// accumulators stay in registers, and the online softmax (float32, the masks of k_attention) works
// on them in place: thread (g = lane/4, t = lane%4) holds rows g and g+8 and columns 2t, 2t+1 of
// every 8-wide block, so row reductions are two shuffles. dk = dv = D.
namespace tc {
constexpr int BM = 64, BN = shared::kAttnKeyTile, kWarps = 4;  // BN: ops::attention_bf16 emulates these tiles
template <int D>
struct Layout {
  static constexpr int LDK = D + 8, LDV = BN + 8;  // padded bf16 row strides (conflict-free fragment loads)
  static constexpr size_t ktile = size_t{BN} * LDK * 2, vtile = size_t{D} * LDV * 2;
  static constexpr size_t q = 0, k = q + size_t{BM} * LDK * 2, v = k + 2 * ktile, bytes = v + 2 * vtile;
};

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t ld32(const __nv_bfloat16* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi, float* rlo, float* rhi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  *rlo = __low2float(v);
  *rhi = __high2float(v);
  return *reinterpret_cast<const uint32_t*>(&v);
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(a), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
}  // namespace tc

// K rows [T, Hkv·D] (row stride k_stride) → kb [Hkv, Tp, D] bf16, zero rows from T to Tp.
__global__ void k_stage_k(const float* k, int64_t k_stride, int64_t T, int64_t Tp, int64_t Hkv, int64_t D,
                          __nv_bfloat16* kb) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= Hkv * Tp * D) return;
  const int64_t e = i % D, t = (i / D) % Tp, h = i / (D * Tp);
  kb[i] = __float2bfloat16(t < T ? k[t * k_stride + h * D + e] : 0.0f);
}

// V rows [T, Hkv·D] → vt [Hkv, D, Tp] bf16 (transposed through a 32×32 shared tile), zero columns from T.
__global__ void k_stage_vt(const float* v, int64_t v_stride, int64_t T, int64_t Tp, int64_t D, __nv_bfloat16* vt) {
  __shared__ float tile[32][33];
  const int64_t h = blockIdx.z, t0 = static_cast<int64_t>(blockIdx.x) * 32, e0 = static_cast<int64_t>(blockIdx.y) * 32;
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t t = t0 + r, e = e0 + threadIdx.x;
    tile[r][threadIdx.x] = t < T && e < D ? v[t * v_stride + h * D + e] : 0.0f;
  }
  __syncthreads();
  for (int r = threadIdx.y; r < 32; r += blockDim.y) {
    const int64_t e = e0 + r, t = t0 + threadIdx.x;
    if (e < D && t < Tp) vt[(h * D + e) * Tp + t] = __float2bfloat16(tile[threadIdx.x][r]);
  }
}

template <int D>
__global__ void __launch_bounds__(tc::kWarps * 32)
    k_attention_tc(const float* q, int64_t q_stride, const __nv_bfloat16* kb, const __nv_bfloat16* vt, int64_t Tp,
                   float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, float scale, int64_t window) {
  using L = tc::Layout<D>;
  constexpr int BM = tc::BM, BN = tc::BN, LDK = L::LDK, LDV = L::LDV, D4 = D / 4, D8 = D / 8, NB = BN / 8,
                DB = D / 8;
  extern __shared__ __align__(128) unsigned char sm[];
  __nv_bfloat16* Qs = reinterpret_cast<__nv_bfloat16*>(sm + L::q);  // [BM, D]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t h = blockIdx.y, kh = h / (Hq / Hkv);
  // The last query rows see the most keys: their blocks start first (causal load balance).
  const int64_t r0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * BM;
  const int64_t rows = n - r0 < BM ? n - r0 : BM;
  const __nv_bfloat16* kh_b = kb + kh * Tp * D;   // this head's K rows [Tp, D]
  const __nv_bfloat16* vh_t = vt + kh * D * Tp;   // this head's V columns [D, Tp]
  int64_t kb0, ke;
  shared::key_range(pos0 + r0, pos0 + r0 + rows - 1, window, &kb0, &ke);
  kb0 -= kb0 % BN;  // tiles start on multiples of BN (the extra keys are masked), so none passes Tp
  // Tile loads: K tile [BN, D] and V tile [D, BN] into buffer b.
  auto load_tile = [&](int64_t t0, int b) {
    __nv_bfloat16* Ks = reinterpret_cast<__nv_bfloat16*>(sm + L::k + b * L::ktile);
    __nv_bfloat16* Vt = reinterpret_cast<__nv_bfloat16*>(sm + L::v + b * L::vtile);
    for (int i = threadIdx.x; i < BN * D8; i += blockDim.x) {
      const int j = i / D8, c = (i % D8) * 8;
      tc::cp_async16(Ks + j * LDK + c, kh_b + (t0 + j) * D + c);
    }
    for (int i = threadIdx.x; i < D * (BN / 8); i += blockDim.x) {
      const int e = i / (BN / 8), c = (i % (BN / 8)) * 8;
      tc::cp_async16(Vt + e * LDV + c, vh_t + e * Tp + t0 + c);
    }
    tc::cp_async_commit();
  };
  if (kb0 < ke) load_tile(kb0, 0);
  // Scores in log2 units: p = 2^(s·scale·log2 e − m).
  const float sl2 = scale * 1.4426950408889634f;
  for (int i = threadIdx.x; i < BM * D4; i += blockDim.x) {
    const int r = i / D4, e = (i % D4) * 4;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r < rows) x = *reinterpret_cast<const float4*>(q + (r0 + r) * q_stride + h * D + e);
    __nv_bfloat162* d2 = reinterpret_cast<__nv_bfloat162*>(Qs + r * LDK + e);
    d2[0] = __floats2bfloat162_rn(x.x, x.y);
    d2[1] = __floats2bfloat162_rn(x.z, x.w);
  }
  __syncthreads();
  const int wr = warp * 16;  // this warp's first row in the block
  uint32_t qf[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    qf[kk][0] = tc::ld32(Qs + (wr + g) * LDK + kk * 16 + 2 * t);
    qf[kk][1] = tc::ld32(Qs + (wr + g + 8) * LDK + kk * 16 + 2 * t);
    qf[kk][2] = tc::ld32(Qs + (wr + g) * LDK + kk * 16 + 2 * t + 8);
    qf[kk][3] = tc::ld32(Qs + (wr + g + 8) * LDK + kk * 16 + 2 * t + 8);
  }
  float o[DB][4];
#pragma unroll
  for (int j = 0; j < DB; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int64_t qpos[2] = {pos0 + r0 + wr + g, pos0 + r0 + wr + g + 8};
  const bool valid[2] = {wr + g < rows, wr + g + 8 < rows};
  int b = 0;
  for (int64_t t0 = kb0; t0 < ke; t0 += BN, b ^= 1) {
    const int64_t tn = ke - t0 < BN ? ke - t0 : BN;
    if (t0 + BN < ke) {
      load_tile(t0 + BN, b ^ 1);  // the next tile streams in while this one is multiplied
      tc::cp_async_wait<1>();
    } else {
      tc::cp_async_wait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* Ks = reinterpret_cast<const __nv_bfloat16*>(sm + L::k + b * L::ktile);
    const __nv_bfloat16* Vt = reinterpret_cast<const __nv_bfloat16*>(sm + L::v + b * L::vtile);
    if (wr < rows) {
      // S[16, BN] = Q·Kᵀ
      float s[NB][4];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb) {
        s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
        const __nv_bfloat16* kr = Ks + (nb * 8 + g) * LDK + 2 * t;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk)
          tc::mma_bf16(s[nb], qf[kk], tc::ld32(kr + kk * 16), tc::ld32(kr + kk * 16 + 8));
      }
      // scale, mask (only where the tile is not visible to all 16 rows), row maxima
      float mx[2] = {-INFINITY, -INFINITY};
      const int64_t qf0 = pos0 + r0 + wr, ql = qf0 + 15;
      const bool full = tn == BN && wr + 16 <= rows && shared::key_visible(qf0, t0 + BN - 1, window) &&
                        shared::key_visible(ql, t0, window);
#pragma unroll
      for (int nb = 0; nb < NB; ++nb)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int half = i >> 1, col = nb * 8 + 2 * t + (i & 1);
          const bool vis = full || (valid[half] && col < tn && shared::key_visible(qpos[half], t0 + col, window));
          s[nb][i] = vis ? s[nb][i] * sl2 : -INFINITY;
          mx[half] = fmaxf(mx[half], s[nb][i]);
        }
      float alpha[2], mnew[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        mnew[r] = fmaxf(m[r], mx[r]);
        alpha[r] = mnew[r] == -INFINITY ? 1.0f : (m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mnew[r]));
        m[r] = mnew[r];
      }
      // P = 2^(S − m) rounded to bf16 (the normaliser sums the rounded values P·V uses), as A operands
      uint32_t pa[NB][2];
#pragma unroll
      for (int nb = 0; nb < NB; ++nb)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float e0 = s[nb][2 * r] == -INFINITY ? 0.0f : exp2f(s[nb][2 * r] - mnew[r]);
          const float e1 = s[nb][2 * r + 1] == -INFINITY ? 0.0f : exp2f(s[nb][2 * r + 1] - mnew[r]);
          float r0v, r1v;
          pa[nb][r] = tc::pack_bf16(e0, e1, &r0v, &r1v);
          sum[r] += r0v + r1v;
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
        sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
        l[r] = l[r] * alpha[r] + sum[r];
      }
#pragma unroll
      for (int j = 0; j < DB; ++j) {
        o[j][0] *= alpha[0];
        o[j][1] *= alpha[0];
        o[j][2] *= alpha[1];
        o[j][3] *= alpha[1];
      }
      // O[16, D] += P·V: A for keys 16kk..16kk+15 is S blocks 2kk and 2kk+1
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        const uint32_t a[4] = {pa[2 * kk][0], pa[2 * kk][1], pa[2 * kk + 1][0], pa[2 * kk + 1][1]};
#pragma unroll
        for (int j = 0; j < DB; ++j) {
          const __nv_bfloat16* vr = Vt + (j * 8 + g) * LDV + kk * 16 + 2 * t;
          tc::mma_bf16(o[j], a, tc::ld32(vr), tc::ld32(vr + 8));
        }
      }
    }
    __syncthreads();  // every warp is done with buffer b before the next iteration refills it
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (!valid[r]) continue;
    const float inv = 1.0f / l[r];
    float* orow = out + (r0 + wr + g + 8 * r) * Hq * D + h * D;
#pragma unroll
    for (int j = 0; j < DB; ++j)
      *reinterpret_cast<float2*>(orow + j * 8 + 2 * t) = make_float2(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
  }
}

}  // namespace

namespace {
template <int D>
void launch_attention_tc(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v,
                         int64_t v_stride, float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, float scale,
                         int64_t window) {
  constexpr size_t smem = tc::Layout<D>::bytes;
  static bool attr = false;
  if (!attr) {
    MOETOOL_CUDA_CHECK(
        cudaFuncSetAttribute(k_attention_tc<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    attr = true;
  }
  cudaStream_t st = context().stream;
  const int64_t T = pos0 + n, Tp = (T + tc::BN - 1) / tc::BN * tc::BN;
  Buffer<uint16_t> kb(static_cast<size_t>(Hkv * Tp * D)), vt(static_cast<size_t>(Hkv * Tp * D));
  auto* kbp = reinterpret_cast<__nv_bfloat16*>(kb.get());
  auto* vtp = reinterpret_cast<__nv_bfloat16*>(vt.get());
  k_stage_k<<<blocks_for(Hkv * Tp * D), kThreads, 0, st>>>(k, k_stride, T, Tp, Hkv, D, kbp);
  k_stage_vt<<<dim3(static_cast<unsigned>(Tp / 32), static_cast<unsigned>((D + 31) / 32), static_cast<unsigned>(Hkv)),
               dim3(32, 8), 0, st>>>(v, v_stride, T, Tp, D, vtp);
  check_launch("attention (staging K/V as bf16)");
  const dim3 grid(static_cast<unsigned>((n + tc::BM - 1) / tc::BM), static_cast<unsigned>(Hq));
  k_attention_tc<D><<<grid, tc::kWarps * 32, smem, st>>>(q, q_stride, kbp, vtp, Tp, out, n, pos0, Hq, Hkv, scale,
                                                          window);
  check_launch("attention (tensor cores)");
}
}  // namespace

bool attention_tc_supported(int64_t dk, int64_t dv) {
  return dk == dv && (dk == 16 || dk == 32 || dk == 64 || dk == 128);
}

void attention(const float* q, int64_t q_stride, const float* k, int64_t k_stride, const float* v, int64_t v_stride,
               float* out, int64_t n, int64_t pos0, int64_t Hq, int64_t Hkv, int64_t dk, int64_t dv, float scale,
               int64_t window, bool bf16) {
  check(dk <= kMaxD && dv <= kMaxD, "CUDA attention: head dims ", dk, "/", dv, " exceed ", kMaxD);
  check(Hkv > 0 && Hq % Hkv == 0, "CUDA attention: ", Hq, " query heads are not a multiple of ", Hkv, " KV heads");
  if (n == 0) return;
  // Tensor cores for prefill in bf16 precision (16-byte aligned rows); decoding steps and other head
  // dims take the float32 kernel.
  const bool aligned = reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(v) % 16 == 0;
  if (bf16 && aligned && shared::attention_bf16_tiles(n, dk, dv, q_stride, k_stride, v_stride)) {
    switch (dk) {
      case 16: return launch_attention_tc<16>(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq, Hkv, scale, window);
      case 32: return launch_attention_tc<32>(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq, Hkv, scale, window);
      case 64: return launch_attention_tc<64>(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq, Hkv, scale, window);
      default: return launch_attention_tc<128>(q, q_stride, k, k_stride, v, v_stride, out, n, pos0, Hq, Hkv, scale, window);
    }
  }
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

}  // namespace moetool::cuda
