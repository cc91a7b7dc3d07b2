// kernels/cuda/moe_cuda.cu — MoE token grouping on the GPU (kernels/backend_cuda.h group_by_expert,
// pad_groups): the (token, slot) entries the router chose, sorted by expert without a trip to the
// host, so the expert GEMMs need only the E + 1 row offsets back, and laid out with every expert's
// rows padded to one count for the batched expert GEMMs.
#include "kernels/backend_cuda.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/reduce.cuh"

namespace moetool::cuda {

namespace {

// One block per expert e. Pass 1 counts the entries of smaller experts (e's first grouped row);
// pass 2 walks the entries in blockDim-sized chunks, ranking e's entries within each chunk by a
// warp ballot and the counts of the warps before it: a stable counting sort without atomics.
__global__ void k_group(const int32_t* sel, const float* w, int64_t R, int64_t k, int64_t E, int32_t* off,
                        int32_t* tok, int32_t* pos, float* wg) {
  __shared__ long long sh[32];
  __shared__ int warp_count[32];
  const int e = static_cast<int>(blockIdx.x);
  long long before = 0;
  for (int64_t r = threadIdx.x; r < R; r += blockDim.x) before += sel[r] < e;
  const long long first = block_sum(before, sh);
  if (threadIdx.x == 0) {
    off[e] = static_cast<int32_t>(first);
    if (e == E - 1) off[E] = static_cast<int32_t>(R);
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  long long run = first;
  for (int64_t c0 = 0; c0 < R; c0 += blockDim.x) {  // uniform trip count: every lane takes the ballot
    const int64_t r = c0 + threadIdx.x;
    const bool mine = r < R && sel[r] == e;
    const unsigned m = __ballot_sync(0xffffffffu, mine);
    if (lane == 0) warp_count[warp] = __popc(m);
    __syncthreads();
    int earlier = 0, total = 0;
    for (int i = 0; i < warps; ++i) {
      earlier += i < warp ? warp_count[i] : 0;
      total += warp_count[i];
    }
    if (mine) {
      const long long dst = run + earlier + __popc(m & ((1u << lane) - 1u));
      tok[dst] = static_cast<int32_t>(r / k);
      pos[r] = static_cast<int32_t>(dst);
      if (wg) wg[dst] = w[r];
    }
    run += total;
    __syncthreads();  // warp_count is rewritten by the next chunk
  }
}

__global__ void k_pad(const int32_t* sel, const int32_t* off, const int32_t* pos, int64_t R, int64_t k, int64_t cap,
                      int32_t* padded, int32_t* tokp) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= R) return;
  const int32_t e = sel[r];
  const int64_t p = e * cap + (pos[r] - off[e]);
  padded[r] = static_cast<int32_t>(p);
  tokp[p] = static_cast<int32_t>(r / k);
}

}  // namespace

void pad_groups(const int32_t* sel, const int32_t* off, const int32_t* pos, int64_t n, int64_t k, int64_t E,
                int64_t cap, int32_t* padded, int32_t* tokp) {
  const int64_t R = n * k;
  check(E * cap < (int64_t{1} << 31), "CUDA pad_groups: ", E, " experts × ", cap, " rows");
  MOETOOL_CUDA_CHECK(cudaMemsetAsync(tokp, 0xff, static_cast<size_t>(E * cap) * sizeof(int32_t), context().stream));
  if (R == 0) return;
  k_pad<<<blocks_for(R), kThreads, 0, context().stream>>>(sel, off, pos, R, k, cap, padded, tokp);
  check_launch("pad_groups");
}

void group_by_expert(const int32_t* sel, const float* w, int64_t n, int64_t k, int64_t E, int32_t* off, int32_t* tok,
                     int32_t* pos, float* wg) {
  const int64_t R = n * k;
  check(E >= 1 && R < (int64_t{1} << 31), "CUDA group_by_expert: ", E, " experts, ", R, " entries");
  check(!wg || w, "CUDA group_by_expert: grouped weights asked for without weights");
  k_group<<<static_cast<unsigned>(E), kThreads, 0, context().stream>>>(sel, w, R, k, E, off, tok, pos, wg);
  check_launch("group_by_expert");
}

}  // namespace moetool::cuda
