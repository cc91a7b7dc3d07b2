// formats/checkpoint_writer.h — the one way a pass writes a checkpoint, layer by layer with bounded
// memory: a plan (the target family's tensor table for the output config, with dtypes taken from the
// source model; a pass may change dtypes or replace a tensor by others), then a writer that stages the
// output directory, writes config.json and the tokenizer files, streams the tensors into safetensors
// shards (from several threads if need be), copies what the pass does not touch from the source (dense
// or MoE, per-expert or fused expert layout) and moves the directory into place only when complete.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "formats/family.h"
#include "formats/model.h"
#include "formats/safetensors.h"

namespace moetool {

// A place in a model: role, layer (-1: model-level), routed expert (-1: none).
struct Slot {
  Role role = Role::Embed;
  int64_t layer = -1, expert = -1;
  auto operator<=>(const Slot&) const = default;
};
std::string slot_str(const Slot& s);  // "expert_up of layer 3, expert 7"

// One tensor of the output, in file order.
struct PlannedTensor {
  TensorSpec spec;
  Slot slot;         // the family-table slot it stands for (a replacement keeps the replaced one's)
  bool own = true;   // spec.name is the slot's own tensor; false for a replacement (<module>.qweight, ...)
};

// Every tensor an output checkpoint will hold.
class CheckpointPlan {
 public:
  // The dtype of a tensor the source does not have (may throw to refuse it).
  using DTypeRule = std::function<DType(const TensorSlot&)>;

  // `family`'s tensor table for `config`, in its canonical order. Each tensor takes the dtype of the
  // source tensor of the same role, layer and expert (whatever its shape) when `source` has one, else
  // `new_dtype(slot)`. `source` (may be null) must outlive the plan and its writer.
  CheckpointPlan(const Family& family, ModelConfig config, const Model* source, const DTypeRule& new_dtype);

  const Family& family() const { return *family_; }
  const ModelConfig& config() const { return config_; }
  const Model* source() const { return source_; }
  // The family table (every slot, also those replaced).
  const std::vector<TensorSlot>& table() const { return table_; }

  // The planned tensor of a slot (nullptr when the table has no such slot or it was replaced).
  const TensorSpec* find(const Slot& s) const;
  // Changes the dtype of the table tensor `name`.
  void set_dtype(const std::string& name, DType dt);
  // Puts `specs` in the place of the table tensor `name` (none: the tensor is dropped), e.g. a GPTQ
  // linear's qweight/qzeros/scales/g_idx for its ".weight". They belong to the replaced slot's layer.
  void replace(const std::string& name, std::vector<TensorSpec> specs);

  std::vector<PlannedTensor> tensors() const;  // in file order
  uint64_t bytes() const;                      // tensor data bytes

 private:
  const Family* family_;
  ModelConfig config_;
  const Model* source_;
  std::vector<TensorSlot> table_;
  std::vector<std::vector<TensorSpec>> specs_;  // per table entry: its own spec, or its replacements
  std::map<std::string, size_t> by_name_;       // table name -> entry
  std::map<Slot, size_t> by_slot_;              // slot -> entry
  size_t entry(const std::string& name) const;
};

struct CheckpointWriterOptions {
  bool overwrite = false;                        // replace an existing non-empty output directory
  uint64_t max_shard_bytes = 0;                  // 0: one safetensors file
  std::map<std::string, std::string> metadata;  // provenance for __metadata__ ("format": "pt" added)
  std::string tokenizer_dir;  // copy tokenizer_files() of this directory ("": none)
  // Files written beside config.json after the copied tokenizer files: name, bytes.
  std::vector<std::pair<std::string, std::string>> extra_files;
};

class CheckpointWriter {
 public:
  // Stages `out_dir` (refusing an existing output unless opt.overwrite), writes `config` as
  // config.json, the tokenizer and extra files, and opens the safetensors shards.
  CheckpointWriter(const std::string& out_dir, const nlohmann::ordered_json& config, CheckpointPlan plan,
                   const CheckpointWriterOptions& opt);
  ~CheckpointWriter();  // an unfinished output is removed
  CheckpointWriter(CheckpointWriter&&) noexcept;
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;

  const CheckpointPlan& plan() const;
  // The planned tensor of a slot / of any name; throws naming it when it is not planned.
  const TensorSpec& spec(const Slot& s) const;
  const TensorSpec& spec(const std::string& name) const;

  // The writes below may come from several threads. Each tensor is written exactly once.
  // A tensor of the planned shape; float dtypes are converted to the planned one.
  void write(const Slot& s, const Tensor& t);
  // float32 values in the planned shape, converted to the planned dtype in bounded chunks.
  void write_f32(const Slot& s, const float* v, size_t n);
  void write_f32(const std::string& name, const float* v, size_t n);  // any planned tensor, by name
  void write_zeros(const Slot& s);
  // The planned bytes of tensor `name` (in its planned dtype), whole or in pieces.
  void write(const std::string& name, const void* data, size_t nbytes);
  void write_chunk(const std::string& name, uint64_t byte_offset, const void* data, size_t nbytes);
  // The source tensor at `from` (same shape) written to `out`; its pages released afterwards.
  void copy(const Slot& out, const Slot& from);
  void copy(const Slot& s) { copy(s, s); }
  // Every planned tensor of `layer` (-1: model-level) not written yet that the source holds at the same
  // slot with the same shape, copied (call it after the pass's own writes for the layer).
  void copy_untouched(int64_t layer);
  // Asks the kernel to read ahead the source tensors copy_untouched(layer) would copy.
  void prefetch(int64_t layer) const;

  // Checks every planned tensor was written (else throws naming the first one missing), finishes
  // the shards and moves the directory into place. Returns the file names written (config.json,
  // tokenizer and extra files, shards, index).
  std::vector<std::string> finish();
  uint64_t bytes() const;  // tensor data bytes planned

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetool
