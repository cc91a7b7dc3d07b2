// compress/bit_alloc_kld.cc — end-to-end KLD of units and of whole allocations on calibration text
// (see bit_alloc_kld.h).
#include "compress/bit_alloc_kld.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <tuple>

#include "core/error.h"
#include "kernels/linear.h"

namespace moetool {

namespace {

// log Σ_v exp(x_v) of one row (double accumulation).
double log_sum_exp(const float* x, int64_t V) {
  const float mx = *std::max_element(x, x + V);
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(x[v] - mx);
  return mx + std::log(s);
}

bool expert_role(Role r) { return r == Role::ExpertGate || r == Role::ExpertUp || r == Role::ExpertDown; }

// Matrix (r, l, e) = W stored as candidate k (encoded, or rounded) and read back, as a dense f32 matrix.
std::shared_ptr<const WeightMatrix> rounded(const WeightMatrix& W, const AllocEncoded& enc,
                                            const std::vector<QuantCandidate>& cands, size_t k, Role r, int64_t l,
                                            int64_t e, const std::string& name) {
  Tensor d = Tensor::zeros(DType::F32, {W.rows(), W.cols()});
  W.to_dense(d.as<float>());
  Tensor q = Tensor::zeros(DType::F32, {W.rows(), W.cols()});
  candidate_roundtrip(enc, cands, k, r, l, e, d.as<float>(), W.rows(), W.cols(), q.as<float>());
  return make_dense_matrix(q, name);
}

}  // namespace

namespace {

// Layers `from` .. L−1 on every chunk's stream h[c] (the input of layer `from`, positions 0 .. n_c−1)
// in place, layer-major: each layer is loaded once for all chunks (an engine that does not keep
// layers holds one at a time); `keep(l)` sees the streams before layer l runs.
template <class Keep>
void run_layers(const Engine& eng, int64_t from, std::vector<std::vector<float>>& h, const Keep& keep) {
  const ModelConfig& c = eng.config();
  for (int64_t l = from; l < c.num_layers; ++l) {
    keep(l, h);
    auto lw = eng.load_layer(l);
    for (auto& x : h) {
      const int64_t n = static_cast<int64_t>(x.size()) / c.hidden_size;
      KVCache cache = eng.new_cache(n, l);
      eng.run_layer(l, *lw, x.data(), n, 0, cache, nullptr);
    }
  }
}

}  // namespace

KldReference::KldReference(const Engine& eng, const std::vector<std::vector<int32_t>>& chunks, int64_t max_tokens,
                           int64_t max_bytes) {
  const ModelConfig& c = eng.config();
  vocab_ = c.vocab_size;
  for (const auto& ch : chunks) {
    const int64_t n = static_cast<int64_t>(ch.size());
    if (!chunks_.empty() && (tokens_ + n > max_tokens || (tokens_ + n) * vocab_ * 4 > max_bytes)) break;
    chunks_.push_back(ch);
    tokens_ += n;
  }
  if (chunks_.empty()) fail("bit allocation: needs calibration text (--calib-text) to measure the KLD");
  // Streams of every k-th layer input within max_bytes (layer 0's: the embeddings).
  const int64_t per_layer = tokens_ * c.hidden_size * 4;
  const int64_t fit = std::max<int64_t>(1, max_bytes / std::max<int64_t>(per_layer, 1));
  const int64_t step = std::max<int64_t>(1, (c.num_layers + fit - 1) / fit);
  for (int64_t l = 0; l < c.num_layers; l += step) kept_layers_.push_back(l);
  std::vector<std::vector<float>> h = run_streams(eng);
  for (size_t i = 0; i < chunks_.size(); ++i) {
    const int64_t n = static_cast<int64_t>(chunks_[i].size());
    std::vector<float> logits(static_cast<size_t>(n * vocab_));
    eng.head(h[i].data(), n, logits.data());
    std::vector<float> p(logits.size());
    for (int64_t t = 0; t < n; ++t) {
      const float* x = logits.data() + t * vocab_;
      const double lse = log_sum_exp(x, vocab_);
      double s = 0;  // Σ_v p_v log p_v
      for (int64_t v = 0; v < vocab_; ++v) {
        const double lp = x[v] - lse;
        p[static_cast<size_t>(t * vocab_ + v)] = static_cast<float>(std::exp(lp));
        s += std::exp(lp) * lp;
      }
      neg_entropy_ += s;
    }
    p_.push_back(std::move(p));
  }
}

std::vector<std::vector<float>> KldReference::run_streams(const Engine& eng) {
  const ModelConfig& c = eng.config();
  streams_.assign(kept_layers_.size(), {});
  std::vector<std::vector<float>> h(chunks_.size());
  for (size_t i = 0; i < chunks_.size(); ++i) {
    h[i].resize(chunks_[i].size() * static_cast<size_t>(c.hidden_size));
    eng.embed(chunks_[i].data(), static_cast<int64_t>(chunks_[i].size()), h[i].data());
  }
  size_t next = 0;
  run_layers(eng, 0, h, [&](int64_t l, const std::vector<std::vector<float>>& x) {
    if (next < kept_layers_.size() && kept_layers_[next] == l) streams_[next++] = x;
  });
  return h;
}

void KldReference::restream(const Engine& eng) { run_streams(eng); }

// KL(p ‖ q) = Σ p log p − Σ p log q, and Σ_v p_v log q_v = Σ_v p_v y_v − lse(y) for q = softmax(y).
double KldReference::kld(const Engine& eng, int64_t first_layer) const {
  size_t k = 0;  // the last kept stream at or before first_layer
  while (k + 1 < kept_layers_.size() && kept_layers_[k + 1] <= first_layer) ++k;
  std::vector<std::vector<float>> h = streams_[k];
  run_layers(eng, kept_layers_[k], h, [](int64_t, const auto&) {});
  double cross = 0;
  std::vector<float> logits;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const int64_t n = static_cast<int64_t>(chunks_[c].size());
    logits.resize(static_cast<size_t>(n * vocab_));
    eng.head(h[c].data(), n, logits.data());
    for (int64_t t = 0; t < n; ++t) {
      const float* y = logits.data() + t * vocab_;
      const float* p = p_[c].data() + t * vocab_;
      double py = 0;
      for (int64_t v = 0; v < vocab_; ++v) py += static_cast<double>(p[v]) * y[v];
      cross += py - log_sum_exp(y, vocab_);
    }
  }
  return (neg_entropy_ - cross) / static_cast<double>(tokens_);
}

