// formats/gguf_requant.h — a GGUF file as the source of the GGUF quantize pass, as llama-quantize
// takes one: its tensors in file order as a GGUFExportPlan (roles found through the family's GGUF
// names, formats/gguf_config.h), and the writer that re-encodes each tensor from its stored type to
// the planned one. Metadata (hyperparameters, tokenizer, everything else) is copied key by key in
// file order; general.file_type, general.quantization_version, general.name (when given) and the
// provenance keys are replaced in place (added after the source's general.* keys when absent).
//
// Nothing changes layout: q/k rows stay in llama.cpp's rotary order (every ggml type quantizes row
// by row, so permuting rows and quantizing commute) and routed experts stay stacked. A tensor whose
// planned type equals its stored type is copied byte for byte (llama-quantize does the same); any
// other is dequantized to f32 (exact for F32/F16/BF16 sources) in chunks of rows and quantized as
// from a checkpoint, with importance where the plan says so (stacked: each expert's own vector).
// Tensor data is read with pread into buffers kept across tensors, not through the mapping (page
// faults cost more system time than the copy).
#pragma once

#include <string>

#include "formats/gguf.h"
#include "formats/gguf_export.h"

namespace moetool {

// The tensors of `f` in file order: name, ggml shape, role and layer (experts for stacked tensors),
// source_type / source_dtype and type = the stored type; `quantizable` marks the weight matrices.
// A tensor no role maps to (llama3's rope_freqs, anything else) is kept as stored. Throws naming the
// file when no family takes it, or a role's tensor is missing or has another shape than the
// metadata implies.
GGUFExportPlan gguf_file_layout(const GGUFFile& f);

// Writes `plan` (gguf_file_layout with its types chosen) as the GGUF file `out_path`, replacing it
// only with o.overwrite; staged under a temporary name, renamed when complete. `o.encoded` is not
// used (no other encoder reads a GGUF source).
void write_requantized_gguf(const GGUFFile& f, const GGUFExportPlan& plan, const std::string& out_path,
                            const GGUFWriteOptions& o);

}  // namespace moetool
