// compress/bit_alloc_kld.cc — end-to-end KLD of units and of whole allocations on calibration text
// (see bit_alloc_kld.h).
#include "compress/bit_alloc_kld.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

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

}  // namespace

namespace {

// Logits [n, V] of layers `from` .. L−1 and the head on h[n, H] (the input of layer `from`) for
// positions 0 .. n−1; `keep(l, h)` sees the input of every layer run.
template <class Keep>
std::vector<float> run_from(const Engine& eng, int64_t from, std::vector<float> h, int64_t n, const Keep& keep) {
  const ModelConfig& c = eng.config();
  KVCache cache = eng.new_cache(n);
  for (int64_t l = from; l < c.num_layers; ++l) {
    keep(l, h);
    auto lw = eng.load_layer(l);
    eng.run_layer(l, *lw, h.data(), n, 0, cache, nullptr);
  }
  std::vector<float> logits(static_cast<size_t>(n * c.vocab_size));
  eng.head(h.data(), n, logits.data());
  return logits;
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
  streams_.resize(kept_layers_.size());
  for (const auto& ch : chunks_) {
    const int64_t n = static_cast<int64_t>(ch.size());
    std::vector<float> h(static_cast<size_t>(n * c.hidden_size));
    eng.embed(ch.data(), n, h.data());
    size_t next = 0;
    const std::vector<float> logits = run_from(eng, 0, std::move(h), n, [&](int64_t l, const std::vector<float>& x) {
      if (next < kept_layers_.size() && kept_layers_[next] == l) streams_[next++].push_back(x);
    });
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

// KL(p ‖ q) = Σ p log p − Σ p log q, and Σ_v p_v log q_v = Σ_v p_v y_v − lse(y) for q = softmax(y).
double KldReference::kld(const Engine& eng, int64_t first_layer) const {
  size_t k = 0;  // the last kept stream at or before first_layer
  while (k + 1 < kept_layers_.size() && kept_layers_[k + 1] <= first_layer) ++k;
  double cross = 0;
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const int64_t n = static_cast<int64_t>(chunks_[c].size());
    const std::vector<float> logits = run_from(eng, kept_layers_[k], streams_[k][c], n, [](int64_t, const auto&) {});
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
                           const std::vector<QuantCandidate>& candidates)
    : base_(std::move(base)), units_(units), cands_(candidates) {}

void AllocOverlay::apply(size_t i, int k, OverlayWeights& ov) const {
  const AllocUnit& u = units_[i];
  const QuantCandidate& c = cands_[static_cast<size_t>(k)];
  const ModelConfig& cfg = base_->config();
  auto put = [&](Role r, int64_t e) {
    const auto W = base_->matrix(r, u.layer, e);
    Tensor d = Tensor::zeros(DType::F32, {W->rows(), W->cols()});
    W->to_dense(d.as<float>());
    Tensor q = Tensor::zeros(DType::F32, {W->rows(), W->cols()});
    c.roundtrip(d.as<float>(), W->rows(), W->cols(), q.as<float>());
    ov.set(r, u.layer, e, make_dense_matrix(q, str(u.name, " ", c.name)));
  };
  for (Role r : u.roles) {
    if (!expert_role(r) || u.expert >= 0) {
      put(r, expert_role(r) ? u.expert : -1);
      continue;
    }
    const int64_t E = cfg.moe ? cfg.moe->num_experts : 0;  // expert −2: every expert of the layer
    for (int64_t e = 0; e < E; ++e) put(r, e);
  }
}

std::unique_ptr<Engine> AllocOverlay::engine(const std::vector<int>& choice) const {
  auto ov = std::make_shared<OverlayWeights>(base_);
  for (size_t i = 0; i < units_.size(); ++i)
    if (choice[i] >= 0) apply(i, choice[i], *ov);
  return std::make_unique<Engine>(ov, /*keep_layers=*/true);
}

void measure_unit_kld(const Engine& eng, const KldReference& ref, const AllocOptions& o,
                      std::vector<AllocUnit>& units) {
  const size_t C = o.candidates.size();
  auto base = std::shared_ptr<const WeightSource>(&eng.weights(), [](const WeightSource*) {});
  AllocOverlay ov(base, units, o.candidates);
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
  std::vector<double> kl(tasks.size());
  // One (unit, candidate) per thread: each forward pass runs on one core (nested regions are off).
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t t = 0; t < tasks.size(); ++t) {
    std::vector<int> choice(units.size(), -1);
    choice[tasks[t].first] = static_cast<int>(tasks[t].second);
    kl[t] = ref.kld(*ov.engine(choice), units[tasks[t].first].layer);
  }
  for (size_t t = 0; t < tasks.size(); ++t) units[tasks[t].first].error[tasks[t].second] = std::max(kl[t], 0.0);
  if (o.progress)
    o.progress(str("measured the KLD of ", units.size(), " units at ", C, " candidates (", tasks.size(),
                   " forward passes over ", ref.tokens(), " calibration tokens)"));
}

void check_allocation(const Engine& eng, const KldReference& ref, const AllocOptions& o, Allocation& a) {
  auto base = std::shared_ptr<const WeightSource>(&eng.weights(), [](const WeightSource*) {});
  AllocOverlay ov(base, a.units, o.candidates);
  // Trials: the solution, then each candidate everywhere in scope it fits (elsewhere the solution's
  // choice), kept when it is within the budget.
  std::vector<Allocation> trials{a};
  std::vector<std::string> names{"allocation"};
  const double budget = o.bpw;
  for (size_t k = 0; k < o.candidates.size(); ++k) {
    Allocation u = a;
    for (size_t i = 0; i < u.units.size(); ++i)
      if ((u.all_weights || u.units[i].routed) && u.choice[i] >= 0 && u.units[i].bytes[k] > 0)
        u.choice[i] = static_cast<int>(k);
    finish_allocation(u, o);
    if (u.bpw_scope > budget + 1e-9 || u.choice == a.choice) continue;
    trials.push_back(std::move(u));
    names.push_back(str("uniform ", o.candidates[k].name));
  }
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
  a.routed_avg_bpw = trials[best].routed_avg_bpw;
  a.bpw_scope = trials[best].bpw_scope;
  a.bpw_linears = trials[best].bpw_linears;
  a.total_cost = trials[best].total_cost;
  a.used = names[best];
}

}  // namespace moetool
