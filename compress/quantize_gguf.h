// compress/quantize_gguf.h — the GGUF quantize pass: which ggml type every tensor of a Hugging Face
// checkpoint gets, as llama.cpp's llama-quantize chooses them, and which tensors are quantized with
// importance; formats/gguf_export.h lays the tensors out and writes the file.
//
// A file type ("q4_k_m", "q8_0", ...) sets the default; llama.cpp's per-tensor rules of that file
// type (output head Q6_K, some attn_v / ffn_down layers Q6_K for *_K_M, attn_k/attn_v Q8_0 for
// 8-expert models) refine it unless `pure`; --tensor-type REGEX=TYPE overrides replace the rules
// for matching tensors; an exact allocation (from a mixed-precision optimizer) wins over all of
// these; finally a type whose block size does not divide the row length falls back as llama.cpp's
// does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, else F16). Norms, biases, routers (ffn_gate_inp)
// and the shared-expert gate stay F32.
//
// Importance (llama.cpp's imatrix): with GGUFExportOptions::importance set, every weight matrix whose
// type uses it (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; not Q8_0 or the float types) is planned
// with the importance of its input columns (formats/gguf_export.h says how it is written).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "formats/ggml_types.h"
#include "formats/gguf.h"
#include "formats/gguf_export.h"
#include "formats/model.h"

namespace moetool {

// Known file types, in llama-quantize's order.
const std::vector<GGUFFileType>& gguf_file_types();
// Parses a file type name, case-insensitive, with llama-quantize's aliases (q4_k = q4_k_m,
// q5_k = q5_k_m). Throws naming `what` and listing the accepted names.
const GGUFFileType& parse_gguf_file_type(const std::string& s, const std::string& what);
// Parses a tensor type for --tensor-type / --embed-type / --output-type ("q6_k", "F16", ...):
// any type formats/ggml_quants.h can write.
GGMLType parse_gguf_tensor_type(const std::string& s, const std::string& what);

struct GGUFTypeRule {
  std::string pattern;  // ECMAScript regex, searched in the GGUF tensor name
  GGMLType type;
};

// The pass's choices, and how the file is written (overwrite, name, provenance, progress, and
// `importance`: the importance vectors, which the plan also uses).
struct GGUFExportOptions : GGUFWriteOptions {
  std::string file_type = "q8_0";
  std::optional<GGMLType> embed_type, output_type;  // token_embd / output (or the tied embedding)
  std::vector<GGUFTypeRule> tensor_types;           // first match wins
  std::map<std::string, GGMLType> allocation;       // exact types per GGUF tensor name
  bool pure = false;                                // no per-tensor rules (llama-quantize --pure)
};

// The tensor list and types for `m` (throws when the family or config cannot be exported, naming
// the checkpoint and the reason; when an override names no tensor it is not an error).
GGUFExportPlan plan_gguf_export(const Model& m, const GGUFExportOptions& o);

// The same for a GGUF file's tensors (formats/gguf_requant.h: requantizing, as llama-quantize does):
// the same rules on its tensors in file order; tensors that are not weight matrices keep their
// stored type. The writer is write_requantized_gguf.
GGUFExportPlan plan_gguf_requantize(const GGUFFile& f, const GGUFExportOptions& o);

// Plans and writes the GGUF file `out_path` (replacing it only with o.overwrite). Returns the plan
// written.
GGUFExportPlan export_gguf(const Model& m, const std::string& out_path, const GGUFExportOptions& o);

}  // namespace moetool
