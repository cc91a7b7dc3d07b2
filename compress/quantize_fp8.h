// compress/quantize_fp8.h — a whole checkpoint written as block FP8 (formats/fp8.h: E4M3 weights,
// one f32 scale per B0 × B1 block, the DeepSeek-V3 / Qwen3 FP8 layout transformers and vLLM load).
// Every projection of attention, dense FFN, routed and shared experts is quantized by the rounding
// transformers' own FP8 quantizer uses (no calibration: FP8's error is the format's, ≈ 2^-4
// relative per weight); embeddings, the output head, routers, norms and biases stay float and are
// listed in modules_to_not_convert, as are linears whose shape the block does not divide (kept
// float with a warning: transformers derives the block from the scale grid and would misread
// them). Streams layer by layer: peak memory is one linear in f32 plus its FP8 bytes.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/model.h"

namespace moetool {

struct FP8QuantOptions {
  int64_t block_rows = 128, block_cols = 128;
  // One scale per output row instead of blocks, written as compressed-tensors "float-quantized"
  // (formats/compressed_tensors.h: "<module>.weight" E4M3, "<module>.weight_scale" F32 [out, 1],
  // vLLM's W8A16 FP8; `ignore` lists the float linears) — llm-compressor's FP8 weight-only layout.
  bool channel = false;
  std::vector<std::string> skip;        // regexes (std::regex_search) of modules kept in float
  std::optional<DType> float_dtype;     // dtype of the tensors kept in float; nullopt: the source's
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;  // provenance for the safetensors __metadata__
  std::string quantizer;                        // "moetool:<version>" for quantization_config.meta
  std::function<void(const std::string&)> progress;  // one line per layer
};

struct FP8LinearRecord {
  std::string module;   // "model.layers.0.block_sparse_moe.experts.3.w1"
  Role role;
  int64_t layer = -1, expert = -1, rows = 0, cols = 0;
  bool fp8 = false;     // false: kept in float (note says why)
  std::string note;
  double rel_error = 0;  // ‖W − Ŵ‖_F / ‖W‖_F of the stored weight (0 when kept float)
  uint64_t bytes = 0;    // stored bytes (weight and scales)
};

struct FP8QuantReport {
  std::string output;
  int64_t block_rows = 0, block_cols = 0;  // 1 and 0 with FP8QuantOptions::channel
  std::vector<FP8LinearRecord> linears;
  std::vector<std::string> warnings;
  int64_t quantized_params = 0, params = 0;  // FP8 weights; every tensor
  uint64_t quantized_bytes = 0, bytes = 0;   // their stored bytes (with scales); all tensor data
  double max_rel_error = 0;
  double seconds = 0;
  double bpw_quantized() const { return quantized_params ? 8.0 * quantized_bytes / quantized_params : 0; }
  double bpw() const { return params ? 8.0 * bytes / params : 0; }
};

// Plans (dry_run) or writes `out_dir`. Throws moetool::Error naming the tensor for non-finite
// weights, and for a --skip that leaves some of a layer's routed experts FP8 and others float
// (transformers and vLLM store a layer's experts as one module).
FP8QuantReport quantize_to_fp8(const Model& m, const std::string& out_dir, const FP8QuantOptions& o,
                               bool dry_run = false);

}  // namespace moetool
