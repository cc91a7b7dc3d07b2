// verify/report_html.cc — report.html of `moetool verify`: one self-contained page with inline CSS
// and inline SVG plots (KLD histogram, per-layer similarity) (see report.h).
#include <algorithm>
#include <cmath>

#include "verify/report.h"
#include "verify/report_format.h"

namespace moetool {

using namespace report_detail;

namespace {

constexpr double kW = 720, kH = 300, kL = 70, kR = 20, kT = 30, kB = 50;

// About n "nice" ticks (1, 2, 5 × 10^k) covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi, int n = 5) {
  std::vector<double> t;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return {lo};
  const double raw = (hi - lo) / n;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  const double k0 = std::ceil(lo / step - 1e-9), k1 = std::floor(hi / step + 1e-9);
  if (!(k1 - k0 < 50)) return {lo, hi};  // step below the resolution of the values
  for (double k = k0; k <= k1; k += 1) t.push_back(k == 0 ? 0.0 : k * step);
  return t;
}

std::string svg_open(const std::string& title, const std::string& aria) {
  std::string o = fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %.0f %.0f\" width=\"%.0f\" height=\"%.0f\" "
                      "role=\"img\" aria-label=\"",
                      kW, kH, kW, kH);
  o += html_escape(aria) + "\">";
  o += "<title>" + html_escape(aria) + "</title>";
  o += fmt("<text x=\"%.1f\" y=\"18\" class=\"t\">", kW / 2) + html_escape(title) + "</text>";
  return o;
}

std::string svg_message(const std::string& title, const std::string& msg) {
  std::string o = svg_open(title, title);
  o += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>", kL, kT, kW - kL - kR,
           kH - kT - kB);
  o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"msg\">", kW / 2, kH / 2) + html_escape(msg) + "</text></svg>";
  return o;
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e5 || a < 1e-3) return fmt("%.0e", v);
  return fmt("%g", v);
}

// 10^d as "0.01", "0.1", "1", "10", "100" near 1, else "1e-5".
std::string decade_label(int d) {
  if (d >= -2 && d <= 3) return fmt("%g", std::pow(10.0, d));
  return fmt("1e%d", d);
}

std::string svg_kld_histogram(const VerifyStats& s) {
  const KldHistogram& h = s.kld_histogram;
  const std::string title = "Per-token KL divergence (log x)";
  if (h.edges.size() < 2 || h.counts.empty())
    return svg_message(title, s.n_tokens == 0 ? "no tokens were scored"
                                               : fmt("all %lld KLD values are 0: the distributions are identical",
                                                     static_cast<long long>(s.n_tokens)));
  const double lx0 = std::log10(h.edges.front()), lx1 = std::log10(h.edges.back());
  const double pw = kW - kL - kR, ph = kH - kT - kB;
  int64_t cmax = 1;
  for (int64_t c : h.counts) cmax = std::max(cmax, c);
  const double ytop = 1.12 * static_cast<double>(cmax);  // headroom for the marker labels
  auto X = [&](double v) { return kL + (std::log10(v) - lx0) / (lx1 - lx0) * pw; };
  auto Y = [&](double c) { return kT + ph - c / ytop * ph; };
  std::string o = svg_open(title, "Histogram of per-token KL divergence between base and candidate");
  o += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>", kL, kT, pw, ph);
  for (double t : nice_ticks(0, ytop)) {
    if (t < 0 || t > ytop) continue;
    o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", kL, kL + pw, Y(t), Y(t));
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">%s</text>", kL - 6, Y(t) + 4, tick_label(t).c_str());
  }
  for (int d = static_cast<int>(std::round(lx0)); d <= static_cast<int>(std::round(lx1)); ++d) {
    const double x = X(std::pow(10.0, d));
    o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", x, x, kT, kT + ph);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%s</text>", x, kT + ph + 16, decade_label(d).c_str());
  }
  for (size_t i = 0; i < h.counts.size(); ++i) {
    if (h.counts[i] == 0) continue;
    const double x0 = X(h.edges[i]), x1 = X(h.edges[i + 1]);
    const double y = Y(static_cast<double>(h.counts[i]));
    o += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" class=\"bar\"><title>[%.3g, %.3g): %lld "
             "tokens</title></rect>",
             x0 + 0.5, y, std::max(0.5, x1 - x0 - 1.0), kT + ph - y, h.edges[i], h.edges[i + 1],
             static_cast<long long>(h.counts[i]));
  }
  auto marker = [&](double v, const char* name, const char* cls) {
    if (!(v >= h.edges.front() && v <= h.edges.back())) return;
    const double x = X(v);
    o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"%s\"><title>%s %.6g</title></line>", x, x,
             kT, kT + ph, cls, name, v);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"ml\">%s</text>", x + 3, kT + 12, name);
  };
  marker(s.kld.value, "mean", "mk1");
  marker(quantile_value(s.kld_q, 0.99), "99%", "mk2");
  o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xt\">KLD (nats) per scored token</text>", kL + pw / 2, kH - 12);
  o += fmt("<text x=\"14\" y=\"%.1f\" class=\"yt\" transform=\"rotate(-90 14 %.1f)\">tokens</text>", kT + ph / 2,
           kT + ph / 2);
  o += "</svg>";
  if (h.below > 0)
    o += fmt("<p class=\"note\">%lld token%s with KLD below %.3g (zero or rounding-negative) not drawn.</p>",
             static_cast<long long>(h.below), h.below == 1 ? "" : "s", h.edges.front());
  return o;
}

