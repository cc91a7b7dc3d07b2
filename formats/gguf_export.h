// formats/gguf_export.h — writes a Hugging Face checkpoint as a GGUF v3 file that llama.cpp loads
// and runs: general.* keys (architecture, file type, quantization version, alignment, provenance),
// the family's hyperparameters (formats/gguf_config.h), the tokenizer as tokenizer.ggml.* (from
// tokenizer.json), and every tensor under llama.cpp's name — q/k rows permuted for the llama
// architecture, routed experts stacked into ffn_{gate,up,down}_exps, quantized to ggml block types
// by formats/ggml_quants.h.
//
// Which type each tensor gets follows llama.cpp's llama-quantize: a file type ("q4_k_m", "q8_0",
// ...) sets the default; llama.cpp's per-tensor rules of that file type (output head Q6_K, some
// attn_v / ffn_down layers Q6_K for *_K_M, attn_k/attn_v Q8_0 for 8-expert models) refine it unless
// `pure`; --tensor-type REGEX=TYPE overrides replace the rules for matching tensors; an exact
// allocation (from a mixed-precision optimizer) wins over all of these; finally a type whose block
// size does not divide the row length falls back as llama.cpp's does (Q4_K → Q5_0, Q5_K → Q5_1,
// Q6_K → Q8_0, else F16). Norms, biases, routers (ffn_gate_inp) and the shared-expert gate stay F32.
//
// Importance (llama.cpp's imatrix): with GGUFExportOptions::importance set, every weight matrix whose
// type uses it (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; not Q8_0 or the float types) is quantized
// with the importance of its input columns (formats/ggml_quants.h); stacked experts with each
// expert's own vector, and by the reference quantizer for an expert without one (calibration never
// routed a token to it). The output head (or the tied embedding) uses the vector given for
// Role::LmHead; an untied token embedding (a lookup, not a linear) never has one. The llama q/k row
// permutation reorders output rows only, so the per-input-column importance applies unchanged.
//
// Writing is streaming: a tensor (an expert, for stacked experts) at a time, in row chunks, under a
// temporary name renamed into place when complete. Nothing is printed; progress goes to a callback.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/family.h"
#include "formats/ggml_types.h"
#include "formats/gguf.h"
#include "formats/model.h"

namespace moetool {

// One llama-quantize file type: its name, llama.cpp's llama_ftype id and default tensor type.
struct GGUFFileType {
  std::string name;  // "q4_k_m"
  uint32_t ftype;    // general.file_type (LLAMA_FTYPE_MOSTLY_Q4_K_M = 15)
  GGMLType base;     // default type of quantizable tensors
};
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

struct GGUFExportOptions {
  std::string file_type = "q8_0";
  std::optional<GGMLType> embed_type, output_type;  // token_embd / output (or the tied embedding)
  std::vector<GGUFTypeRule> tensor_types;           // first match wins
  std::map<std::string, GGMLType> allocation;       // exact types per GGUF tensor name
  bool pure = false;        // no per-tensor rules (llama-quantize --pure)
  bool overwrite = false;   // replace an existing output file
  std::string name;         // general.name (default: the checkpoint directory's name)
  std::map<std::string, std::string> provenance;    // "moetool.version" → ..., written as general.<key>
  std::function<void(const std::string&)> progress;  // one line per tensor
  // Importance of the input columns of one linear: Σx² per input column from calibration (length
  // in_features = ne[0]), for (role, layer, expert) with expert −1 for non-expert linears and the
  // routed expert index otherwise (layer −1 for Role::LmHead); std::nullopt when unknown. A vector
  // of the wrong length, or with a NaN, infinite or negative value, is an error naming the tensor.
  std::function<std::optional<std::vector<float>>(Role role, int64_t layer, int64_t expert)> importance;
};

// What will be written for one GGUF tensor.
struct GGUFTensorPlan {
  std::string name;            // "blk.0.ffn_gate_exps.weight"
  Role role;
  int64_t layer = -1;
  int64_t experts = 0;         // > 0: routed experts stacked along the outermost dimension
  std::vector<int64_t> ne;     // ggml order (ne[0] = row length)
  std::string source_dtype;    // "F32", "BF16", ... ("computed" for extra tensors)
  GGMLType type = GGMLType::F32;
  std::string why;             // how the type was chosen: "file type", "output rule", "override …", ...
  int64_t numel = 0;
  uint64_t bytes = 0;          // in the GGUF file (without alignment padding)
  uint64_t source_bytes = 0;   // in the checkpoint
  bool quantizable = false;    // a weight matrix (not a norm, bias, router or extra tensor)
  // Importance-weighted quantization (GGUFExportOptions::importance; also noted in `why`): whether
  // the tensor (or, stacked, at least one expert) is quantized with an importance vector, and the
  // experts quantized by the reference quantizer for want of one.
  bool importance = false;
  std::vector<int64_t> importance_missing;
};

struct GGUFExportPlan {
  std::string family, arch;
  GGUFFileType file_type;
  std::vector<GGUFTensorPlan> tensors;
  uint64_t bytes = 0, source_bytes = 0;  // tensor data
  int64_t params = 0, quantizable_params = 0;
  double bpw() const;              // bits per weight over all tensors
  double bpw_quantizable() const;  // over the weight matrices only
};

// The tensor list and types for `m` (throws when the family or config cannot be exported, naming
// the checkpoint and the reason; when an override names no tensor it is not an error).
GGUFExportPlan plan_gguf_export(const Model& m, const GGUFExportOptions& o);

// Writes the GGUF file `out_path` (replacing it only with o.overwrite). Returns the plan written.
GGUFExportPlan export_gguf(const Model& m, const std::string& out_path, const GGUFExportOptions& o);

// tokenizer.ggml.* keys for the tokenizer of a model directory, as llama.cpp's
// convert_hf_to_gguf.py writes them: a SentencePiece-style BPE tokenizer.json with byte fallback
// becomes model "llama" (tokens, scores, token types); a byte-level BPE one model "gpt2" (tokens,
// token types, merges, pre-tokenizer name). Special token ids and add_bos/add_eos come from
// tokenizer_config.json / special_tokens_map.json. `vocab_size` pads the vocabulary with
// "[PAD<id>]" tokens. Throws naming the file for a tokenizer llama.cpp could not run.
std::vector<GGUFKV> gguf_tokenizer_metadata(const std::string& model_dir, int64_t vocab_size);

}  // namespace moetool
