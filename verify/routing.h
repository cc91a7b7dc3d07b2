// verify/routing.h — routing fidelity for `moetool verify`: per MoE layer, how often the candidate's
// router picks the same experts as the base's for the same token, how far its router distribution
// moved, and how the expert load shifted. Candidates with fewer or merged experts are compared
// through the expert mapping their provenance records (moetool.prune.kept_experts,
// moetool.merge.groups); where no mapping exists the layer says so and gets no fidelity numbers.
//
// Definitions (per MoE layer, per token t; every token of every chunk is compared):
// - φ maps a base expert to the candidate expert that stands for it (identity when both have E
//   experts and no provenance says otherwise; prune: kept id → its new index, dropped → none;
//   merge: each member of group j → j).
// - S_b, S_c: the experts each router chose (top-k). same_set: φ(S_b) = S_c as sets (base choices
//   with no image dropped from φ(S_b)); Jaccard: |φ(S_b) ∩ S_c| / |φ(S_b) ∪ S_c|.
// - router KL: p = softmax(router logits) of each model, in double; the base's is carried to the
//   candidate's experts, q_j = Σ_{φ(e)=j} p_b,e / Σ_{φ(e) defined} p_b,e; KL(q ‖ p_c) in nats.
// - load: share of routing slots (token × k) per expert; the base's also carried through φ
//   (dropped_share: the base's share on experts with no image).
// - route mismatch (VerifyStats::route_mismatch, --max-route-mismatch): 1 − Σ same-set tokens /
//   Σ tokens over the layers with a mapping.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "verify/metrics.h"

namespace moetool {

// The candidate's experts in terms of the base's, per MoE layer: slots[j] = base experts that
// candidate expert j stands for. Layers absent from `layers` map by identity when the expert
// counts agree (and have no mapping otherwise).
struct ExpertMapping {
  std::string source;  // "moetool.prune.kept_experts" | "moetool.merge.groups" | "" (identity only)
  std::map<int64_t, std::vector<std::vector<int64_t>>> layers;
};

// The mapping recorded in a candidate's metadata (safetensors __metadata__). A merge's groups win
// over a prune's kept list (a merge writes only its own). Throws moetool::Error naming `what` when
// a recorded mapping is not valid JSON of the documented shape.
ExpertMapping expert_mapping_from_metadata(const std::map<std::string, std::string>& metadata,
                                           const std::string& what);
// The metadata of the checkpoint at `path` (its first safetensors file); empty for GGUF files.
std::map<std::string, std::string> checkpoint_metadata(const std::string& path);

struct LayerRouting {
  int64_t layer = 0;
  int64_t tokens = 0;  // tokens compared (or, with no base router, routed by the candidate)
  int64_t base_experts = 0, cand_experts = 0, base_k = 0, cand_k = 0;  // 0: that model has no router here
  std::string mapping;  // "identity" | "prune" | "merge" | "" (none: see note)
  std::string note;     // why this layer has no fidelity numbers
  double same_set = kNaN, jaccard = kNaN, router_kl = kNaN, dropped_share = kNaN;
  std::vector<double> base_load;         // per base expert
  std::vector<double> cand_load;         // per candidate expert
  std::vector<double> base_load_mapped;  // per candidate expert, the base's load through φ (empty: no mapping)
  bool mapped() const { return !mapping.empty(); }
};

struct RoutingFidelity {
  std::string mapping_source;  // ExpertMapping::source
  std::vector<LayerRouting> layers;  // ascending
  double mismatch = kNaN;            // route mismatch over mapped layers (NaN: none)
  bool empty() const { return layers.empty(); }
};

// Accumulates routing fidelity chunk by chunk from both models' router outputs.
class RoutingComparison {
 public:
  explicit RoutingComparison(ExpertMapping m) : map_(std::move(m)) {}
  // One layer of one chunk: router logits [n, E] and chosen experts [n, k] of each model. A model
  // with no router in this layer passes E = 0 (its pointers are not read).
  void add(int64_t layer, const float* base_logits, const int32_t* base_sel, int64_t Eb, int64_t kb,
           const float* cand_logits, const int32_t* cand_sel, int64_t Ec, int64_t kc, int64_t n);
  RoutingFidelity finish() const;

 private:
  struct Acc {
    int64_t Eb = 0, Ec = 0, kb = 0, kc = 0, tokens = 0, same = 0, kl_rows = 0;
    double jaccard = 0, kl = 0;
    std::vector<int64_t> base_count, cand_count;
    std::vector<int64_t> phi;  // base expert → candidate expert (−1: none); empty: no mapping
    std::string mapping, note;
  };
  Acc& layer(int64_t l, int64_t Eb, int64_t kb, int64_t Ec, int64_t kc);
  ExpertMapping map_;
  std::map<int64_t, Acc> layers_;
};

// Forwards every callback to `inner` (may be null) and asks for router callbacks too: the base
// class of the two routing observers, so they wrap the hidden-state observers of verify.
class ForwardingObserver : public LayerObserver {
 public:
  explicit ForwardingObserver(LayerObserver* inner) : inner_(inner) {}
  unsigned needs() const override { return (inner_ ? inner_->needs() : 0u) | kObserveRouter; }
  bool on_hidden_device(int64_t l, const float* dh, int64_t n, int64_t H) override {
    return inner_ && (inner_->needs() & kObserveHidden) ? inner_->on_hidden_device(l, dh, n, H) : true;
  }
  void on_hidden(int64_t l, const float* h, int64_t n, int64_t H) override {
    if (inner_ && (inner_->needs() & kObserveHidden)) inner_->on_hidden(l, h, n, H);
  }

 protected:
  LayerObserver* inner_;
};

// Keeps the base's router outputs of one chunk, per layer.
class RoutingRecorder final : public ForwardingObserver {
 public:
  using ForwardingObserver::ForwardingObserver;
  void on_router(int64_t l, const float* logits, const int32_t* sel, const float* w, int64_t n, int64_t E,
                 int64_t k) override;
  struct Layer {
    std::vector<float> logits;
    std::vector<int32_t> sel;
    int64_t n = 0, E = 0, k = 0;
  };
  const std::map<int64_t, Layer>& layers() const { return layers_; }

 private:
  std::map<int64_t, Layer> layers_;
};

// Compares the candidate's router outputs with a RoutingRecorder's as they come; finish_chunk()
// adds the layers where only the base routed.
class RoutingComparer final : public ForwardingObserver {
 public:
  RoutingComparer(LayerObserver* inner, const RoutingRecorder& base, RoutingComparison& cmp)
      : ForwardingObserver(inner), base_(base), cmp_(cmp) {}
  void on_router(int64_t l, const float* logits, const int32_t* sel, const float* w, int64_t n, int64_t E,
                 int64_t k) override;
  void finish_chunk();

 private:
  const RoutingRecorder& base_;
  RoutingComparison& cmp_;
  std::map<int64_t, bool> seen_;
};

}  // namespace moetool