// Line plot of y over layer index; log_y when every value is positive and finite.
std::string svg_layer_plot(const std::vector<LayerSimilarity>& layers, bool nmse) {
  const std::string title = nmse ? "Per-layer NMSE of hidden states" : "Per-layer mean cosine similarity";
  std::vector<std::pair<double, double>> pts;
  for (const auto& l : layers) {
    const double v = nmse ? l.nmse : l.mean_cosine;
    if (std::isfinite(v)) pts.push_back({static_cast<double>(l.layer), v});
  }
  if (pts.empty()) return svg_message(title, "no per-layer values");
  bool log_y = nmse;
  for (const auto& p : pts)
    if (!(p.second > 0)) log_y = false;
  auto tr = [&](double v) { return log_y ? std::log10(v) : v; };
  double x0 = pts.front().first, x1 = pts.front().first, y0 = tr(pts.front().second), y1 = y0;
  for (const auto& p : pts) {
    x0 = std::min(x0, p.first);
    x1 = std::max(x1, p.first);
    y0 = std::min(y0, tr(p.second));
    y1 = std::max(y1, tr(p.second));
  }
  if (log_y) {
    y0 = std::floor(y0);
    y1 = std::ceil(y1);
    if (y1 <= y0) y1 = y0 + 1;
  } else {
    if (!nmse) y1 = std::max(y1, 1.0);
    const double pad = (y1 - y0) * 0.08;
    if (pad > 0) {
      y0 -= pad;
      if (nmse || y1 < 1.0) y1 += pad;
    }
    if (y1 - y0 < std::max(std::abs(y0), std::abs(y1)) * 1e-6 || y1 - y0 < 1e-12) {
      const double d = std::max(std::max(std::abs(y0), std::abs(y1)) * 1e-3, 1e-6);
      y0 -= d;
      y1 += d;
    }
  }
  if (x1 <= x0) {
    x0 -= 0.5;
    x1 += 0.5;
  }
  const double pw = kW - kL - kR, ph = kH - kT - kB;
  auto X = [&](double x) { return kL + (x - x0) / (x1 - x0) * pw; };
  auto Y = [&](double y) { return kT + ph - (y - y0) / (y1 - y0) * ph; };
  std::string o = svg_open(title, title + " between base and candidate");
  o += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>", kL, kT, pw, ph);
  if (log_y) {
    for (int d = static_cast<int>(y0); d <= static_cast<int>(y1); ++d) {
      o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", kL, kL + pw, Y(d), Y(d));
      o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">%s</text>", kL - 6, Y(d) + 4, decade_label(d).c_str());
    }
  } else {
    for (double t : nice_ticks(y0, y1)) {
      if (t < y0 || t > y1) continue;
      o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", kL, kL + pw, Y(t), Y(t));
      o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">%s</text>", kL - 6, Y(t) + 4, fmt("%.6g", t).c_str());
    }
  }
  for (double t : nice_ticks(x0, x1, std::min<int>(10, static_cast<int>(pts.size())))) {
    if (t < x0 || t > x1 || t != std::floor(t)) continue;
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%.0f</text>", X(t), kT + ph + 16, t);
  }
  std::string path;
  for (const auto& p : pts) path += fmt("%s%.2f,%.2f", path.empty() ? "M" : " L", X(p.first), Y(tr(p.second)));
  o += "<path d=\"" + path + "\" class=\"line\"/>";
  for (const auto& p : pts)
    o += fmt("<circle cx=\"%.2f\" cy=\"%.2f\" r=\"3\" class=\"pt\"><title>layer %.0f: %.6g</title></circle>",
             X(p.first), Y(tr(p.second)), p.first, p.second);
  o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xt\">layer</text>", kL + pw / 2, kH - 12);
  o += fmt("<text x=\"14\" y=\"%.1f\" class=\"yt\" transform=\"rotate(-90 14 %.1f)\">%s</text>", kT + ph / 2,
           kT + ph / 2, nmse ? (log_y ? "NMSE (log)" : "NMSE") : "cosine");
  o += "</svg>";
  return o;
}