AllocOverlay::AllocOverlay(std::shared_ptr<const WeightSource> base, const std::vector<AllocUnit>& units,
                           const std::vector<QuantCandidate>& candidates, AllocEncoded encoded)
    : base_(std::move(base)), units_(units), cands_(candidates), encoded_(std::move(encoded)) {}

namespace {

}  // namespace

// Rounded matrices of an anchor allocation in their stored form, shared by every pass measured around
// it, while they fit a byte budget (a matrix beyond it is rounded again by each pass that needs it).
class AnchorCache {
 public:
  explicit AnchorCache(int64_t max_bytes) : max_bytes_(max_bytes) {}
  using Key = std::tuple<Role, int64_t, int64_t>;
  std::shared_ptr<const WeightMatrix> find(const Key& k) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = m_.find(k);
    return it == m_.end() ? nullptr : it->second;
  }
  // m (just made); a matrix another thread stored first wins, so every pass multiplies by one.
  std::shared_ptr<const WeightMatrix> keep(const Key& k, std::shared_ptr<const WeightMatrix> m) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = m_.find(k);
    if (it != m_.end()) return it->second;
    const auto b = static_cast<int64_t>(m->stored_bytes());
    if (bytes_ + b > max_bytes_) return m;
    bytes_ += b;
    m_.emplace(k, m);
    return m;
  }

 private:
  std::mutex mu_;
  std::map<Key, std::shared_ptr<const WeightMatrix>> m_;
  int64_t bytes_ = 0, max_bytes_;
};

namespace {

// The base weights with some matrices rounded to a candidate when they are asked for, not before:
// an engine that does not keep layers holds one layer's rounded matrices at a time — except the
// anchor's, which the cache keeps in their stored form across passes.
class RoundedWeights final : public WeightSource {
 public:
  RoundedWeights(std::shared_ptr<const WeightSource> base, std::shared_ptr<AnchorCache> cache,
                 const std::vector<QuantCandidate>& cands, const AllocEncoded& encoded)
      : base_(std::move(base)), cache_(std::move(cache)), cands_(cands), encoded_(encoded) {}
  // Candidate k; cached: the matrix is the anchor's (the cache, when there is one, holds it).
  void set(Role r, int64_t l, int64_t e, size_t k, std::string name, bool cached = false) {
    over_[{r, l, e}] = {k, std::move(name), cached && cache_};
  }
  const ModelConfig& config() const override { return base_->config(); }
  std::string path() const override { return base_->path(); }
  bool has(Role r, int64_t l, int64_t e) const override { return base_->has(r, l, e); }
  std::shared_ptr<const WeightMatrix> matrix(Role r, int64_t l, int64_t e) const override {
    const auto it = over_.find({r, l, e});
    if (it == over_.end()) return base_->matrix(r, l, e);
    const Over& o = it->second;
    if (!o.cached) return rounded(*base_->matrix(r, l, e), encoded_, cands_, o.k, r, l, e, o.name);
    if (auto m = cache_->find(it->first)) return m;
    const auto W = base_->matrix(r, l, e);
    std::vector<float> d(static_cast<size_t>(W->rows() * W->cols()));
    W->to_dense(d.data());
    return cache_->keep(it->first, candidate_stored(encoded_, cands_, o.k, r, l, e, d.data(), W->rows(), W->cols(), o.name));
  }
  std::vector<float> vector(Role r, int64_t l, int64_t e) const override { return base_->vector(r, l, e); }
  void embed_rows(const int32_t* ids, int64_t n, float* out) const override { base_->embed_rows(ids, n, out); }

