// formats/gptq.h — GPTQ checkpoints in the Hugging Face layout that AutoGPTQ / GPTQModel /
// transformers / vLLM read ("checkpoint_format": "gptq", the v1 layout): a quantized linear
// "<module>.weight" [out, in] is replaced by four tensors
//   <module>.qweight  int32 [in·bits/32, out]   q along the input dim, little-endian bit stream
//   <module>.qzeros   int32 [ngroups, out·bits/32]   (zero − 1), packed along the output dim
//   <module>.scales   f16   [ngroups, out]
//   <module>.g_idx    int32 [in]                group of each input column
// and config.json carries "quantization_config" {quant_method "gptq", bits, group_size, desc_act,
// sym, checkpoint_format, dynamic {"+:<regex>": {"bits": b}, "-:<regex>": {}}}. The bit width of a
// module is read from its tensor shapes (qweight rows = in·bits/32), so per-module widths need no
// lookup in `dynamic` when reading; the writer fills `dynamic` for the loaders that need it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/checkpoint.h"

namespace moetool {

// config.json's quantization_config for GPTQ.
struct GPTQConfig {
  int bits = 4;
  int64_t group_size = 128;  // -1: one group per row
  bool desc_act = false, sym = true, true_sequential = true, static_groups = false;
  double damp_percent = 0.01;
  std::string checkpoint_format = "gptq";
  // Module name → bits where it differs from `bits`; modules left unquantized (kept as .weight).
  std::map<std::string, int> module_bits;
  std::map<std::string, int64_t> module_group_size;  // where it differs from group_size (−1: whole row)
  std::vector<std::string> unquantized_modules;
  // Rules for loaders that fuse modules (vLLM: q/k/v → qkv_proj, gate/up → gate_up_proj, every expert
  // of a layer → one FusedMoE "…experts"): one rule per fused group (gptq_fused_rule), matching both the
  // unfused and the fused names. Every module of a group must then share its width.
  bool fused_rules = false;
  // Every quantized module: written as `modules_in_block_to_quantize` (what transformers/optimum
  // replaces) when some block linear stays float — otherwise optimum would replace it too.
  std::vector<std::string> quantized_modules;
  std::string quantizer;  // "moetool:<version>" (meta.quantizer)

  nlohmann::ordered_json to_json() const;
  // Reads a quantization_config object (throws naming `what` unless quant_method is "gptq" and the
  // checkpoint format is the v1 "gptq" layout moetool reads).
  static GPTQConfig from_json(const nlohmann::json& q, const std::string& what);
};

// The GPTQ config of a model's config.json (raw), or nullopt when it is not a GPTQ checkpoint.
std::optional<GPTQConfig> gptq_config_of(const nlohmann::json& raw_config, const std::string& what);

// "model.layers.0.self_attn.q_proj.weight" → "model.layers.0.self_attn.q_proj" (nullopt unless the
// name ends in ".weight").
std::optional<std::string> gptq_module_of(const std::string& weight_name);

// The anchored `dynamic` regex (without the "+:" prefix) of a module's fused group, matching the
// module's own name and the name a fusing loader gives the group:
//   "model.layers.3.self_attn.q_proj"            → ^model\.layers\.3\.self_attn\.(q|k|v|qkv)_proj$
//   "model.layers.3.mlp.gate_proj" (dense/shared) → ^model\.layers\.3\.mlp\.(gate|up|gate_up)_proj$
//   "model.layers.3.block_sparse_moe.experts.5.w2" → ^model\.layers\.3\.block_sparse_moe\.experts(\.|$)
//   anything else                                → ^<module>$
std::string gptq_fused_rule(const std::string& module);

// One quantized linear found in a checkpoint.
struct GPTQLinear {
  std::string module;  // "model.layers.0.self_attn.q_proj"
  int bits = 0;
  int64_t rows = 0, cols = 0, ngroups = 0;  // out, in
};

// Whether `weight_name` ([rows, cols] = [out, in] expected) is stored as GPTQ tensors in `ck`;
// throws naming the checkpoint and tensor when the four tensors are inconsistent (missing one, wrong
// dtype, shapes that fit no bit width 2..8).
std::optional<GPTQLinear> find_gptq_linear(const Checkpoint& ck, const std::string& weight_name, int64_t rows,
                                           int64_t cols);
// The same for the GPTQ tensors "<module>.qweight", ... of any module name (a low-rank factor
// "<M>.weight_u" is such a module when quantize stores it quantized: formats/lowrank.h).
std::optional<GPTQLinear> find_gptq_module(const Checkpoint& ck, const std::string& module, int64_t rows,
                                           int64_t cols);
// Names of the four tensors of a module.
std::vector<std::string> gptq_tensor_names(const std::string& module);

}  // namespace moetool
