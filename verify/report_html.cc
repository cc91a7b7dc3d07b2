// verify/report_html.cc — report.html of `moetool verify`: one self-contained page with inline CSS
// and inline SVG plots (report_svg.cc): verdict badge, headline row, thresholds, routing fidelity,
// KLD distribution and worst positions, per-layer similarity, per-chunk KLD (see report.h).
#include <algorithm>
#include <cmath>

#include "verify/report.h"
#include "verify/report_format.h"

namespace moetool {

using namespace report_detail;

namespace {

const char* kCss = R"CSS(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:900px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.pass{background:#1a7f37}.fail{background:#cf222e}.unchecked{background:#6e7781}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700;font-weight:600}
.headline{display:flex;flex-wrap:wrap;gap:.5rem;margin:1rem 0}
.cell{border:1px solid #d0d7de;border-radius:6px;padding:.4rem .75rem;background:#f6f8fa}
.cell .k{display:block;font-size:.8em;color:#57606a}.cell{max-width:100%;box-sizing:border-box}.cell .v{display:block;font-weight:600;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;overflow-wrap:anywhere}
pre.cmd{white-space:pre;overflow-x:auto;background:#f6f8fa;padding:.5rem;border-radius:6px;margin:.3rem 0}
td.ctx{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em;white-space:pre-wrap}
svg{display:block;margin:.75rem 0;max-width:100%;height:auto;font-family:inherit}
svg .t{font-size:16px;text-anchor:middle;font-weight:600}svg .frame{fill:none;stroke:#8c959f}
svg .grid{stroke:#eaeef2}svg .bar{fill:#0969da}svg .b0{fill:#8c959f}svg .c0{fill:#0969da}
svg .line{fill:none;stroke:#0969da;stroke-width:2.5}svg .line.s2{stroke:#bf3989;stroke-dasharray:6 3}
svg .pt{fill:#0969da}svg .pt.s2{fill:#bf3989}svg .pt.flag{fill:#cf222e;stroke:#cf222e;stroke-width:2}
svg .xl{font-size:15px;text-anchor:middle}svg .yl{font-size:15px;text-anchor:end}svg .lg{font-size:14px}
svg .xt,svg .yt{font-size:15px;text-anchor:middle}svg .msg{font-size:15px;text-anchor:middle;fill:#57606a}
svg .mk1{stroke:#cf222e;stroke-dasharray:4 3}svg .mk2{stroke:#9a6700;stroke-dasharray:2 3}svg .ml{font-size:14px}
.note{color:#57606a;font-size:.9em}footer{margin-top:2rem;color:#57606a;font-size:.85em}
)CSS";

std::string row(const std::string& k, const std::string& v, bool numeric = true) {
  return "<tr><th>" + html_escape(k) + "</th><td" + (numeric ? " class=\"n\"" : "") + ">" + html_escape(v) +
         "</td></tr>\n";
}
std::string td(const std::string& v) { return "<td class=\"n\">" + html_escape(v) + "</td>"; }

std::string header_and_headline(const VerifyReport& r) {
  const auto [results, failures] = verdict_of(r);
  const std::string label = verdict_label(r), cls = verdict_name(r);
  std::string o = "<h1>moetool verify <span class=\"badge " + cls + "\" id=\"verdict\">" + label + "</span></h1>\n";
  if (cls == "unchecked")
    o += "<p class=\"warn\">No thresholds were set (--max-kld, --min-top1, --max-ppl-ratio, --max-route-mismatch): "
         "nothing was checked. Read the numbers below before shipping.</p>\n";
  if (!failures.empty()) {
    o += "<ul>\n";
    for (const auto& f : failures) o += "<li class=\"bad\">" + html_escape(f) + "</li>\n";
    o += "</ul>\n";
  }
  o += "<div class=\"headline\" id=\"headline\">\n";
  for (const auto& [k, v] : headline_cells(r))
    o += "<div class=\"cell\"><span class=\"k\">" + html_escape(k) + "</span><span class=\"v\">" + html_escape(v) +
         "</span></div>\n";
  return o + "</div>\n";
}

std::string run_table(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  std::string o = "<table class=\"run\">\n";
  o += "<tr><th>base</th><td class=\"mono\">" + html_escape(r.run.base) + "</td></tr>\n";
  o += "<tr><th>candidate</th><td class=\"mono\">" + html_escape(r.run.candidate) + "</td></tr>\n";
  if (!r.run.text.empty()) o += "<tr><th>text</th><td class=\"mono\">" + html_escape(r.run.text) + "</td></tr>\n";
  if (!r.run.base_logits.empty())
    o += "<tr><th>base log-probabilities</th><td class=\"mono\">" + html_escape(r.run.base_logits) + "</td></tr>\n";
  o += row("scored",
           plural(s.n_tokens, "token", "tokens") + " in " + plural(s.n_chunks, "chunk", "chunks") +
               fmt(" of %lld; ", static_cast<long long>(r.run.n_ctx)) + scored_description(r.run.scored),
           false);
  return o + "</table>\n";
}

std::string routing_section(const RoutingFidelity& f) {
  std::string o = "<section id=\"routing\">\n<h2>Routing fidelity</h2>\n";
  o += "<p>Route mismatch: <b>" + html_escape(pct(f.mismatch, "%.2f")) +
       "</b> of (token, MoE layer) pairs choose other experts than the base. Expert mapping: " +
       html_escape(f.mapping_source.empty() ? "identity where the expert counts agree"
                                            : f.mapping_source + " (from the candidate's metadata)") +
       ".</p>\n";
  o += svg_routing_layers(f) + "\n";
  o += "<div class=\"scroll\"><table>\n<tr><th>layer</th><th>experts</th><th>mapping</th><th>same set</th>"
       "<th>Jaccard</th><th>router KL</th><th>dropped</th></tr>\n";
  const LayerRouting* worst = nullptr;
  for (const LayerRouting& l : f.layers) {
    o += fmt("<tr><td class=\"n\">%lld</td><td class=\"n\">%lld → %lld</td>", static_cast<long long>(l.layer),
             static_cast<long long>(l.base_experts), static_cast<long long>(l.cand_experts));
    if (l.mapped()) {
      o += "<td>" + html_escape(l.mapping) + "</td>" + td(pct(l.same_set, "%.1f")) + td(num(l.jaccard, "%.4f")) +
           td(num(l.router_kl, "%.5f")) + td(pct(l.dropped_share, "%.1f")) + "</tr>\n";
      if (!worst || l.same_set < worst->same_set) worst = &l;
    } else {
      o += "<td colspan=\"5\" class=\"warn\">" + html_escape(l.note) + "</td></tr>\n";
    }
  }
  o += "</table></div>\n";
  if (!worst && !f.layers.empty()) worst = &f.layers.front();
  if (worst) {
    o += "<p class=\"note\">Expert load of the layer with the fewest same-set tokens (every layer below):</p>\n";
    o += svg_expert_load(*worst) + "\n<details><summary>expert load, every layer</summary>\n";
    for (const LayerRouting& l : f.layers) o += svg_expert_load(l) + "\n";
    o += "</details>\n";
  }
  return o + "</section>\n";
}

std::string worst_table(const std::vector<WorstToken>& w) {
  if (w.empty()) return "";
  std::string o = "<h3>Largest KLD positions</h3>\n<div class=\"scroll\"><table id=\"worst\">\n<tr><th>KLD</th>"
                  "<th>chunk:pos</th><th>context</th><th>next</th><th>base top (p)</th><th>candidate top (p)</th></tr>\n";
  for (const WorstToken& x : w)
    o += "<tr>" + td(fmt("%.5f", x.kld)) + td(fmt("%lld:%lld", static_cast<long long>(x.chunk + 1),
                                                  static_cast<long long>(x.position))) +
         "<td class=\"ctx\">…" + html_escape(visible(x.context)) + "</td><td class=\"ctx\">" +
         html_escape(visible(x.next)) + "</td><td class=\"ctx\">" + html_escape(visible(x.top_base_text)) + " (" +
         num(x.p_top_base, "%.2f") + ")</td><td class=\"ctx\">" + html_escape(visible(x.top_cand_text)) + " (" +
         num(x.p_top_cand, "%.2f") + ")</td></tr>\n";
  return o + "</table></div>\n";
}

std::string layers_section(const std::vector<LayerSimilarity>& layers) {
  std::string o = "<h2>Per-layer hidden-state similarity</h2>\n";
  if (layers.empty()) return o + "<p class=\"note\">Hidden states were not compared.</p>\n";
  const std::vector<int64_t> flagged = flagged_layers(layers);
  for (int64_t l : flagged)
    o += fmt("<p class=\"warn\">Layer %lld: its minimum cosine is far below the other layers' (some tokens' hidden "
             "states diverge there).</p>\n",
             static_cast<long long>(l));
  o += svg_layer_cosine(layers, flagged) + "\n" + svg_layer_nmse(layers) + "\n";
  o += "<details><summary>table</summary>\n<table>\n<tr><th>layer</th><th>rows</th><th>mean cosine</th>"
       "<th>min cosine</th><th>NMSE</th></tr>\n";
  for (const auto& l : layers)
    o += "<tr>" + td(std::to_string(l.layer)) + td(std::to_string(l.rows)) + td(num(l.mean_cosine)) +
         td(num(l.min_cosine)) + td(num(l.nmse, "%.4e")) + "</tr>\n";
  return o + "</table>\n</details>\n";
}

std::string chunks_section(const std::vector<ChunkProgress>& chunks) {
  if (chunks.empty()) return "";
  std::string o = "<h2>Per chunk</h2>\n" + svg_chunk_kld(chunks) + "\n";
  o += "<details><summary>" + plural(static_cast<int64_t>(chunks.size()), "chunk", "chunks") +
       "</summary>\n<div class=\"scroll\"><table>\n<tr><th>chunk</th><th>KLD (chunk)</th><th>same top p (chunk)</th>"
       "<th>PPL(Q) (running)</th><th>KLD (running)</th></tr>\n";
  for (const auto& c : chunks)
    o += "<tr>" + td(std::to_string(c.chunk)) + td(num(c.chunk_kld, "%.5f")) + td(pct(c.chunk_same_top, "%.2f")) +
         td(pm(c.ppl_q, "%.4f")) + td(pm(c.kld, "%.5f")) + "</tr>\n";
  return o + "</table></div>\n</details>\n";
}

}  // namespace

std::string to_html(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  const auto [results, failures] = verdict_of(r);
  std::string o;
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  o += "<title>moetool verify: " + verdict_label(r) + "</title>\n<style>" + std::string(kCss) +
       "</style>\n</head>\n<body>\n";
  o += header_and_headline(r) + run_table(r);

  o += "<h2>Thresholds</h2>\n";
  if (results.empty()) {
    o += "<p>No thresholds were set.</p>\n";
  } else {
    o += "<table>\n<tr><th>threshold</th><th>metric</th><th>limit</th><th>value</th><th>result</th></tr>\n";
    for (const auto& t : results)
      o += "<tr><td>" + html_escape(t.name) + "</td><td>" + html_escape(t.metric) + "</td>" + td(limit_str(t)) +
           td(value_str(t)) + "<td class=\"" + (t.passed ? "ok\">pass" : "bad\">fail") + "</td></tr>\n";
    o += "</table>\n";
  }
  if (!r.routing.empty()) o += routing_section(r.routing);

  o += "<h2>KL divergence</h2>\n" + svg_kld_histogram(s) + "\n" + worst_table(s.worst);
  o += "<details><summary>KLD statistics</summary>\n<table>\n";
  o += row("Mean KLD", pm(s.kld));
  for (const Quantile& q : s.kld_q) o += row(quantile_label(q.q) + " KLD", num(q.value));
  o += "</table>\n</details>\n";

  o += "<h2>Perplexity and token probabilities</h2>\n<details><summary>statistics</summary>\n<table>\n";
  o += row("Mean PPL(Q)", pm(s.ppl_q));
  o += row("Mean PPL(base)", pm(s.ppl_base));
  o += row("Cor(ln(PPL(Q)), ln(PPL(base)))", std::isnan(s.cor_ln_ppl) ? "n/a" : fmt("%.2f %%", 100 * s.cor_ln_ppl));
  o += row("Mean ln(PPL(Q)/PPL(base))", pm(s.ln_ppl_ratio));
  o += row("Mean PPL(Q)/PPL(base)", pm(s.ppl_ratio));
  o += row("Mean PPL(Q)-PPL(base)", pm(s.ppl_diff));
  o += row("Mean Δp", pm_pct(s.delta_p));
  for (const Quantile& q : s.delta_p_q) o += row(quantile_label(q.q) + " Δp", pct(q.value));
  o += row("RMS Δp", pm_pct(s.rms_delta_p));
  o += row("Same top p", pm_pct(s.same_top));
  o += "</table>\n</details>\n";

  o += layers_section(r.layers) + chunks_section(s.chunks);

  o += "<footer>moetool " + html_escape(r.run.moetool_version);
  if (!r.run.command.empty()) o += "<pre class=\"cmd\">" + html_escape(r.run.command) + "</pre>";
  o += "</footer>\n</body>\n</html>\n";
  return o;
}

}  // namespace moetool