 private:
  struct Over {
    size_t k;
    std::string name;
    bool cached;
  };
  std::shared_ptr<const WeightSource> base_;
  std::shared_ptr<AnchorCache> cache_;
  const std::vector<QuantCandidate>& cands_;
  const AllocEncoded& encoded_;
  std::map<std::tuple<Role, int64_t, int64_t>, Over> over_;
};

}  // namespace

template <class Fn>
void AllocOverlay::for_each_matrix(size_t i, const Fn& fn) const {
  const AllocUnit& u = units_[i];
  const ModelConfig& cfg = base_->config();
  for (Role r : u.roles) {
    if (!expert_role(r) || u.expert >= 0) {
      fn(r, expert_role(r) ? u.expert : -1);
      continue;
    }
    const int64_t E = cfg.moe ? cfg.moe->num_experts : 0;  // expert −2: every expert of the layer
    for (int64_t e = 0; e < E; ++e) fn(r, e);
  }
}

void AllocOverlay::apply(size_t i, int k, OverlayWeights& ov) const {
  const AllocUnit& u = units_[i];
  const QuantCandidate& c = cands_[static_cast<size_t>(k)];
  for_each_matrix(i, [&](Role r, int64_t e) {
    ov.set(r, u.layer, e,
           rounded(*base_->matrix(r, u.layer, e), encoded_, cands_, static_cast<size_t>(k), r, u.layer, e, str(u.name, " ", c.name)));
  });
}

void AllocOverlay::cache_anchor(const std::vector<int>& anchor, int64_t max_bytes) {
  anchor_ = anchor;
  cache_ = std::make_shared<AnchorCache>(max_bytes);
}

std::unique_ptr<Engine> AllocOverlay::engine(const std::vector<int>& choice) const {
  auto rw = std::make_shared<RoundedWeights>(base_, cache_, cands_, encoded_);
  for (size_t i = 0; i < units_.size(); ++i)
    if (choice[i] >= 0) {
      const size_t k = static_cast<size_t>(choice[i]);
      const bool anchor = cache_ && choice[i] == anchor_[i];
      for_each_matrix(i, [&](Role r, int64_t e) {
        rw->set(r, units_[i].layer, e, k, str(units_[i].name, " ", cands_[k].name), anchor);
      });
    }
  // One layer resident at a time (run_layers), its rounded matrices made when it is loaded.
  return std::make_unique<Engine>(rw, /*keep_layers=*/false);
}

