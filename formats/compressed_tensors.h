// formats/compressed_tensors.h — weight-only checkpoints in compressed-tensors' "pack-quantized" (int)
// and "float-quantized" (FP8 per output channel, CTGroup::fp8) formats (llm-compressor's output, vLLM's native format; the `compressed-tensors` package on PyPI):
// a quantized linear "<module>.weight" [out, in] is stored as
//   <module>.weight_packed  I32 [out, ceil(in·bits/32)]  q + 2^(bits−1) as a little-endian bit stream
//                                                          along each row (element j at bit j·bits)
//   <module>.weight_scale   F32/F16/BF16 [out, in/group]  (strategy "group"; "channel": [out, 1])
//   <module>.weight_shape   I64 [2]                       [out, in]
// with symmetric signed q in [−2^(bits−1), 2^(bits−1) − 1] and W ≈ q · scale; config.json carries
// "quantization_config" {quant_method "compressed-tensors", format "pack-quantized", quantization_status
// "compressed", config_groups {name: {targets, weights {num_bits, type "int", symmetric, strategy,
// group_size}}}, ignore [...]}. A module belongs to the first group whose targets name it (exactly, by
// "re:" regex, or by the class "Linear"), unless `ignore` names it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "formats/checkpoint.h"
#include "formats/int_codec.h"

namespace moetool {

struct CTGroup {
  int bits = 4;
  int64_t group_size = 128;          // −1: strategy "channel" (one scale per output row)
  std::vector<std::string> targets;  // "Linear", "re:<regex>" or exact module names
  // FP8 weight-only ("float-quantized", weights type "float", 8 bits, strategy "channel"):
  // "<module>.weight" F8_E4M3 [out, in] and "<module>.weight_scale" F32 [out, 1], W = q · scale.
  bool fp8 = false;
};

struct CTConfig {
  std::vector<CTGroup> groups;
  std::vector<std::string> ignore;  // exact names or "re:<regex>"
  std::string quantizer;            // "moetool:<version>"

  nlohmann::ordered_json to_json() const;
  // Reads a quantization_config; throws naming `what` unless it is a compressed-tensors
  // "pack-quantized" (symmetric int) or "float-quantized" (FP8 per channel), compressed,
  // weight-only config moetool reads.
  bool has_fp8() const;
  static CTConfig from_json(const nlohmann::json& q, const std::string& what);
  // The group of a module (nullptr: not quantized — ignored or targeted by no group).
  const CTGroup* group_of(const std::string& module) const;
};

// The compressed-tensors config of config.json (raw), or nullopt when quant_method is not
// "compressed-tensors".
std::optional<CTConfig> ct_config_of(const nlohmann::json& raw_config, const std::string& what);

// "<module>.weight_packed", "<module>.weight_scale", "<module>.weight_shape".
std::vector<std::string> ct_tensor_names(const std::string& module);
// Packed words per row: ceil(cols·bits/32).
int64_t ct_packed_cols(int64_t cols, int bits);

// Signed q [rows, cols] (|q| within bits) packed per row / unpacked.
std::vector<int32_t> ct_pack(const int8_t* q, int64_t rows, int64_t cols, int bits);
std::vector<int8_t> ct_unpack(const int32_t* packed, int64_t rows, int64_t cols, int bits);

// A symmetric IntQuantized (zero = 2^(bits−1) everywhere, g_idx = j / group_size) as the packed
// words and the scales [rows, ngroups] in f32; throws naming `what` otherwise.
struct CTTensors {
  std::vector<int32_t> packed;
  std::vector<float> scale;  // [rows, ngroups]
};
CTTensors ct_from_int(const IntQuantized& q, const std::string& what);

// The group of a module `ck` stores packed, after checking its three tensors against it (nullptr
// when `ck` has no "<module>.weight_packed"); throws naming the checkpoint and tensor otherwise.
const CTGroup* ct_linear(const Checkpoint& ck, const CTConfig& c, const std::string& module, int64_t rows, int64_t cols);
// The module's weight dequantized to an owned F32 [rows, cols] tensor when `ck` stores it packed
// (nullopt when it has no "<module>.weight_packed"); throws naming the checkpoint and tensor for
// shapes or dtypes that disagree with the config's group for the module.
std::optional<Tensor> ct_dequantize(const Checkpoint& ck, const CTConfig& c, const std::string& module, int64_t rows,
                                    int64_t cols);

}  // namespace moetool
