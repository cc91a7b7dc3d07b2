// engine/gpu_ops.h — building blocks of the CUDA engine's forward pass (engine/engine_cuda.cc), internal
// to it: its scratch buffers and section profile, the device rope table, and a GEMM by a GPU weight in
// any storage (dense float32 / bf16, or kept quantized and decoded per use).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "engine/gpu_weights.h"
#include "formats/model_config.h"

namespace moetool {

// MOETOOL_CUDA_PROFILE=1: wall time per section of the forward pass (the stream synchronised at
// each boundary, so sections do not overlap), printed to stderr when the engine is destroyed. For
// finding where a forward pass spends its time; off (no synchronisation) by default.
struct CudaProfile {
  bool on = false;
  std::chrono::steady_clock::time_point last;
  std::vector<std::pair<std::string, double>> ms;  // first-seen order
  int64_t passes = 0;
  void mark(const char* section) {
    if (!on) return;
    cuda::synchronize();
    const auto now = std::chrono::steady_clock::now();
    const double d = std::chrono::duration<double, std::milli>(now - last).count();
    last = now;
    for (auto& [name, v] : ms)
      if (name == section) {
        v += d;
        return;
      }
    ms.emplace_back(section, d);
  }
  void start() {
    if (!on) return;
    ++passes;
    cuda::synchronize();
    last = std::chrono::steady_clock::now();
  }
};

// The CUDA engine's state across forward passes: bf16 and decoding scratch, the rope table, the
// embedding table, the final norm, the last logits and the profile.
struct GpuScratch {
  CudaProfile prof;
  Buffer<uint16_t> xb;  // bf16 copy of a GEMM input
  Buffer<uint16_t> xn;  // bf16 copy of an input several GEMMs share
  Buffer<float> inv_freq;
  int64_t rope_dim = -1, rope_len = -1;  // the table inv_freq holds now
  float rope_factor = 1.0f;
  int64_t rope_half = 0;
  Buffer<float> final_norm;    // [H]
  Buffer<float> embed;         // [V, H] the embedding table (the host's rows), when it fits
  bool embed_on_host = false;  // too large for the GPU: rows are looked up on the host
  Buffer<float> logits;        // [rows, V] the last forward pass's logits
  Buffer<uint16_t> wq16;       // a quantized weight decoded for one GEMM (bf16)
  Buffer<float> wq32;          // (float32)
};

// inv_freq of rope_table(c, d, len) on the device (uploaded when (d, len) changes); returns
// {half, attention factor}.
std::pair<int64_t, float> device_rope(const ModelConfig& c, int64_t d, int64_t len, GpuScratch& s);

// The bf16 copy of X[elems] in buf when the engine runs in bf16 (one conversion for the GEMMs that
// share an input), else null.
const uint16_t* bf16_input(Precision p, const float* X, int64_t elems, Buffer<uint16_t>& buf);

// Device K/V rows of layer l for this cache ([capacity, k_width], [capacity, v_width]), allocated per
// layer on first use: {K, V}.
std::pair<float*, float*> device_kv(const ModelConfig& c, KVCache& cache, int64_t l);

// Y[n, rows] = X[n, cols] · Wᵀ + beta · Y. Xb: X already in bf16 (shared by several GEMMs), or null.
void matmul(const GpuMatrix& W, const float* X, int64_t n, float* Y, GpuScratch& s, float beta = 0.0f,
            const uint16_t* Xb = nullptr);

}  // namespace moetool
