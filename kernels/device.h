// kernels/device.h — which compute devices this build of moetool can use. The CUDA backend is
// compiled whenever nvcc is found; at run time it is used only if a GPU is present.
#pragma once

#include <string>

namespace moetool {

bool cuda_built();        // this binary was compiled with the CUDA backend
int cuda_device_count();  // GPUs visible now (0 without a driver or GPU, or without CUDA support)
std::string cuda_device_summary();  // "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or why none is usable

}  // namespace moetool
