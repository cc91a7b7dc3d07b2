// engine/masked_experts.h — a model with some routed experts taken out of routing: their router
// logits are −∞ (and, for DeepSeek-V3's biased selection, their correction bias), so no token selects
// them and the softmax normaliser runs over the others — exactly the routing of a checkpoint from
// which those experts were removed (compress/expert_rewrite.h). Measures what pruning would cost
// without writing anything (prune's reconstruction method, the rewriter's tests).
#pragma once

#include <memory>
#include <vector>

#include "engine/weights.h"

namespace moetool {

class MaskedExperts final : public WeightSource {
 public:
  // masked[l][e]: expert e of layer l is out (an empty vector for a layer: none).
  MaskedExperts(std::shared_ptr<const WeightSource> base, std::vector<std::vector<bool>> masked);
  const ModelConfig& config() const override { return base_->config(); }
  std::string path() const override { return base_->path(); }
  bool has(Role r, int64_t l, int64_t e) const override { return base_->has(r, l, e); }
  std::shared_ptr<const WeightMatrix> matrix(Role r, int64_t l, int64_t e) const override;
  std::vector<float> vector(Role r, int64_t l, int64_t e) const override;
  void embed_rows(const int32_t* ids, int64_t n, float* out) const override { base_->embed_rows(ids, n, out); }

 private:
  const std::vector<bool>* mask(int64_t l) const;
  std::shared_ptr<const WeightSource> base_;
  std::vector<std::vector<bool>> masked_;
};

}  // namespace moetool
