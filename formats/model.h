// formats/model.h — a checkpoint together with its family and parsed config: the one way the rest
// of moetool looks up weights by role (layer, expert), independent of tensor names, of the expert
// layout on disk (per-expert tensors or fused 3-D ones) and of how tied embeddings were saved.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "formats/checkpoint.h"
#include "formats/compressed_tensors.h"
#include "formats/df11.h"
#include "formats/family.h"
#include "formats/fp8.h"
#include "formats/gptq.h"
#include "formats/lowrank.h"

namespace moetool {

// One disagreement between config.json and the tensors present.
struct Inconsistency {
  enum class Kind { Missing, Unexpected, WrongShape, WrongDType };
  Kind kind;
  std::string tensor;
  std::string detail;  // "expected [128, 64], got [64, 128]"
  std::string message() const;
};

class Model {
 public:
  // Opens the checkpoint, reads config.json, picks the family by model_type, parses the config.
  static Model open(const std::string& path);
  Model(Checkpoint ckpt, const Family& family, ModelConfig config);

  const Checkpoint& checkpoint() const { return ckpt_; }
  const Family& family() const { return *family_; }
  const ModelConfig& config() const { return config_; }

  // The weight for a role; throws moetool::Error naming the checkpoint and tensor if absent or of
  // the wrong shape. Routed-expert roles read per-expert tensors or slice the fused layout.
  // Embed/LmHead resolve tied embeddings (whichever of the two is stored). A linear stored low-rank
  // (lowrank()) has no such tensor: weight() throws saying so (read it through WeightSource::matrix).
  Tensor weight(Role r, int64_t layer = -1, int64_t expert = -1) const;
  std::optional<Tensor> find(Role r, int64_t layer = -1, int64_t expert = -1) const;
  // Whether find() has a tensor for the role, answered from the tensor names alone: nothing is
  // read, decoded or dequantized (FP8, compressed-tensors and DF11 tensors included).
  bool has(Role r, int64_t layer = -1, int64_t expert = -1) const;

  // A linear stored as GPTQ tensors (formats/gptq.h) instead of "<module>.weight"; nullopt when the
  // role is stored as a float weight or absent. Throws on inconsistent GPTQ tensors.
  std::optional<GPTQLinear> gptq(Role r, int64_t layer = -1, int64_t expert = -1) const;
  // A linear stored as low-rank factors (formats/lowrank.h: U·V, + base) instead of
  // "<module>.weight"; nullopt when config.json's lowrank block does not factor the role's module.
  // Throws on inconsistent factors (missing, wrong shape, "<module>.weight" stored as well).
  std::optional<LowRankLinear> lowrank(Role r, int64_t layer = -1, int64_t expert = -1) const;
  // config.json's lowrank block (parsed once, at construction), if any.
  const std::optional<LowRankLayout>& lowrank_layout() const { return lowrank_; }
  // config.json's block-FP8 quantization_config (formats/fp8.h), if any. Then find() and weight()
  // return every FP8 weight that has a "<name>_scale_inv" dequantized (F32, exact), so every pass,
  // the checker and the engine read FP8 checkpoints as float ones.
  const std::optional<FP8Config>& fp8() const { return fp8_; }
  // config.json's compressed-tensors pack-quantized config (formats/compressed_tensors.h), if any;
  // find() and weight() then return packed linears dequantized (F32, exact) in the same way.
  const std::optional<CTConfig>& compressed_tensors() const { return ct_; }
  // Whether the checkpoint holds DF11-coded BF16 tensors (formats/df11.h: lossless; find() decodes
  // them to BF16, so every command reads them as the BF16 model).
  bool df11() const { return df11_block_.has_value(); }
  // The DF11 block size (0 without DF11) and, when the role's weight is one whole DF11-coded tensor
  // (not a slice of fused experts, not the embedding or head), that tensor's name: for a backend
  // that decodes the code itself (kernels/linear_df11.h).
  int64_t df11_block() const { return df11_block_.value_or(0); }
  std::optional<std::string> df11_tensor(Role r, int64_t layer = -1, int64_t expert = -1) const;
  // Whether the role's tensor is stored quantized in one of those two ways (and find() dequantizes it).
  bool dequantized_on_read(Role r, int64_t layer = -1, int64_t expert = -1) const;
  // The float dtype a pass writes such dequantized weights in: config.json's torch_dtype / dtype
  // (float32, float16, bfloat16; BF16 when absent, as FP8 and int releases are BF16 models).
  DType dequantized_dtype() const;

  // Every disagreement between config and tensors (empty when the checkpoint is consistent). GPTQ
  // and low-rank linears count as present when their tensors are consistent (inconsistent ones are
  // reported as WrongShape with the reason).
  std::vector<Inconsistency> check() const;
  // Whether layer `layer` stores its experts in the fused 3-D layout.
  bool fused_experts(int64_t layer) const;

 private:
  Checkpoint ckpt_;
  const Family* family_;
  ModelConfig config_;
  std::vector<TensorSlot> slots_;
  std::optional<LowRankLayout> lowrank_;
  // The scales of an FP8 weight `name` with `cols` columns: block FP8 (quantization_config fp8) or a
  // compressed-tensors float-quantized module (one scale per output row); nullopt when neither applies.
  struct Fp8Scales {
    std::string name;
    int64_t block_rows, block_cols;
  };
  std::optional<Fp8Scales> fp8_scales(const std::string& name, int64_t cols) const;
  std::optional<FP8Config> fp8_;
  std::optional<CTConfig> ct_;
  std::optional<int64_t> df11_block_;  // config.json moetool_df11 (formats/df11.h)
  // Whether `name` is stored, plainly or DF11-coded.
  bool has_stored(const std::string& name) const;
  // The stored tensor `name`: DF11 decoded to BF16, block FP8 dequantized, else as stored.
  Tensor read_stored(const std::string& name) const;
};

// Parameter counts of a config (tied embedding counted once).
struct ParamCount {
  int64_t total = 0;
  int64_t active = 0;  // per token: routed experts counted top_k times, not num_experts
};
ParamCount count_params(const Family& f, const ModelConfig& c);

}  // namespace moetool