const char* kCss = R"CSS(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:900px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.pass{background:#1a7f37}.fail{background:#cf222e}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;word-break:break-all}
svg{display:block;margin:.75rem 0;max-width:100%;height:auto;font-family:inherit}
svg .t{font-size:14px;text-anchor:middle;font-weight:600}svg .frame{fill:none;stroke:#8c959f}
svg .grid{stroke:#eaeef2}svg .bar{fill:#0969da}svg .line{fill:none;stroke:#0969da;stroke-width:2}
svg .pt{fill:#0969da}svg .xl{font-size:11px;text-anchor:middle}svg .yl{font-size:11px;text-anchor:end}
svg .xt,svg .yt{font-size:12px;text-anchor:middle}svg .msg{font-size:13px;text-anchor:middle;fill:#57606a}
svg .mk1{stroke:#cf222e;stroke-dasharray:4 3}svg .mk2{stroke:#9a6700;stroke-dasharray:2 3}svg .ml{font-size:11px}
.note{color:#57606a;font-size:.9em}footer{margin-top:2rem;color:#57606a;font-size:.85em}
)CSS";

std::string row(const std::string& k, const std::string& v, bool numeric = true) {
  return "<tr><th>" + html_escape(k) + "</th><td" + (numeric ? " class=\"n\"" : "") + ">" + html_escape(v) +
         "</td></tr>\n";
}

}  // namespace

std::string to_html(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  const auto [results, failures] = verdict_of(r);
  const bool ok = failures.empty();
  std::string o;
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  o += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  o += "<title>moetool verify: " + yes_pass(ok) + "</title>\n<style>" + std::string(kCss) + "</style>\n</head>\n<body>\n";
  o += "<h1>moetool verify <span class=\"badge " + std::string(ok ? "pass" : "fail") + "\">" + yes_pass(ok) +
       "</span></h1>\n";
  if (!failures.empty()) {
    o += "<ul>\n";
    for (const auto& f : failures) o += "<li class=\"bad\">" + html_escape(f) + "</li>\n";
    o += "</ul>\n";
  }
  o += "<table class=\"run\">\n";
  o += "<tr><th>base</th><td class=\"mono\">" + html_escape(r.run.base) + "</td></tr>\n";
  o += "<tr><th>candidate</th><td class=\"mono\">" + html_escape(r.run.candidate) + "</td></tr>\n";
  if (!r.run.text.empty()) o += "<tr><th>text</th><td class=\"mono\">" + html_escape(r.run.text) + "</td></tr>\n";
  if (!r.run.base_logits.empty())
    o += "<tr><th>base log-probabilities</th><td class=\"mono\">" + html_escape(r.run.base_logits) + "</td></tr>\n";
  o += row("scored", fmt("%lld tokens in %lld chunks of %lld; %s", static_cast<long long>(s.n_tokens),
                         static_cast<long long>(s.n_chunks), static_cast<long long>(r.run.n_ctx),
                         scored_description(r.run.scored)),
           false);
  o += "</table>\n";

  o += "<h2>Thresholds</h2>\n";
  if (results.empty()) {
    o += "<p>No thresholds were set.</p>\n";
  } else {
    o += "<table>\n<tr><th>threshold</th><th>metric</th><th>limit</th><th>value</th><th>result</th></tr>\n";
    for (const auto& t : results)
      o += "<tr><td>" + html_escape(t.name) + "</td><td>" + html_escape(t.metric) + "</td><td class=\"n\">" +
           html_escape(limit_str(t)) + "</td><td class=\"n\">" + html_escape(value_str(t)) + "</td><td class=\"" +
           (t.passed ? "ok\">pass" : "bad\">fail") + "</td></tr>\n";
    o += "</table>\n";
  }

  o += "<h2>Perplexity statistics</h2>\n<table>\n";
  o += row("Mean PPL(Q)", pm(s.ppl_q));
  o += row("Mean PPL(base)", pm(s.ppl_base));
  o += row("Cor(ln(PPL(Q)), ln(PPL(base)))", std::isnan(s.cor_ln_ppl) ? "n/a" : fmt("%.2f %%", 100 * s.cor_ln_ppl));
  o += row("Mean ln(PPL(Q)/PPL(base))", pm(s.ln_ppl_ratio));
  o += row("Mean PPL(Q)/PPL(base)", pm(s.ppl_ratio));
  o += row("Mean PPL(Q)-PPL(base)", pm(s.ppl_diff));
  o += "</table>\n";

  o += "<h2>KL divergence statistics</h2>\n<table>\n";
  o += row("Mean KLD", pm(s.kld));
  for (const Quantile& q : s.kld_q) o += row(quantile_label(q.q) + " KLD", num(q.value));
  o += "</table>\n";
  o += svg_kld_histogram(s) + "\n";

  o += "<h2>Token probability statistics</h2>\n<table>\n";
  o += row("Mean Δp", pm_pct(s.delta_p));
  for (const Quantile& q : s.delta_p_q) o += row(quantile_label(q.q) + " Δp", pct(q.value));
  o += row("RMS Δp", pm_pct(s.rms_delta_p));
  o += row("Same top p", pm_pct(s.same_top));
  o += "</table>\n";

  o += "<h2>Per-layer hidden-state similarity</h2>\n";
  if (r.layers.empty()) {
    o += "<p class=\"note\">Hidden states were not compared.</p>\n";
  } else {
    o += svg_layer_plot(r.layers, false) + "\n" + svg_layer_plot(r.layers, true) + "\n";
    o += "<details><summary>table</summary>\n<table>\n<tr><th>layer</th><th>rows</th><th>mean cosine</th>"
         "<th>min cosine</th><th>NMSE</th></tr>\n";
    for (const auto& l : r.layers)
      o += fmt("<tr><td class=\"n\">%lld</td><td class=\"n\">%lld</td>", static_cast<long long>(l.layer),
               static_cast<long long>(l.rows)) +
           "<td class=\"n\">" + num(l.mean_cosine) + "</td><td class=\"n\">" + num(l.min_cosine) +
           "</td><td class=\"n\">" + num(l.nmse, "%.4e") + "</td></tr>\n";
    o += "</table>\n</details>\n";
  }

  if (!s.chunks.empty()) {
    o += "<h2>Per chunk (running values)</h2>\n<details><summary>" + fmt("%zu chunks", s.chunks.size()) +
         "</summary>\n<table>\n<tr><th>chunk</th><th>PPL(Q)</th><th>ln(PPL(Q)/PPL(base))</th><th>KLD</th>"
         "<th>RMS Δp</th><th>same top p</th></tr>\n";
    for (const auto& c : s.chunks)
      o += fmt("<tr><td class=\"n\">%lld</td>", static_cast<long long>(c.chunk)) + "<td class=\"n\">" +
           html_escape(pm(c.ppl_q, "%.4f")) + "</td><td class=\"n\">" + html_escape(pm(c.ln_ppl_ratio, "%.5f")) +
           "</td><td class=\"n\">" + html_escape(pm(c.kld, "%.5f")) + "</td><td class=\"n\">" +
           html_escape(pm_pct(c.rms_dp)) + "</td><td class=\"n\">" + html_escape(pm_pct(c.same_top)) + "</td></tr>\n";
    o += "</table>\n</details>\n";
  }

  o += "<footer>moetool " + html_escape(r.run.moetool_version);
  if (!r.run.command.empty()) o += " · <span class=\"mono\">" + html_escape(r.run.command) + "</span>";
  o += "</footer>\n</body>\n</html>\n";
  return o;
}

}  // namespace moetool
