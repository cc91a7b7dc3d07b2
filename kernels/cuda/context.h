// kernels/cuda/context.h — the CUDA backend's process-wide context (stream, cuBLAS and cuSOLVER
// handles) and error checks, shared by the .cu files of kernels/cuda/. Not for use outside it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <cstdint>

#include "core/error.h"

namespace moetool::cuda {

struct Context {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cusolverDnHandle_t solver = nullptr;
};
// The context, created on first use (cuda::init()).
Context& context();

// Launch helpers of the .cu files.
constexpr int kThreads = 256;
inline unsigned blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}
// Throws (naming the kernel) when the last launch failed.
inline void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) ::moetool::fail("CUDA kernel ", what, ": ", cudaGetErrorString(e));
}

}  // namespace moetool::cuda

#define MOETOOL_CUDA_CHECK(call)                                                                   \
  do {                                                                                             \
    const cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) ::moetool::fail("CUDA: ", #call, ": ", cudaGetErrorString(e_));         \
  } while (0)
#define MOETOOL_CUBLAS_CHECK(call)                                                                 \
  do {                                                                                             \
    const cublasStatus_t s_ = (call);                                                              \
    if (s_ != CUBLAS_STATUS_SUCCESS) ::moetool::fail("cuBLAS: ", #call, ": ", cublasGetStatusString(s_)); \
  } while (0)
#define MOETOOL_CUSOLVER_CHECK(call)                                                               \
  do {                                                                                             \
    const cusolverStatus_t s_ = (call);                                                            \
    if (s_ != CUSOLVER_STATUS_SUCCESS) ::moetool::fail("cuSOLVER: ", #call, ": status ", static_cast<int>(s_)); \
  } while (0)
