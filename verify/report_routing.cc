// verify/report_routing.cc — the routing-fidelity section and the worst-positions list of the text,
// JSON and Markdown reports of `moetool verify` (see report.h, routing.h).
#include <cmath>

#include "verify/report.h"
#include "verify/report_format.h"

namespace moetool::report_detail {

namespace {

std::string loads(const std::vector<double>& v) {
  std::string o;
  for (size_t i = 0; i < v.size(); ++i) o += (i ? " " : "") + num(100.0 * v[i], "%.1f");
  return o;
}

std::string mapping_words(const LayerRouting& l) {
  if (l.mapping == "identity") return "identity";
  if (l.mapping == "prune") return "pruned (kept ids)";
  if (l.mapping == "merge") return "merged (groups)";
  return "none";
}

}  // namespace

std::string routing_text(const RoutingFidelity& f) {
  std::string o = "====== Routing fidelity ======\n";
  o += "expert mapping: " + (f.mapping_source.empty() ? std::string("identity where the expert counts agree")
                                                      : f.mapping_source + " (candidate metadata)") +
       "\n";
  o += "route mismatch: " + pct(f.mismatch, "%.2f") + " of (token, MoE layer) pairs choose other experts\n";
  o += "layer  tokens  experts  mapping             same set    Jaccard  router KL  dropped\n";
  for (const LayerRouting& l : f.layers) {
    o += fmt("%5lld  %6lld  %3lld→%-3lld  %-18s  ", static_cast<long long>(l.layer), static_cast<long long>(l.tokens),
             static_cast<long long>(l.base_experts), static_cast<long long>(l.cand_experts),
             mapping_words(l).c_str());
    if (l.mapped())
      o += fmt("%7s  %9s  %9s  %7s\n", pct(l.same_set, "%.1f").c_str(), num(l.jaccard, "%.4f").c_str(),
               num(l.router_kl, "%.5f").c_str(), pct(l.dropped_share, "%.1f").c_str());
    else
      o += l.note + "\n";
  }
  o += "expert load, % of routing slots (base through the mapping → candidate):\n";
  for (const LayerRouting& l : f.layers) {
    o += fmt("  layer %lld: ", static_cast<long long>(l.layer));
    o += l.mapped() ? loads(l.base_load_mapped) + " → " + loads(l.cand_load)
                    : "base " + loads(l.base_load) + " | candidate " + loads(l.cand_load);
    o += "\n";
  }
  return o;
}

nlohmann::ordered_json routing_json(const RoutingFidelity& f) {
  using J = nlohmann::ordered_json;
  auto arr = [](const std::vector<double>& v) {
    J a = J::array();
    for (double x : v) a.push_back(jnum(x));
    return a;
  };
  J j;
  j["mapping_source"] = f.mapping_source.empty() ? J(nullptr) : J(f.mapping_source);
  j["route_mismatch"] = jnum(f.mismatch);
  J layers = J::array();
  for (const LayerRouting& l : f.layers)
    layers.push_back({{"layer", l.layer},
                      {"tokens", l.tokens},
                      {"base_experts", l.base_experts},
                      {"candidate_experts", l.cand_experts},
                      {"base_top_k", l.base_k},
                      {"candidate_top_k", l.cand_k},
                      {"mapping", l.mapped() ? J(l.mapping) : J(nullptr)},
                      {"note", l.note},
                      {"same_set", jnum(l.same_set)},
                      {"jaccard", jnum(l.jaccard)},
                      {"router_kl", jnum(l.router_kl)},
                      {"dropped_share", jnum(l.dropped_share)},
                      {"base_load", arr(l.base_load)},
                      {"candidate_load", arr(l.cand_load)},
                      {"base_load_mapped", arr(l.base_load_mapped)}});
  j["layers"] = layers;
  return j;
}

std::string routing_markdown(const RoutingFidelity& f) {
  std::string o = "#### Routing fidelity\n\n";
  o += "Route mismatch: **" + pct(f.mismatch, "%.2f") + "** of (token, MoE layer) pairs choose other experts than " +
       "the base. Expert mapping: " +
       markdown_escape(f.mapping_source.empty() ? "identity where the expert counts agree" : f.mapping_source) +
       ".\n\n";
  o += "| layer | experts | mapping | same set | Jaccard | router KL | dropped |\n|---|---|---|---|---|---|---|\n";
  for (const LayerRouting& l : f.layers) {
    o += fmt("| %lld | %lld → %lld | ", static_cast<long long>(l.layer), static_cast<long long>(l.base_experts),
             static_cast<long long>(l.cand_experts));
    if (l.mapped())
      o += mapping_words(l) + " | " + pct(l.same_set, "%.1f") + " | " + num(l.jaccard, "%.4f") + " | " +
           num(l.router_kl, "%.5f") + " | " + pct(l.dropped_share, "%.1f") + " |\n";
    else
      o += markdown_escape(l.note) + " | | | | |\n";
  }
  return o + "\n";
}

std::string worst_text(const std::vector<WorstToken>& w) {
  std::string o = "====== Largest KLD positions ======\n";
  o += "   KLD      chunk:pos  next → base top (p) | candidate top (p)   context\n";
  for (const WorstToken& x : w)
    o += fmt("%9.5f  %5lld:%-5lld  ", x.kld, static_cast<long long>(x.chunk + 1), static_cast<long long>(x.position)) +
         "'" + visible(x.next) + "' → '" + visible(x.top_base_text) + "' (" + num(x.p_top_base, "%.2f") + ") | '" +
         visible(x.top_cand_text) + "' (" + num(x.p_top_cand, "%.2f") + ")   …" + visible(x.context) + "\n";
  return o;
}

std::string worst_markdown(const std::vector<WorstToken>& w) {
  std::string o = "<details><summary>Largest KLD positions</summary>\n\n";
  o += "| KLD | chunk:pos | context | next | base top (p) | candidate top (p) |\n|---|---|---|---|---|---|\n";
  for (const WorstToken& x : w)
    o += fmt("| %.5f | %lld:%lld | ", x.kld, static_cast<long long>(x.chunk + 1), static_cast<long long>(x.position)) +
         "…" + markdown_escape(visible(x.context)) + " | " + markdown_escape(visible(x.next)) + " | " +
         markdown_escape(visible(x.top_base_text)) + " (" + num(x.p_top_base, "%.2f") + ") | " +
         markdown_escape(visible(x.top_cand_text)) + " (" + num(x.p_top_cand, "%.2f") + ") |\n";
  return o + "\n</details>\n\n";
}

}  // namespace moetool::report_detail
