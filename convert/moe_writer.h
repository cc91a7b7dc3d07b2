// convert/moe_writer.h — the output side of dense → MoE conversion: deriving the target family's
// ModelConfig from the dense one (refusing source/target pairs that cannot reproduce the dense model,
// decided by config features, never by family names), and writing the MoE checkpoint layer by layer
// with bounded memory: config.json from the target family's own writer, tokenizer files copied,
// non-FFN tensors copied from the dense checkpoint, FFN tensors supplied by the conversion method,
// provenance in the safetensors metadata, everything staged and moved into place only when complete.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/family.h"
#include "formats/model.h"
#include "formats/checkpoint_files.h"
#include "formats/model_config.h"

namespace moetool {

// What the conversion wants the MoE layers to look like.
struct MoeTargetRequest {
  std::string family;               // target model_type
  int64_t experts = 0, top_k = 0;   // routed experts per layer, experts per token
  int64_t expert_intermediate = 0;  // width of one routed expert
  int64_t shared_intermediate = 0;  // width of the always-on shared expert (0: none wanted)
};

struct MoeTarget {
  const Family* family = nullptr;
  ModelConfig config;  // parsed back from the config.json that will be written
  // Attention biases the target format has but the dense model lacks: written as zeros (exact).
  std::vector<Role> zero_roles;
  // The family cannot be written without a shared expert but none was wanted: a zero one of width 1
  // (contributes exactly 0).
  bool placeholder_shared = false;
  // Multiply the shared expert's down_proj by this so its contribution is 1× its FFN: 2 when the
  // family scales it by sigmoid(shared_expert_gate · x) (written as zeros, so sigmoid(0) = 0.5).
  double shared_scale = 1.0;
  std::vector<std::string> notes;  // layout decisions, for the report
};

// Throws moetool::Error, saying why, when `dense` cannot become an exact MoE of family `target`
// (with a shared expert when `want_shared`): not a dense model, MLA or q/k-norm attention on one side
// only, FFN biases, no shared expert in the target, attention features the target cannot express.
void check_convertible(const ModelConfig& dense, const Family& target, bool want_shared);
// The target config for `dense` (calls check_convertible first). The result is what the target
// family's parse_config reads back from its own to_config_json, compared with the intended config.
MoeTarget plan_moe_target(const ModelConfig& dense, const MoeTargetRequest& req);

struct MoeWriterOptions {
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;                  // 0: one safetensors file
  std::map<std::string, std::string> metadata;  // provenance for __metadata__
};

class MoeCheckpointWriter {
 public:
  // Stages `out_dir`, writes config.json and copies the tokenizer files. Tensors keep the dense
  // checkpoint's dtypes; new MoE tensors take the dtype of the layer's dense gate_proj.
  MoeCheckpointWriter(const Model& dense, const MoeTarget& target, const std::string& out_dir,
                      const MoeWriterOptions& opt);
  ~MoeCheckpointWriter();
  MoeCheckpointWriter(const MoeCheckpointWriter&) = delete;
  MoeCheckpointWriter& operator=(const MoeCheckpointWriter&) = delete;

  // Embedding, final norm and lm_head copied from the dense checkpoint.
  void copy_model_tensors();
  // Layer l's norms and attention copied (zero biases where planned).
  void copy_layer(int64_t l);
  // The planned dtype / shape of an MoE tensor of layer l.
  DType dtype(Role r, int64_t l, int64_t e = -1) const;
  Shape shape(Role r, int64_t l, int64_t e = -1) const;
  // Writes a tensor given as float32 values [shape] (converted to the planned dtype).
  void write_f32(Role r, int64_t l, int64_t e, const float* v, size_t n);
  // Writes a tensor (converting float dtypes to the planned one); shape must match.
  void write_tensor(Role r, int64_t l, int64_t e, const Tensor& t);
  // Writes zeros.
  void write_zeros(Role r, int64_t l, int64_t e = -1);
  // Checks every planned tensor was written, finishes the files and moves the directory into place.
  // Returns the file names written (relative to the output directory).
  std::vector<std::string> finish();
  uint64_t bytes() const;  // tensor data bytes planned

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetool
