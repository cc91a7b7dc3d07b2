// kernels/device.h — which compute devices this build of moetool can use. The CUDA backend is
// compiled whenever nvcc is found; at run time it is used only if a GPU is present.
#pragma once

#include <string>

namespace moetool {

bool cuda_built();        // this binary was compiled with the CUDA backend
int cuda_device_count();  // GPUs visible now (0 without a driver or GPU, or without CUDA support)
std::string cuda_device_summary();  // "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" or why none is usable

// Where the engine and the linear algebra run.
enum class Device { Cpu, Cuda };
// Storage and GEMM input type of weights on the GPU (accumulation is always float32).
enum class Precision { F32, BF16 };

struct DeviceOptions {
  Device device = Device::Cpu;
  Precision precision = Precision::F32;
  // CUDA: bytes of layer weights kept resident on the GPU; layers beyond it are streamed in per use
  // and freed after. -1: resident while more than max(2 GiB, 10 %) of GPU memory stays free.
  int64_t gpu_weight_budget = -1;
  // CUDA: keep quantized weights (ggml Q8_0 … Q6_K blocks, GPTQ int4) in their stored form in GPU memory and
  // decode them per use (about 3.5× less memory than bf16). Without it this happens only to layers
  // whose decoded weights do not fit.
  bool gpu_keep_quantized = false;
};

// "cpu" | "cuda" | "auto" → a device usable now (kernels/device.cc): "cuda" throws moetool::Error
// (one line: why no GPU is usable) when the backend is not built or no GPU is visible; "auto" is
// CUDA when usable, else CPU. Any other string throws.
Device resolve_device(const std::string& name);
// "f32" | "bf16" → Precision (throws otherwise).
Precision parse_precision(const std::string& name);
const char* device_name(Device d);        // "cpu" / "cuda"
const char* precision_name(Precision p);  // "f32" / "bf16"

}  // namespace moetool