void measure_unit_kld(const Engine& eng, KldReference& ref, const AllocOptions& o, std::vector<AllocUnit>& units,
                      const std::vector<int>& anchor) {
  const size_t C = o.candidates.size();
  auto base = std::shared_ptr<const WeightSource>(&eng.weights(), [](const WeightSource*) {});
  AllocOverlay ov(base, units, o.candidates, o.encoded);
  // Units outside the budget's scope (always-on linears without all_weights) are not chosen by the
  // knapsack (they get the cheapest storage at or above the routed average): not measured.
  bool any_routed = false;
  for (const auto& u : units) any_routed = any_routed || u.routed;
  std::vector<std::pair<size_t, size_t>> tasks;
  for (size_t i = 0; i < units.size(); ++i) {
    units[i].error.assign(C, std::numeric_limits<double>::quiet_NaN());
    const bool in_scope = o.all_weights || units[i].routed || !any_routed;
    for (size_t k = 0; k < C; ++k)
      if (units[i].bytes[k] > 0 && in_scope) tasks.emplace_back(i, k);
  }
  const std::vector<int> start = anchor.empty() ? std::vector<int>(units.size(), -1) : anchor;
  if (start.size() != units.size()) fail("bit allocation: anchor of ", start.size(), " units for ", units.size());
  double at_anchor = 0;  // the anchor's own KLD: every unit's error at its anchor candidate
  if (!anchor.empty()) {
    ov.cache_anchor(start, o.anchor_cache_bytes);
    const auto a = ov.engine(start);
    ref.restream(*a);
    at_anchor = ref.kld(*a);
  }
  std::vector<double> kl(tasks.size());
  // One (unit, candidate) per thread: each forward pass runs on one core (nested regions are off).
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t t = 0; t < tasks.size(); ++t) {
    const auto [i, k] = tasks[t];
    if (start[i] == static_cast<int>(k)) {
      kl[t] = at_anchor;
      continue;
    }
    std::vector<int> choice = start;
    choice[i] = static_cast<int>(k);
    kl[t] = ref.kld(*ov.engine(choice), units[i].layer);
  }
  if (!anchor.empty()) ref.restream(eng);
  for (size_t t = 0; t < tasks.size(); ++t) units[tasks[t].first].error[tasks[t].second] = std::max(kl[t], 0.0);
  if (o.progress)
    o.progress(str("measured the KLD of ", units.size(), " units at ", C, " candidates",
                   anchor.empty() ? "" : str(" around an anchor of KLD ", at_anchor), " (", tasks.size(),
                   " forward passes over ", ref.tokens(), " calibration tokens)"));
}

Allocation uniform_allocation(const Allocation& a, size_t k, const AllocOptions& o) {
  Allocation u = a;
  for (size_t i = 0; i < u.units.size(); ++i)
    if ((u.all_weights || u.units[i].routed) && u.choice[i] >= 0 && u.units[i].bytes[k] > 0)
      u.choice[i] = static_cast<int>(k);
  finish_allocation(u, o);
  return u;
}

std::optional<Allocation> anchor_allocation(const Allocation& a, const AllocOptions& o) {
  std::optional<Allocation> best;
  for (size_t k = 0; k < o.candidates.size(); ++k) {
    Allocation u = uniform_allocation(a, k, o);
    if (u.choice == a.choice) continue;
    if (!best || std::abs(u.bpw_scope - o.bpw) < std::abs(best->bpw_scope - o.bpw)) {
      u.used = str("uniform ", o.candidates[k].name);
      best = std::move(u);
    }
  }
  return best;
}

void check_allocation(const Engine& eng, const KldReference& ref, const AllocOptions& o, Allocation& a,
                      const std::vector<std::pair<std::string, Allocation>>& others) {
  auto base = std::shared_ptr<const WeightSource>(&eng.weights(), [](const WeightSource*) {});
  AllocOverlay ov(base, a.units, o.candidates, o.encoded);
  // Trials: the solution, the other solutions within the budget, then each candidate everywhere in
  // scope it fits (elsewhere the solution's choice), kept when it is within the budget.
  std::vector<Allocation> trials{a};
  std::vector<std::string> names{"allocation"};
  const double budget = o.bpw;
  auto add = [&](Allocation u, std::string name) {
    if (u.bpw_scope > budget + 1e-9) return;
    for (const auto& t : trials)
      if (t.choice == u.choice) return;
    trials.push_back(std::move(u));
    names.push_back(std::move(name));
  };
  for (const auto& [name, u] : others) add(u, name);
  for (size_t k = 0; k < o.candidates.size(); ++k) add(uniform_allocation(a, k, o), str("uniform ", o.candidates[k].name));
  std::vector<double> kl(trials.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t t = 0; t < trials.size(); ++t) kl[t] = ref.kld(*ov.engine(trials[t].choice));
  size_t best = 0;
  for (size_t t = 0; t < trials.size(); ++t) {
    a.trials.push_back({names[t], trials[t].bpw_scope, kl[t]});
    if (kl[t] < kl[best]) best = t;
  }
  if (best == 0) return;
  a.notes.push_back(str(names[best], " measured a lower KLD on the calibration text than the allocation (", kl[best],
                        " vs ", kl[0], "): used"));
  a.choice = trials[best].choice;
  a.units = trials[best].units;  // another solution's measured errors (uniform trials share a's)
  a.routed_avg_bpw = trials[best].routed_avg_bpw;
  a.bpw_scope = trials[best].bpw_scope;
  a.bpw_linears = trials[best].bpw_linears;
  a.total_cost = trials[best].total_cost;
  a.used = names[best];
}

}  // namespace moetool
