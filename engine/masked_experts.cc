// engine/masked_experts.cc — routed experts taken out of routing (see masked_experts.h).
#include "engine/masked_experts.h"

#include <limits>

namespace moetool {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A router whose outputs for the masked experts are −∞.
class MaskedRouter final : public WeightMatrix {
 public:
  MaskedRouter(std::shared_ptr<const WeightMatrix> r, const std::vector<bool>& m) : r_(std::move(r)), m_(m) {}
  int64_t rows() const override { return r_->rows(); }
  int64_t cols() const override { return r_->cols(); }
  void matmul(const float* X, int64_t n, float* Y, float beta) const override {
    r_->matmul(X, n, Y, beta);
    const int64_t E = rows();
    for (int64_t t = 0; t < n; ++t)
      for (int64_t e = 0; e < E; ++e)
        if (m_[static_cast<size_t>(e)]) Y[t * E + e] = -kInf;
  }
  void to_dense(float* out) const override { r_->to_dense(out); }
  std::string storage() const override { return r_->storage() + " (experts masked)"; }
  uint64_t stored_bytes() const override { return r_->stored_bytes(); }

 private:
  std::shared_ptr<const WeightMatrix> r_;
  std::vector<bool> m_;
};

}  // namespace

MaskedExperts::MaskedExperts(std::shared_ptr<const WeightSource> base, std::vector<std::vector<bool>> masked)
    : base_(std::move(base)), masked_(std::move(masked)) {}

const std::vector<bool>* MaskedExperts::mask(int64_t l) const {
  if (l < 0 || l >= static_cast<int64_t>(masked_.size()) || masked_[static_cast<size_t>(l)].empty()) return nullptr;
  return &masked_[static_cast<size_t>(l)];
}

std::shared_ptr<const WeightMatrix> MaskedExperts::matrix(Role r, int64_t l, int64_t e) const {
  auto m = base_->matrix(r, l, e);
  const auto* mk = r == Role::Router ? mask(l) : nullptr;
  return mk ? std::make_shared<MaskedRouter>(m, *mk) : m;
}

std::vector<float> MaskedExperts::vector(Role r, int64_t l, int64_t e) const {
  auto v = base_->vector(r, l, e);
  if (const auto* mk = r == Role::RouterBias ? mask(l) : nullptr)
    for (size_t i = 0; i < v.size() && i < mk->size(); ++i)
      if ((*mk)[i]) v[i] = -kInf;
  return v;
}

}  // namespace moetool
