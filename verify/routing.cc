// verify/routing.cc — routing fidelity of a candidate against its base (see routing.h).
#include "verify/routing.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "formats/checkpoint.h"

namespace moetool {

namespace {

// {"layer": [[base ids], ...]} (merge groups) or {"layer": [base ids]} (prune: one id per slot).
std::map<int64_t, std::vector<std::vector<int64_t>>> parse_slots(const std::string& text, bool groups,
                                                                 const std::string& what, const char* key) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail(what, ": metadata ", key, " is not valid JSON (", e.what(), ")");
  }
  if (!j.is_object()) fail(what, ": metadata ", key, " is not a JSON object of layers");
  std::map<int64_t, std::vector<std::vector<int64_t>>> out;
  for (const auto& [k, v] : j.items()) {
    int64_t layer = -1;
    try {
      size_t used = 0;
      layer = std::stoll(k, &used);
      if (used != k.size()) layer = -1;
    } catch (const std::exception&) {
    }
    if (layer < 0) fail(what, ": metadata ", key, ": layer key \"", k, "\" is not a layer index");
    if (!v.is_array()) fail(what, ": metadata ", key, "[", k, "] is not an array");
    auto& slots = out[layer];
    for (const auto& s : v) {
      std::vector<int64_t> ids;
      if (groups && s.is_array()) {
        for (const auto& e : s)
          if (e.is_number_integer()) ids.push_back(e.get<int64_t>());
          else fail(what, ": metadata ", key, "[", k, "]: expert id ", e.dump(), " is not an integer");
      } else if (!groups && s.is_number_integer()) {
        ids.push_back(s.get<int64_t>());
      } else {
        fail(what, ": metadata ", key, "[", k, "]: entry ", s.dump(), " is not ",
             groups ? "an array of expert ids" : "an expert id");
      }
      slots.push_back(std::move(ids));
    }
  }
  return out;
}

// softmax of one row in double.
std::vector<double> softmax(const float* z, int64_t E) {
  std::vector<double> p(static_cast<size_t>(E));
  double m = -INFINITY;
  for (int64_t e = 0; e < E; ++e) m = std::max(m, static_cast<double>(z[e]));
  double s = 0;
  for (int64_t e = 0; e < E; ++e) s += (p[static_cast<size_t>(e)] = std::exp(static_cast<double>(z[e]) - m));
  for (double& x : p) x /= s;
  return p;
}

}  // namespace

ExpertMapping expert_mapping_from_metadata(const std::map<std::string, std::string>& md, const std::string& what) {
  ExpertMapping m;
  if (auto it = md.find("moetool.merge.groups"); it != md.end()) {
    m.source = it->first;
    m.layers = parse_slots(it->second, true, what, "moetool.merge.groups");
  } else if (auto it2 = md.find("moetool.prune.kept_experts"); it2 != md.end()) {
    m.source = it2->first;
    m.layers = parse_slots(it2->second, false, what, "moetool.prune.kept_experts");
  }
  return m;
}

