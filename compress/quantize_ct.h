// compress/quantize_ct.h — the GPTQ pass's output in compressed-tensors' pack-quantized layout
// (formats/compressed_tensors.h) instead of GPTQ's: the same quantizers (GPTQ, importance, RTN;
// symmetric, no act-order), the same per-linear widths and group fallbacks, stored as
// weight_packed / weight_scale / weight_shape with a compressed-tensors quantization_config whose
// `ignore` lists every linear left in float (routers, the output head, skipped linears).
#pragma once

#include <string>
#include <vector>

#include "formats/compressed_tensors.h"
#include "formats/gptq.h"
#include "formats/gptq_pack.h"
#include "formats/model.h"
#include "formats/safetensors.h"

namespace moetool {

// The dtype of the stored scales: F32 for float32 models, F16 otherwise (the quantizers' scales are
// f16 values, so both hold them exactly; vLLM casts them to the model's dtype when it loads them).
DType ct_scale_dtype(const Model& m);
// The tensors of one packed linear [rows, cols] at `bits` with `ngroups` scales per row.
std::vector<TensorSpec> ct_specs(const Model& m, const std::string& module, int bits, int64_t rows, int64_t cols,
                                 int64_t ngroups);
// quantization_config for the GPTQ plan `qc` (its widths, group sizes and float modules) of m.
CTConfig ct_config_for(const Model& m, const GPTQConfig& qc);
// One linear's GPTQ tensors (symmetric, columns in order) as its compressed-tensors tensors.
CTTensors ct_from_gptq(const GPTQTensors& t, const std::string& module);

}  // namespace moetool
