// kernels/cuda/device_cuda.cu — CUDA device discovery for builds with the CUDA backend.
#include <cuda_runtime.h>

#include <string>

#include "kernels/device.h"

namespace moetool {

bool cuda_built() { return true; }

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string cuda_device_summary() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no GPU available (") + cudaGetErrorString(e) + ")";
  }
  if (n == 0) return "no GPU";
  cudaDeviceProp p{};
  cudaGetDeviceProperties(&p, 0);
  return std::string(p.name) + " (sm_" + std::to_string(p.major) + std::to_string(p.minor) + ", " +
         std::to_string(p.totalGlobalMem >> 30) + " GiB)" + (n > 1 ? " and " + std::to_string(n - 1) + " more" : "");
}

}  // namespace moetool
