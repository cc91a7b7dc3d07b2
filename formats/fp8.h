// formats/fp8.h — FP8 checkpoints with block scales, the layout of DeepSeek-V3/R1's and Qwen3's FP8
// releases that transformers (FineGrainedFP8) and vLLM ("fp8", block-quantized) load: a quantized
// linear keeps its name and shape,
//   <module>.weight            F8_E4M3 [out, in]
//   <module>.weight_scale_inv  F32     [ceil(out/B0), ceil(in/B1)]   W ≈ q · s[i/B0, j/B1]
// (the name is historical: it holds the dequantization multiplier, ≈ amax/448 of the block), and
// config.json carries "quantization_config" {quant_method "fp8", fmt "e4m3", activation_scheme
// "dynamic", weight_block_size [B0, B1], modules_to_not_convert [...]}. Grids that do not divide the
// shape are read with DeepSeek's ceil convention; the writer never makes them (transformers derives
// the block from the grid, which only agrees when it divides).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"

namespace moetool {

// config.json's quantization_config for block FP8.
struct FP8Config {
  int64_t block_rows = 128, block_cols = 128;  // weight_block_size
  std::string fmt = "e4m3";
  std::string activation_scheme = "dynamic";
  std::vector<std::string> modules_to_not_convert;  // routers, lm_head, linears kept in float
  std::string quantizer;                            // "moetool:<version>" (meta.quantizer)

  nlohmann::ordered_json to_json() const;
  // Reads a quantization_config object; throws naming `what` unless quant_method is "fp8" with a
  // [B0, B1] weight_block_size of positive integers (absent: 128 × 128, transformers' default).
  static FP8Config from_json(const nlohmann::json& q, const std::string& what);
};

// The FP8 config of a model's config.json (raw), or nullopt when its quant_method is not "fp8".
std::optional<FP8Config> fp8_config_of(const nlohmann::json& raw_config, const std::string& what);

// "x.weight" → "x.weight_scale_inv".
std::string fp8_scale_name(const std::string& weight_name);
// The scale grid of a [rows, cols] weight: [ceil(rows/B0), ceil(cols/B1)].
Shape fp8_scale_shape(int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols);

// q (F8_E4M3 or F8_E5M2, [rows, cols]) times its block scales (F32, BF16 or F16, the grid above)
// as an owned F32 tensor; every product is exact in f32 (3 or 2 mantissa bits times a float).
// Throws naming `what` (the checkpoint and tensor) for a wrong grid shape or dtype.
Tensor fp8_dequantize(const Tensor& q, const Tensor& scale, int64_t block_rows, int64_t block_cols,
                      const std::string& what);

// W [rows, cols] (f32) quantized per block as transformers' FP8 quantizer does it (Fp8Quantize), in
// f32: m = 448·(1/amax) (torch's `448 / amax`), q = E4M3(clamp(W·m, ±448)) rounded to nearest
// even, stored scale 1/m (an
// all-zero block: m = 1) — so its bytes are the bytes transformers writes for the same weights.
struct FP8Quantized {
  std::vector<uint8_t> q;      // [rows, cols]
  std::vector<float> scale;    // [ceil(rows/B0), ceil(cols/B1)]
};
FP8Quantized fp8_quantize(const float* W, int64_t rows, int64_t cols, int64_t block_rows, int64_t block_cols);

}  // namespace moetool
