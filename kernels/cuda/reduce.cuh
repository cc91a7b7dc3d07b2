// kernels/cuda/reduce.cuh — block-wide reductions for the row kernels of kernels/cuda/: every
// thread of the block gets the same result, summed in a fixed order (deterministic). Not for use
// outside kernels/cuda/.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace moetool::cuda {

// Σ v over the block (blockDim.x a multiple of 32, at most 1024); sh: 32 elements of shared memory.
template <class T>
__device__ T block_sum(T v, T* sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();  // sh may still be read by an earlier call
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  T s = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) s += sh[i];
  return s;
}

// The block's maximum m and the smallest index i holding it (llama.cpp's first-index argmax);
// shm, shi: 32 elements each of shared memory.
__device__ inline void block_argmax(float& m, int64_t& i, float* shm, int64_t* shi) {
  for (int o = 16; o > 0; o >>= 1) {
    const float m2 = __shfl_xor_sync(0xffffffffu, m, o);
    const int64_t i2 = __shfl_xor_sync(0xffffffffu, i, o);
    if (m2 > m || (m2 == m && i2 < i)) {
      m = m2;
      i = i2;
    }
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    shm[threadIdx.x >> 5] = m;
    shi[threadIdx.x >> 5] = i;
  }
  __syncthreads();
  m = shm[0];
  i = shi[0];
  for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
    if (shm[w] > m || (shm[w] == m && shi[w] < i)) {
      m = shm[w];
      i = shi[w];
    }
}

}  // namespace moetool::cuda
