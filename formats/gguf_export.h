// formats/gguf_export.h — writes a Hugging Face checkpoint as a GGUF v3 file that llama.cpp loads
// and runs, from a per-tensor plan: general.* keys (architecture, file type, quantization version,
// alignment, provenance), the family's hyperparameters (formats/gguf_config.h), the tokenizer as
// tokenizer.ggml.* (from tokenizer.json), and every tensor under llama.cpp's name — q/k rows
// permuted for the llama architecture, routed experts stacked into ffn_{gate,up,down}_exps, encoded
// to the planned ggml block types by formats/ggml_quants.h.
//
// Which type each tensor gets is the GGUF quantize pass's choice (compress/quantize_gguf.h:
// llama-quantize's file types and per-tensor rules): gguf_tensor_layout gives the tensors it
// chooses for, write_gguf writes what it chose.
//
// Importance (llama.cpp's imatrix): a tensor planned with `importance` is quantized with the
// importance of its input columns (formats/ggml_quants.h); stacked experts with each expert's own
// vector, and by the reference quantizer for the experts in `importance_missing` (calibration never
// routed a token to them). The output head (or the tied embedding) uses the vector given for
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
#include <utility>
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

// What will be written for one GGUF tensor.
struct GGUFTensorPlan {
  std::string name;            // "blk.0.ffn_gate_exps.weight"
  Role role;
  int64_t layer = -1;
  int64_t experts = 0;         // > 0: routed experts stacked along the outermost dimension
  std::vector<int64_t> ne;     // ggml order (ne[0] = row length)
  std::string source_dtype;    // "F32", "BF16", ... ("computed" for extra tensors; a ggml type name from a GGUF)
  std::optional<GGMLType> source_type;  // the stored type when the source is a GGUF file (requantizing)
  GGMLType type = GGMLType::F32;
  std::string why;             // how the type was chosen: "file type", "output rule", "override …", ...
  int64_t numel = 0;
  uint64_t bytes = 0;          // in the GGUF file (without alignment padding)
  uint64_t source_bytes = 0;   // in the checkpoint
  bool quantizable = false;    // a weight matrix (not a norm, bias, router or extra tensor)
  // Importance-weighted quantization (also noted in `why`): whether the tensor (or, stacked, at
  // least one expert) is quantized with an importance vector, and the experts quantized by the
  // reference quantizer for want of one.
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
  // Sets every tensor's numel and bytes (from its type and ne) and the plan's totals.
  void count_sizes();
};

// The GGUF tensors of `m` in the order they are written: llama.cpp's names and ggml shapes, routed
// experts stacked into one tensor at the position of their first expert, extra tensors (rope_freqs,
// computed, F32) after the model-level ones. Types are F32 and sizes unset; `quantizable` marks
// the weight matrices. Throws naming the checkpoint when the family or config cannot be exported.
GGUFExportPlan gguf_tensor_layout(const Model& m);

// Importance of the input columns of one linear: Σx² per input column from calibration (length
// in_features = ne[0]), for (role, layer, expert) with expert −1 for non-expert linears and the
// routed expert index otherwise (layer −1 for Role::LmHead); std::nullopt when unknown. A vector
// of the wrong length, or with a NaN, infinite or negative value, is an error naming the tensor.
using GGUFImportance =
    std::function<std::optional<std::vector<float>>(Role role, int64_t layer, int64_t expert)>;

// The (role, layer) whose importance applies to a weight matrix: the output head's for the output
// (or the tied embedding, which is the output head too); none for an untied token embedding, a
// lookup table whose "input" is one-hot (llama.cpp's imatrix has no entry for it either).
std::optional<std::pair<Role, int64_t>> gguf_importance_key(const GGUFTensorPlan& t, const ModelConfig& c);

// The importance vector of tensor `t` (expert >= 0: of that routed expert's slice) from
// `importance`, checked: one finite non-negative value per input column (ne[0]). nullopt when the
// tensor has no importance key or the callback has no vector.
std::optional<std::vector<float>> gguf_tensor_importance(const GGUFImportance& importance, const GGUFTensorPlan& t,
                                                         const ModelConfig& c, int64_t expert);

// llama-quantize's progress line for tensor i of n (`width` digits: of n), with how it used importance
// (`importance_given`: the pass has importance vectors).
std::string gguf_progress_line(const GGUFTensorPlan& t, size_t i, size_t n, int width, bool importance_given,
                               const ModelConfig& c);

// "2, 5" — at most eight expert indices, then how many in all (notes naming experts).
std::string expert_index_list(const std::vector<int64_t>& v);

struct GGUFWriteOptions {
  bool overwrite = false;   // replace an existing output file
  std::string name;         // general.name (default: the checkpoint directory's name)
  std::map<std::string, std::string> provenance;    // "moetool.version" → ..., written as general.<key>
  std::function<void(const std::string&)> progress;  // one line per tensor
  GGUFImportance importance;  // the vectors of the tensors planned with importance
  // Rows already encoded in the planned type by another quantizer (GPTQ over ggml blocks,
  // compress/quantize_gguf_gptq.h) for a weight matrix (expert ≥ 0: that routed expert's slice):
  // the checkpoint matrix's rows, in its own row order (the writer applies the llama q/k row
  // permutation), rows × ggml_row_size(type, ne[0]) bytes. nullopt: quantized here as planned.
  std::function<std::optional<std::vector<uint8_t>>(const GGUFTensorPlan& t, int64_t expert)> encoded;
};

// Writes `plan` (a layout of `m` with its types chosen) as the GGUF file `out_path`, replacing it
// only with o.overwrite.
void write_gguf(const Model& m, const GGUFExportPlan& plan, const std::string& out_path, const GGUFWriteOptions& o);

// tokenizer.ggml.* keys for the tokenizer of a model directory, as llama.cpp's
// convert_hf_to_gguf.py writes them: a SentencePiece-style BPE tokenizer.json with byte fallback
// becomes model "llama" (tokens, scores, token types); a byte-level BPE one model "gpt2" (tokens,
// token types, merges, pre-tokenizer name). Special token ids and add_bos/add_eos come from
// tokenizer_config.json / special_tokens_map.json. `vocab_size` pads the vocabulary with
// "[PAD<id>]" tokens. Throws naming the file for a tokenizer llama.cpp could not run.
std::vector<GGUFKV> gguf_tokenizer_metadata(const std::string& model_dir, int64_t vocab_size);

}  // namespace moetool
