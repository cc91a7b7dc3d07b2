// kernels/nocuda/device_nocuda.cc — device discovery for builds without the CUDA backend.
#include "kernels/device.h"

namespace moetool {

bool cuda_built() { return false; }
int cuda_device_count() { return 0; }
std::string cuda_device_summary() { return "CUDA support not built (nvcc was not found at configure time)"; }

}  // namespace moetool
