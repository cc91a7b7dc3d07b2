// compress/lowrank_inputs.cc — per-layer routing counts and Gram matrices for `moetool svd` (see
// lowrank_inputs.h).
#include "compress/lowrank_inputs.h"

#include <Eigen/Dense>

#include "core/error.h"
#include "engine/calibrate_job.h"
#include "engine/text.h"

namespace moetool::svd {

Role linear_input_owner(Role r) {
  switch (r) {
    case Role::K: case Role::V: return Role::Q;
    case Role::Up: return Role::Gate;
    case Role::SharedUp: return Role::SharedGate;
    default: return r;
  }
}

namespace {

using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Routing counts and (optionally) the Grams of one MoE layer's expert inputs.
class GramObserver final : public SweepObserver {
 public:
  GramObserver(int64_t E, bool grams, bool linears) : grams_(grams), linears_(linears) {
    out.freq.assign(static_cast<size_t>(E), 0.0);
  }
  unsigned needs() const override { return kObserveRouter | (grams_ ? kObserveLinearInputs : 0u); }
  void on_router(int64_t, const float*, const int32_t* sel, const float*, int64_t n, int64_t, int64_t k) override {
    for (int64_t i = 0; i < n * k; ++i) out.freq[static_cast<size_t>(sel[i])] += 1;
  }
  void on_linear_input(int64_t, Role role, int64_t e, const float* X, int64_t n, int64_t cols) override {
    if (!grams_ || n == 0) return;
    const bool expert = role == Role::ExpertGate || role == Role::ExpertDown;
    const bool linear = linears_ && e < 0 && role != Role::Router && linear_input_owner(role) == role;
    if (!expert && !linear) return;
    auto& g = expert ? (role == Role::ExpertGate ? out.gram_in : out.gram_mid)[e] : out.gram_linear[role];
    if (g.empty()) g.assign(static_cast<size_t>(cols * cols), 0.0);
    const RowMatD x = Eigen::Map<const RowMatF>(X, n, cols).cast<double>();
    Eigen::Map<RowMatD>(g.data(), cols, cols).noalias() += x.transpose() * x;
  }
  LayerInputs out;

 private:
  bool grams_, linears_;
};

}  // namespace

CalibrationInputs::CalibrationInputs(std::shared_ptr<const WeightSource> w, const std::vector<std::string>& texts,
                                     const std::string& stats, int64_t ctx, int64_t chunks, bool grams,
                                     const DeviceOptions& dev, bool linears)
    : w_(std::move(w)), grams_(grams), linears_(linears), stats_path_(stats) {
  if (!stats.empty()) {
    stats_ = CalibrationStats::load(stats);
    check_stats_model(*stats_, *w_, stats);
    tokens_ = stats_->num_tokens;
    return;
  }
  const auto tok = load_tokenizer(w_->path());
  const auto ch = calibration_chunks(*tok, w_->config().max_position_embeddings, texts, ctx, chunks);
  engine_ = std::make_unique<Engine>(w_, /*keep_layers=*/false, dev);
  sweep_ = std::make_unique<LayerSweep>(*engine_, ch);
  tokens_ = sweep_->num_tokens();
}

CalibrationInputs::~CalibrationInputs() = default;

LayerInputs CalibrationInputs::layer(int64_t l) {
  const ModelConfig& c = w_->config();
  const bool moe = c.moe && c.is_moe_layer(l);
  const int64_t E = moe ? c.moe->num_experts : 0;
  if (stats_) {
    const LayerCalibration& lc = stats_->layers.at(static_cast<size_t>(l));
    LayerInputs in;
    if (grams_ && linears_)
      for (const auto& [k, v] : lc.inputs)
        if (k.layer == l && k.expert < 0 && k.role != Role::Router && linear_input_owner(k.role) == k.role &&
            !v.gram.empty())
          in.gram_linear[k.role] = v.gram;
    if (!moe) return in;
    if (lc.tokens_per_expert.size() != static_cast<size_t>(E))
      fail("svd: ", stats_path_, " has no routing counts for layer ", l, " (recollect with `moetool calibrate` without --no-router)");
    for (int64_t v : lc.tokens_per_expert) in.freq.push_back(static_cast<double>(v));
    if (!grams_) return in;
    for (int64_t e = 0; e < E; ++e) {
      const auto gi = lc.inputs.find(LinearKey{Role::ExpertGate, l, e});
      const auto gm = lc.inputs.find(LinearKey{Role::ExpertDown, l, e});
      if (in.freq[static_cast<size_t>(e)] == 0) continue;  // no token: no Gram (plain SVD for it)
      if (gi == lc.inputs.end() || gi->second.gram.empty() || gm == lc.inputs.end() || gm->second.gram.empty())
        fail("svd: ", stats_path_, " has no Gram matrices for layer ", l, " expert ", e,
             " (collect them with `moetool calibrate --gram`, or give --calib-text)");
      const int64_t H = c.hidden_size, I = c.moe->expert_intermediate;
      if (gi->second.gram.size() != static_cast<size_t>(H * H) || gm->second.gram.size() != static_cast<size_t>(I * I))
        fail("svd: ", stats_path_, ": layer ", l, " expert ", e, " has Gram matrices of ", gi->second.gram.size(), " and ",
             gm->second.gram.size(), " values (expected ", H * H, " and ", I * I, ")");
      in.gram_in[e] = gi->second.gram;
      in.gram_mid[e] = gm->second.gram;
    }
    return in;
  }
  check(l >= next_, "svd: calibration layers asked out of order (", l, " after ", next_ - 1, ")");
  for (; next_ < l; ++next_) sweep_->run(next_, nullptr);
  GramObserver obs(E, grams_, linears_);
  sweep_->run(l, &obs);
  ++next_;
  return std::move(obs.out);
}

}  // namespace moetool::svd
