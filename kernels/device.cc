// kernels/device.cc — device-name parsing shared by both builds (with and without CUDA).
#include "kernels/device.h"

#include "core/error.h"

namespace moetool {

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda" || name == "auto") {
    const bool usable = cuda_built() && cuda_device_count() > 0;
    if (usable) return Device::Cuda;
    if (name == "auto") return Device::Cpu;
    fail("--device cuda: no usable GPU: ", cuda_device_summary());
  }
  fail("--device: expected cpu, cuda or auto, got '", name, "'");
}

Precision parse_precision(const std::string& name) {
  if (name == "f32" || name == "float32") return Precision::F32;
  if (name == "bf16" || name == "bfloat16") return Precision::BF16;
  fail("--dtype: expected f32 or bf16, got '", name, "'");
}

const char* device_name(Device d) { return d == Device::Cuda ? "cuda" : "cpu"; }
const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "f32"; }

}  // namespace moetool
