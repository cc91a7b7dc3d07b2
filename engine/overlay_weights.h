// engine/overlay_weights.h — a WeightSource that answers some matrices from an overlay (quantized
// or perturbed copies) and everything else from a base source: lets the engine run a layer with
// one linear replaced (bit allocation's measurements, GPTQ's sequential calibration).
#pragma once

#include <map>
#include <memory>
#include <tuple>
#include <utility>

#include "engine/weights.h"

namespace moetool {

class OverlayWeights final : public WeightSource {
 public:
  using Mat = std::shared_ptr<const WeightMatrix>;
  explicit OverlayWeights(std::shared_ptr<const WeightSource> base) : base_(std::move(base)) {}
  void set(Role r, int64_t l, int64_t e, Mat m) { over_[{r, l, e}] = std::move(m); }
  void clear() { over_.clear(); }
  void drop_layer(int64_t l) {
    for (auto it = over_.begin(); it != over_.end();) it = std::get<1>(it->first) == l ? over_.erase(it) : std::next(it);
  }
  const ModelConfig& config() const override { return base_->config(); }
  std::string path() const override { return base_->path(); }
  bool has(Role r, int64_t l, int64_t e) const override { return over_.count({r, l, e}) || base_->has(r, l, e); }
  Mat matrix(Role r, int64_t l, int64_t e) const override {
    auto it = over_.find({r, l, e});
    return it != over_.end() ? it->second : base_->matrix(r, l, e);
  }
  std::vector<float> vector(Role r, int64_t l, int64_t e) const override { return base_->vector(r, l, e); }
  void embed_rows(const int32_t* ids, int64_t n, float* out) const override { base_->embed_rows(ids, n, out); }

 private:
  std::shared_ptr<const WeightSource> base_;
  std::map<std::tuple<Role, int64_t, int64_t>, Mat> over_;
};

}  // namespace moetool
