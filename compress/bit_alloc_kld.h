// compress/bit_alloc_kld.h — end-to-end sensitivity for the bit allocation (compress/bit_alloc.h):
// the mean KL divergence of the model's next-token distribution, on calibration text, when one
// unit alone is stored as a candidate and everything else stays float; and the same KLD of whole
// allocations (the solved one, every uniform width), used to check the solution end to end.
//
//   ε_u(c) = (1/T) Σ_t KL(p_t ‖ p_t^{u←c})        (nats per token, T calibration tokens)
//
// A unit's KLD already contains how often it is routed and how much its output matters, so the
// knapsack's cost is ε itself (no frequency / weight / exponent factors). KL is second order in a
// small output perturbation (½ δᵀ F δ), so independent units' KLDs add, which is what the knapsack
// sums; interactions (several low-bit units of one layer) are caught by measuring the solved
// allocation as a whole against every uniform width that fits the same budget: the allocation is
// used only when it measures better (Allocation::check).
//
// Around an anchor. Far from float the sum of isolated KLDs misjudges the whole (on the factorized
// TinyStories MoE a --bpw just under uniform int4's size measured 0.65 where int4 gave 0.51): the
// perturbations of many low-bit units interact. Measured instead in the context of an anchor
// allocation A (the uniform width whose size is nearest the budget),
//
//   ε_u^A(c) = (1/T) Σ_t KL(p_t ‖ p_t^{A, u←c})
//
// is the model's KLD with every unit as in A except u, stored as c: the knapsack's sum Σ_u ε_u^A(c_u)
// is then the first-order expansion of the KLD around A (plus a constant), accurate for allocations
// that differ from A in a few units — the ones a budget near A's size asks for.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "compress/bit_alloc.h"
#include "engine/engine.h"
#include "engine/overlay_weights.h"

namespace moetool {

// The float model's log-probabilities on calibration chunks (the first chunks up to a token and
// memory limit), and the KLD of another engine's against them.
class KldReference {
 public:
  // Runs `eng` (the float model, on the CPU) over the chunks within max_tokens and at most max_bytes
  // of stored probabilities (at least one chunk). The residual streams at the layers' inputs are
  // kept too, for as many layers as another max_bytes holds (every k-th layer when not all fit).
  KldReference(const Engine& eng, const std::vector<std::vector<int32_t>>& chunks, int64_t max_tokens,
               int64_t max_bytes = int64_t{512} << 20);
  int64_t tokens() const { return tokens_; }
  size_t num_chunks() const { return chunks_.size(); }
  // Mean over the reference tokens of KL(p_ref ‖ p_eng), in nats. `eng` must compute what the float
  // model does before layer first_layer (only later layers differ): the run starts at the last
  // kept stream at or before it.
  double kld(const Engine& eng, int64_t first_layer = 0) const;
  // Recomputes the kept streams with `eng` (an anchor allocation; the float model again to undo it).
  // The probabilities stay the float model's; kld(e, first_layer) then needs an `e` that computes
  // what `eng` does before first_layer. Streams at layer 0 (the embeddings) never change.
  void restream(const Engine& eng);

 private:
  // Fills the kept streams from `eng` and returns every chunk's final residual stream.
  std::vector<std::vector<float>> run_streams(const Engine& eng);
  std::vector<std::vector<int32_t>> chunks_;
  std::vector<std::vector<std::vector<float>>> streams_;  // per kept layer, per chunk [n, H]
  std::vector<int64_t> kept_layers_;                      // ascending; 0 means "embed"

  std::vector<std::vector<float>> p_;  // per chunk [n, V]: the float model's probabilities
  double neg_entropy_ = 0;             // Σ_t Σ_v p log p
  int64_t tokens_ = 0, vocab_ = 0;
};

class AnchorCache;  // bit_alloc_kld.cc

// The matrices of units stored as chosen: choice[i] ≥ 0 sets unit i's roles to candidate
// choice[i] over `base` — `encoded`'s bytes where it has them (AllocOptions::encoded), else the
// candidate's round trip (RTN / ggml reference rounding); −1 leaves it float.
class AllocOverlay {
 public:
  AllocOverlay(std::shared_ptr<const WeightSource> base, const std::vector<AllocUnit>& units,
               const std::vector<QuantCandidate>& candidates, AllocEncoded encoded = {});
  // An engine over the base weights with the given choices applied; it keeps no layers and rounds
  // a layer's matrices when it loads the layer, so it holds one layer at a time.
  std::unique_ptr<Engine> engine(const std::vector<int>& choice) const;
  // Unit i's matrices at candidate k into `ov` (made now).
  void apply(size_t i, int k, OverlayWeights& ov) const;
  // Engines made from now on share the matrices of units at their `anchor` choice, rounded once and
  // kept in their stored form (QuantCandidate::stored) up to max_bytes.
  void cache_anchor(const std::vector<int>& anchor, int64_t max_bytes);

 private:
  // fn(role, expert) for every matrix of unit i.
  template <class Fn>
  void for_each_matrix(size_t i, const Fn& fn) const;
  std::shared_ptr<const WeightSource> base_;
  const std::vector<AllocUnit>& units_;
  const std::vector<QuantCandidate>& cands_;
  AllocEncoded encoded_;
  std::vector<int> anchor_;
  std::shared_ptr<AnchorCache> cache_;
};

// Replaces every unit's error with its end-to-end KLD at every candidate that fits (NaN otherwise):
// alone over the float model (`anchor` empty), or ε_u^A over the anchor choices (one per unit, −1
// float; `ref` is restreamed over the anchor and back to `eng` afterwards). Runs the (unit,
// candidate) measurements in parallel.
void measure_unit_kld(const Engine& eng, KldReference& ref, const AllocOptions& o, std::vector<AllocUnit>& units,
                      const std::vector<int>& anchor = {});

// `a` with candidate k for every unit in scope that it fits (elsewhere a's choice), finished
// (finish_allocation): the uniform width k as an allocation.
Allocation uniform_allocation(const Allocation& a, size_t k, const AllocOptions& o);

// The uniform width (as uniform_allocation of `a`) whose size over the scope is nearest the budget:
// the anchor of the second measurement (ε_u^A). nullopt when no candidate changes `a`.
std::optional<Allocation> anchor_allocation(const Allocation& a, const AllocOptions& o);

// The solved allocation, `others` (further solutions, with their names), and every uniform candidate
// within the budget measured end to end on the reference; the best is kept (Allocation::trials
// records all, ::choice and ::used become the best's).
void check_allocation(const Engine& eng, const KldReference& ref, const AllocOptions& o, Allocation& a,
                      const std::vector<std::pair<std::string, Allocation>>& others = {});

}  // namespace moetool
