// compress/bit_alloc_solve.cc — pass 2 of the bit allocation: costs from the measured errors, fused
// groups, the multiple-choice knapsack under the budget with the average constraints, and the
// achieved sizes (see bit_alloc.h).
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "compress/bit_alloc.h"
#include "core/error.h"

namespace moetool {

namespace {

// The fused group a unit belongs to (fused_groups), as a key within its layer.
std::string fused_group(const AllocUnit& u) {
  if (u.routed || u.expert == -2) return "experts";
  switch (u.roles.empty() ? Role::Embed : u.roles.front()) {
    case Role::Q: case Role::K: case Role::V: return "q,k,v";
    case Role::Gate: case Role::Up: return "gate,up";
    case Role::SharedGate: case Role::SharedUp: return "shared gate,up";
    default: return u.name;
  }
}

// Merges units (with costs set) into one per fused group: sizes and costs add; a candidate that
// does not fit one member does not fit the group.
std::vector<AllocUnit> merge_fused(const std::vector<AllocUnit>& units, size_t C) {
  std::vector<AllocUnit> out;
  std::map<std::pair<int64_t, std::string>, size_t> at;
  for (const auto& u : units) {
    const auto key = std::make_pair(u.layer, fused_group(u));
    auto it = at.find(key);
    if (it == at.end()) {
      AllocUnit g = u;
      if (key.second != u.name) g.name = str("layer ", u.layer, " ", key.second);
      if (u.routed) g.expert = -2;
      at.emplace(key, out.size());
      out.push_back(std::move(g));
      continue;
    }
    AllocUnit& g = out[it->second];
    for (Role r : u.roles)
      if (std::find(g.roles.begin(), g.roles.end(), r) == g.roles.end()) g.roles.push_back(r);
    g.params += u.params;
    g.tokens += u.tokens;
    g.freq = g.weight = 1;
    for (size_t k = 0; k < C; ++k) {
      g.bytes[k] = g.bytes[k] == 0 || u.bytes[k] == 0 ? 0 : g.bytes[k] + u.bytes[k];
      g.error[k] += u.error[k];
      g.cost[k] += u.cost[k];
    }
  }
  return out;
}

}  // namespace

Allocation solve_allocation(std::vector<AllocUnit> units, const AllocOptions& o) {
  Allocation a;
  const size_t C = o.candidates.size();
  bool any_routed = false;
  for (const auto& u : units) any_routed = any_routed || u.routed;
  a.all_weights = o.all_weights || !any_routed;
  if (!any_routed && !o.all_weights) a.notes.push_back("no routed experts: the budget covers every quantizable linear");
  for (auto& u : units) {
    u.cost.assign(C, 0.0);
    // A stacked-experts unit (GGUF, expert −2) carries its experts' summed costs already.
    const double fw = std::pow(u.freq, o.alpha) * std::pow(u.weight, o.beta);
    for (size_t k = 0; k < C; ++k)
      u.cost[k] = std::isnan(u.error[k]) || u.expert == -2 || o.sensitivity == "kld"
                      ? u.error[k]
                      : fw * std::pow(u.error[k], o.gamma);
  }
  if (o.fused_groups) units = merge_fused(units, C);
  // Groups: the units in scope with at least one fitting candidate.
  MckpProblem p;
  std::vector<size_t> group_unit;
  std::vector<std::vector<size_t>> group_cands;
  double scope_params = 0;
  for (size_t i = 0; i < units.size(); ++i) {
    const auto& u = units[i];
    if (!(a.all_weights || u.routed)) continue;
    MckpGroup g;
    g.name = u.name;
    std::vector<size_t> cands;
    for (size_t k = 0; k < C; ++k)
      if (u.bytes[k] > 0 && !std::isnan(u.cost[k])) {
        g.choices.push_back({8.0 * static_cast<double>(u.bytes[k]), u.cost[k]});
        cands.push_back(k);
      }
    if (cands.empty()) {
      a.notes.push_back(str(u.name, ": no candidate fits [", u.rows, ", ", u.cols, "]; kept in float"));
      continue;
    }
    scope_params += static_cast<double>(u.params);
    group_unit.push_back(i);
    group_cands.push_back(cands);
    p.groups.push_back(std::move(g));
  }
  a.budget_bits = o.bpw * scope_params;
  p.budget = a.budget_bits;
  // Shared experts and attention ≥ the routed average (in scope: linear constraints).
  double routed_params = 0;
  for (size_t g = 0; g < group_unit.size(); ++g)
    if (units[group_unit[g]].routed) routed_params += static_cast<double>(units[group_unit[g]].params);
  if (a.all_weights && routed_params > 0) {
    for (size_t g = 0; g < group_unit.size(); ++g) {
      const auto& u = units[group_unit[g]];
      if (u.routed) continue;
      MckpLinear lc;
      lc.name = str(u.name, " >= routed average");
      lc.lower = 0;
      for (size_t j = 0; j < group_cands[g].size(); ++j)
        lc.terms.push_back({g, j, p.groups[g].choices[j].size / static_cast<double>(u.params)});
      for (size_t r = 0; r < group_unit.size(); ++r) {
        const auto& ru = units[group_unit[r]];
        if (!ru.routed) continue;
        for (size_t j = 0; j < group_cands[r].size(); ++j)
          lc.terms.push_back({r, j, -p.groups[r].choices[j].size / routed_params});
      }
      p.constraints.push_back(std::move(lc));
    }
  }
  a.choice.assign(units.size(), -1);
  if (!p.groups.empty()) {
    a.solution = solve_mckp(p);
    if (!a.solution.feasible) {
      double min_bits = 0;
      for (const auto& g : p.groups) {
        double mn = std::numeric_limits<double>::infinity();
        for (const auto& ch : g.choices) mn = std::min(mn, ch.size);
        min_bits += mn;
      }
      fail("--bpw ", o.bpw, ": no allocation fits (the smallest candidates need ", min_bits / scope_params,
           " bits per weight over the ", a.all_weights ? "quantizable linears" : "routed experts",
           p.constraints.empty() ? "" : ", with attention and shared experts at or above the routed average", ")");
    }
    for (size_t g = 0; g < group_unit.size(); ++g)
      a.choice[group_unit[g]] = static_cast<int>(group_cands[g][a.solution.choice[g]]);
  }
  a.units = std::move(units);
  finish_allocation(a, o);
  return a;
}

void finish_allocation(Allocation& a, const AllocOptions& o) {
  const size_t C = o.candidates.size();
  a.total_cost = 0;
  // Routed average; out-of-scope always-on linears take the cheapest storage at or above it.
  double rb = 0, rp = 0;
  for (size_t i = 0; i < a.units.size(); ++i)
    if (a.units[i].routed && a.choice[i] >= 0) {
      rb += 8.0 * static_cast<double>(a.units[i].bytes[static_cast<size_t>(a.choice[i])]);
      rp += static_cast<double>(a.units[i].params);
    }
  a.routed_avg_bpw = rp > 0 ? rb / rp : 0;
  for (size_t i = 0; i < a.units.size(); ++i) {
    auto& u = a.units[i];
    if (a.all_weights || u.routed) continue;
    int best = -1, top = -1;
    for (size_t k = 0; k < C; ++k) {
      if (u.bytes[k] == 0) continue;
      const double b = 8.0 * static_cast<double>(u.bytes[k]) / static_cast<double>(u.params);
      if (top < 0 || u.bytes[k] > u.bytes[static_cast<size_t>(top)]) top = static_cast<int>(k);
      if (b + 1e-9 >= a.routed_avg_bpw && (best < 0 || u.bytes[k] < u.bytes[static_cast<size_t>(best)]))
        best = static_cast<int>(k);
    }
    a.choice[i] = best >= 0 ? best : top;
  }
  double sb = 0, sp = 0, lb = 0, lp = 0;
  for (size_t i = 0; i < a.units.size(); ++i) {
    if (a.choice[i] < 0) continue;
    const double bits = 8.0 * static_cast<double>(a.units[i].bytes[static_cast<size_t>(a.choice[i])]);
    lb += bits;
    lp += static_cast<double>(a.units[i].params);
    if (a.all_weights || a.units[i].routed) {
      sb += bits;
      sp += static_cast<double>(a.units[i].params);
    }
    const double cost = a.units[i].cost[static_cast<size_t>(a.choice[i])];
    if (!std::isnan(cost)) a.total_cost += cost;  // NaN: outside the scope and not measured (kld)
  }
  a.bpw_scope = sp > 0 ? sb / sp : 0;
  a.bpw_linears = lp > 0 ? lb / lp : 0;
}

}  // namespace moetool