std::map<std::string, std::string> checkpoint_metadata(const std::string& path) {
  if (!is_directory(path) && path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return {};
  const Checkpoint ck = Checkpoint::open(path);
  if (ck.files().empty()) return {};
  return ck.files().front()->metadata();
}

// ---------------------------------------------------------------------------------------------

RoutingComparison::Acc& RoutingComparison::layer(int64_t l, int64_t Eb, int64_t kb, int64_t Ec, int64_t kc) {
  auto [it, fresh] = layers_.try_emplace(l);
  Acc& a = it->second;
  if (!fresh) {
    check(a.Eb == Eb && a.Ec == Ec && a.kb == kb && a.kc == kc, "routing comparison: layer ", l,
          ": expert counts changed between chunks");
    return a;
  }
  a.Eb = Eb, a.Ec = Ec, a.kb = kb, a.kc = kc;
  a.base_count.assign(static_cast<size_t>(Eb), 0);
  a.cand_count.assign(static_cast<size_t>(Ec), 0);
  if (Eb == 0 || Ec == 0) {
    a.note = Eb == 0 ? "the base has no router in this layer" : "the candidate has no router in this layer";
    return a;
  }
  const auto rec = map_.layers.find(l);
  if (rec == map_.layers.end()) {
    if (Eb == Ec) {
      a.mapping = "identity";
      for (int64_t e = 0; e < Eb; ++e) a.phi.push_back(e);
    } else {
      a.note = str("no expert mapping: the base has ", Eb, " experts here, the candidate ", Ec,
                   map_.source.empty() ? ", and its metadata records no prune or merge"
                                       : str(", and its ", map_.source, " has no entry for this layer"));
    }
    return a;
  }
  // The recorded mapping must describe exactly this layer: one slot per candidate expert, each
  // base expert in at most one slot.
  const auto& slots = rec->second;
  std::vector<int64_t> phi(static_cast<size_t>(Eb), -1);
  std::string bad;
  if (static_cast<int64_t>(slots.size()) != Ec) bad = str(slots.size(), " slots for ", Ec, " candidate experts");
  for (size_t j = 0; j < slots.size() && bad.empty(); ++j)
    for (int64_t e : slots[j]) {
      if (e < 0 || e >= Eb) bad = str("base expert ", e, " outside [0, ", Eb, ")");
      else if (phi[static_cast<size_t>(e)] >= 0) bad = str("base expert ", e, " in two slots");
      else phi[static_cast<size_t>(e)] = static_cast<int64_t>(j);
      if (!bad.empty()) break;
    }
  if (!bad.empty()) {
    a.note = str("no expert mapping: ", map_.source, " does not fit this layer (", bad, ")");
    return a;
  }
  a.mapping = map_.source == "moetool.merge.groups" ? "merge" : "prune";
  a.phi = std::move(phi);
  return a;
}

void RoutingComparison::add(int64_t l, const float* bz, const int32_t* bsel, int64_t Eb, int64_t kb, const float* cz,
                            const int32_t* csel, int64_t Ec, int64_t kc, int64_t n) {
  Acc& a = layer(l, Eb, Eb ? kb : 0, Ec, Ec ? kc : 0);
  auto count = [](std::vector<int64_t>& c, const int32_t* sel, int64_t n, int64_t k) {
    for (int64_t i = 0; i < n * k; ++i)
      if (sel[i] >= 0 && sel[i] < static_cast<int64_t>(c.size())) ++c[static_cast<size_t>(sel[i])];
  };
  if (Eb) count(a.base_count, bsel, n, kb);
  if (Ec) count(a.cand_count, csel, n, kc);
  a.tokens += n;
  if (a.phi.empty()) return;
  const int64_t K = Ec;
  std::vector<char> in_b(static_cast<size_t>(K)), in_c(static_cast<size_t>(K));
  for (int64_t t = 0; t < n; ++t) {
    std::fill(in_b.begin(), in_b.end(), 0);
    std::fill(in_c.begin(), in_c.end(), 0);
    for (int64_t i = 0; i < kb; ++i) {
      const int32_t e = bsel[t * kb + i];
      if (e >= 0 && e < Eb && a.phi[static_cast<size_t>(e)] >= 0) in_b[static_cast<size_t>(a.phi[static_cast<size_t>(e)])] = 1;
    }
    for (int64_t i = 0; i < kc; ++i) {
      const int32_t e = csel[t * kc + i];
      if (e >= 0 && e < Ec) in_c[static_cast<size_t>(e)] = 1;
    }
    int64_t inter = 0, uni = 0;
    for (int64_t j = 0; j < K; ++j) {
      inter += in_b[static_cast<size_t>(j)] && in_c[static_cast<size_t>(j)];
      uni += in_b[static_cast<size_t>(j)] || in_c[static_cast<size_t>(j)];
    }
    a.same += inter == uni ? 1 : 0;
    a.jaccard += uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
    // Router KL between the base's distribution carried to the candidate's experts and the candidate's.
    const std::vector<double> pb = softmax(bz + t * Eb, Eb), pc = softmax(cz + t * Ec, Ec);
    std::vector<double> q(static_cast<size_t>(K), 0.0);
    double mass = 0;
    for (int64_t e = 0; e < Eb; ++e)
      if (a.phi[static_cast<size_t>(e)] >= 0) {
        q[static_cast<size_t>(a.phi[static_cast<size_t>(e)])] += pb[static_cast<size_t>(e)];
        mass += pb[static_cast<size_t>(e)];
      }
    if (!(mass > 0)) continue;
    double kl = 0;
    for (int64_t j = 0; j < K; ++j) {
      const double qj = q[static_cast<size_t>(j)] / mass;
      if (qj > 0) kl += qj * (std::log(qj) - std::log(pc[static_cast<size_t>(j)]));
    }
    a.kl += kl;
    ++a.kl_rows;
  }
}

RoutingFidelity RoutingComparison::finish() const {
  RoutingFidelity f;
  f.mapping_source = map_.source;
  int64_t tokens = 0, same = 0;
  for (const auto& [l, a] : layers_) {
    LayerRouting r;
    r.layer = l;
    r.tokens = a.tokens;
    r.base_experts = a.Eb, r.cand_experts = a.Ec, r.base_k = a.kb, r.cand_k = a.kc;
    r.mapping = a.mapping;
    r.note = a.note;
    auto shares = [&](const std::vector<int64_t>& c, int64_t k) {
      std::vector<double> s;
      const double total = static_cast<double>(a.tokens * k);
      for (int64_t x : c) s.push_back(total > 0 ? static_cast<double>(x) / total : kNaN);
      return s;
    };
    r.base_load = shares(a.base_count, a.kb);
    r.cand_load = shares(a.cand_count, a.kc);
    if (!a.phi.empty() && a.tokens > 0) {
      const double n = static_cast<double>(a.tokens);
      r.same_set = static_cast<double>(a.same) / n;
      r.jaccard = a.jaccard / n;
      r.router_kl = a.kl_rows ? a.kl / static_cast<double>(a.kl_rows) : kNaN;
      r.base_load_mapped.assign(static_cast<size_t>(a.Ec), 0.0);
      r.dropped_share = 0;
      for (int64_t e = 0; e < a.Eb; ++e) {
        const int64_t j = a.phi[static_cast<size_t>(e)];
        (j >= 0 ? r.base_load_mapped[static_cast<size_t>(j)] : r.dropped_share) += r.base_load[static_cast<size_t>(e)];
      }
      tokens += a.tokens;
      same += a.same;
    }
    f.layers.push_back(std::move(r));
  }
  if (tokens > 0) f.mismatch = 1.0 - static_cast<double>(same) / static_cast<double>(tokens);
  return f;
}

// ---------------------------------------------------------------------------------------------

void RoutingRecorder::on_router(int64_t l, const float* logits, const int32_t* sel, const float* w, int64_t n,
                                int64_t E, int64_t k) {
  if (inner_) inner_->on_router(l, logits, sel, w, n, E, k);
  Layer& x = layers_[l];
  x.logits.assign(logits, logits + n * E);
  x.sel.assign(sel, sel + n * k);
  x.n = n, x.E = E, x.k = k;
}

void RoutingComparer::on_router(int64_t l, const float* logits, const int32_t* sel, const float* w, int64_t n,
                                int64_t E, int64_t k) {
  if (inner_) inner_->on_router(l, logits, sel, w, n, E, k);
  seen_[l] = true;
  const auto it = base_.layers().find(l);
  if (it == base_.layers().end()) {
    cmp_.add(l, nullptr, nullptr, 0, 0, logits, sel, E, k, n);
    return;
  }
  const RoutingRecorder::Layer& b = it->second;
  check(b.n == n, "routing comparison: layer ", l, ": the base routed ", b.n, " tokens, the candidate ", n);
  cmp_.add(l, b.logits.data(), b.sel.data(), b.E, b.k, logits, sel, E, k, n);
}

void RoutingComparer::finish_chunk() {
  for (const auto& [l, b] : base_.layers())
    if (!seen_.count(l)) cmp_.add(l, b.logits.data(), b.sel.data(), b.E, b.k, nullptr, nullptr, 0, 0, b.n);
  seen_.clear();
}

}  // namespace moetool
