// convert/moe_writer.h — the output side of dense → MoE conversion: deriving the target family's
// ModelConfig from the dense one (refusing source/target pairs that cannot reproduce the dense model,
// decided by config features, never by family names), the MoE checkpoint on the common checkpoint
// writer (formats/checkpoint_writer.h: config.json from the target family's own writer, non-FFN
// tensors copied from the dense checkpoint, FFN tensors supplied by the conversion method), and the
// report fields every conversion shares.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convert/common.h"
#include "convert/report.h"
#include "formats/checkpoint_writer.h"
#include "formats/family.h"
#include "formats/model.h"
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

// The MoE checkpoint of a conversion, written with the common checkpoint writer: the target family's
// tensors, dtypes of the dense tensors, new ones (router, experts, shared expert) in the dtype of the
// layer's dense gate_proj; tokenizer files copied; provenance (`opt.metadata`, the seed and the
// conversion line `convert_line`) in the safetensors metadata.
class MoeCheckpointWriter : public CheckpointWriter {
 public:
  MoeCheckpointWriter(const Model& dense, const MoeTarget& target, const std::string& out_dir,
                      const ConvertOptions& opt, const std::string& convert_line);

  // Layer l (-1: model-level tensors): what the dense checkpoint provides copied (embeddings, norms,
  // attention), and the tensors the target plans as zeros (attention biases the dense model lacks, a
  // placeholder shared expert, the shared-expert gate) written; layer l + 1 read ahead.
  void copy_layer(int64_t l);

 private:
  MoeTarget target_;
};

// The report fields every conversion fills the same way (method, paths, families, sizes, notes).
ConvertReport new_report(const char* method, const std::string& source, const std::string& output,
                         const ModelConfig& dense, const MoeTarget& t, const ConvertOptions& opt);
// Keeps a warning in the report and passes it to opt.warn.
void add_warning(ConvertReport& rep, const ConvertOptions& opt, const std::string& w);
// Finishes the checkpoint and fills the report's files, bytes, parameter counts and time since t0.
void finish_report(ConvertReport& rep, MoeCheckpointWriter& w, const MoeTarget& t, Clock::time_point t0);

}  // namespace moetool
