// verify/report_svg.cc — the inline SVG plots of report.html (see report_format.h): KLD histogram
// (log x, log count), per-layer mean and minimum cosine with flagged layers, per-layer NMSE,
// per-chunk KLD, per-layer routing fidelity and an expert-load chart. Fonts are sized so the plots
// stay readable when a phone scales the 600-unit-wide drawing down to about 360 px.
#include <algorithm>
#include <cmath>

#include "verify/report.h"
#include "verify/report_format.h"

namespace moetool::report_detail {

namespace {

constexpr double kW = 600, kH = 340, kL = 76, kR = 16, kT = 54, kB = 58;
constexpr double kPW = kW - kL - kR, kPH = kH - kT - kB;

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
  o += fmt("<text x=\"%.1f\" y=\"20\" class=\"t\">", kW / 2) + html_escape(title) + "</text>";
  o += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>", kL, kT, kPW, kPH);
  return o;
}

std::string svg_message(const std::string& title, const std::string& msg) {
  return svg_open(title, title) + fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"msg\">", kW / 2, kT + kPH / 2) +
         html_escape(msg) + "</text></svg>";
}

// 10^d as "0.01", "0.1", "1", "10", "100" near 1, else "1e-5".
std::string decade_label(int d) {
  if (d >= -2 && d <= 3) return fmt("%g", std::pow(10.0, d));
  return fmt("1e%d", d);
}

std::string hgrid(double y, const std::string& label) {
  return fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", kL, kL + kPW, y, y) +
         fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"yl\">", kL - 6, y + 5) + html_escape(label) + "</text>";
}

std::string axis_titles(const std::string& x, const std::string& y) {
  return fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xt\">", kL + kPW / 2, kH - 10) + html_escape(x) + "</text>" +
         fmt("<text x=\"16\" y=\"%.1f\" class=\"yt\" transform=\"rotate(-90 16 %.1f)\">", kT + kPH / 2, kT + kPH / 2) +
         html_escape(y) + "</text>";
}

// One line series of a plot over integer x (layers, chunks).
struct Series {
  std::string name, cls;
  std::vector<std::pair<double, double>> pts;
};

// Lines over integer x on a linear y axis [y0, y1] (widened when flat), or log10 when log_y.
// Points whose x is in `flag` get a ring and a "flagged" tooltip. A legend when there are two series.
std::string line_plot(const std::string& title, const std::string& aria, const std::vector<Series>& series,
                      const std::string& xlabel, const std::string& ylabel, bool log_y, double y0, double y1,
                      const std::vector<int64_t>& flag = {}) {
  double x0 = INFINITY, x1 = -INFINITY;
  for (const auto& s : series)
    for (const auto& p : s.pts) x0 = std::min(x0, p.first), x1 = std::max(x1, p.first);
  if (!std::isfinite(x0)) return svg_message(title, "no values");
  if (x1 <= x0) x0 -= 0.5, x1 += 0.5;
  if (y1 - y0 < 1e-12) {
    const double d = std::max(std::abs(y1) * 1e-3, 1e-6);
    y0 -= d, y1 += d;
  }
  auto X = [&](double x) { return kL + (x - x0) / (x1 - x0) * kPW; };
  auto Y = [&](double y) { return kT + kPH - ((log_y ? std::log10(y) : y) - y0) / (y1 - y0) * kPH; };
  std::string o = svg_open(title, aria);
  if (log_y) {
    for (int d = static_cast<int>(std::floor(y0)); d <= static_cast<int>(std::ceil(y1)); ++d)
      if (d >= y0 - 1e-9 && d <= y1 + 1e-9) o += hgrid(Y(std::pow(10.0, d)), decade_label(d));
  } else {
    for (double t : nice_ticks(y0, y1))
      if (t >= y0 && t <= y1) o += hgrid(Y(t), fmt("%.6g", t));
  }
  int64_t npts = 0;
  for (const auto& s : series) npts = std::max<int64_t>(npts, static_cast<int64_t>(s.pts.size()));
  for (double t : nice_ticks(x0, x1, static_cast<int>(std::min<int64_t>(8, std::max<int64_t>(1, npts)))))
    if (t >= x0 && t <= x1 && t == std::floor(t))
      o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%.0f</text>", X(t), kT + kPH + 20, t);
  for (const auto& s : series) {
    std::string path;
    for (const auto& p : s.pts) path += fmt("%s%.2f,%.2f", path.empty() ? "M" : " L", X(p.first), Y(p.second));
    o += "<path d=\"" + path + "\" class=\"line " + s.cls + "\"/>";
    for (const auto& p : s.pts) {
      const bool f = std::find(flag.begin(), flag.end(), static_cast<int64_t>(p.first)) != flag.end();
      o += fmt("<circle cx=\"%.2f\" cy=\"%.2f\" r=\"%s\" class=\"pt %s%s\"><title>%s %.0f: %.6g%s</title></circle>",
               X(p.first), Y(p.second), f ? "6" : "3.5", s.cls.c_str(), f ? " flag" : "",
               html_escape(s.name).c_str(), p.first, p.second, f ? " (flagged)" : "");
    }
  }
  if (series.size() > 1)
    for (size_t i = 0; i < series.size(); ++i) {
      // The legend sits between the title and the plot, clear of the data.
      const double lx = kL + 10 + 220.0 * static_cast<double>(i);
      o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"line %s\"/>", lx, lx + 22, kT - 12,
               kT - 12, series[i].cls.c_str());
      o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"lg\">", lx + 28, kT - 7) + html_escape(series[i].name) + "</text>";
    }
  return o + axis_titles(xlabel, ylabel) + "</svg>";
}

// The [lo, hi] of the series' values, padded by 8 %, hi at least `cap_hi` when that is above.
std::pair<double, double> range_of(const std::vector<Series>& series, double at_least_hi) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& s : series)
    for (const auto& p : s.pts) lo = std::min(lo, p.second), hi = std::max(hi, p.second);
  if (!std::isfinite(lo)) return {0, 1};
  hi = std::max(hi, at_least_hi);
  const double pad = (hi - lo) * 0.08;
  return {lo - pad, hi == at_least_hi ? hi : hi + pad};
}

}  // namespace

std::string svg_kld_histogram(const VerifyStats& s) {
  const KldHistogram& h = s.kld_histogram;
  const std::string title = "Per-token KL divergence (log x, log count)";
  if (h.edges.size() < 2 || h.counts.empty())
    return svg_message(title, s.n_tokens == 0 ? "no tokens were scored"
                                               : "all " + plural(s.n_tokens, "KLD value is", "KLD values are") +
                                                     " 0: the distributions are identical");
  const double lx0 = std::log10(h.edges.front()), lx1 = std::log10(h.edges.back());
  int64_t cmax = 1;
  for (int64_t c : h.counts) cmax = std::max(cmax, c);
  // Log count axis from 0.5 (a bar of one token stays visible) to the decade above the largest bin:
  // the few worst tokens are as visible as the many typical ones.
  const double d1 = std::ceil(std::log10(static_cast<double>(cmax)) + 0.15), c0 = std::log10(0.5);
  auto X = [&](double v) { return kL + (std::log10(v) - lx0) / (lx1 - lx0) * kPW; };
  auto Y = [&](double c) { return kT + kPH - (std::log10(c) - c0) / (d1 - c0) * kPH; };
  std::string o = svg_open(title, "Histogram of per-token KL divergence between base and candidate");
  for (int d = 0; d <= static_cast<int>(d1); ++d) o += hgrid(Y(std::pow(10.0, d)), decade_label(d));
  for (int d = static_cast<int>(std::round(lx0)); d <= static_cast<int>(std::round(lx1)); ++d) {
    const double x = X(std::pow(10.0, d));
    o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>", x, x, kT, kT + kPH);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%s</text>", x, kT + kPH + 20, decade_label(d).c_str());
  }
  for (size_t i = 0; i < h.counts.size(); ++i) {
    if (h.counts[i] == 0) continue;
    const double x0 = X(h.edges[i]), x1 = X(h.edges[i + 1]);
    const double y = Y(static_cast<double>(h.counts[i]));
    o += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" class=\"bar\"><title>[%.3g, %.3g): %s</title>"
             "</rect>",
             x0 + 0.5, y, std::max(0.5, x1 - x0 - 1.0), kT + kPH - y, h.edges[i], h.edges[i + 1],
             plural(h.counts[i], "token", "tokens").c_str());
  }
  auto marker = [&](double v, const char* name, const char* cls, double dy) {
    if (!(v >= h.edges.front() && v <= h.edges.back())) return;
    const double x = X(v);
    o += fmt("<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" class=\"%s\"><title>%s %.6g</title></line>", x, x,
             kT, kT + kPH, cls, name, v);
    o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"ml\">%s</text>", x + 4, kT + 16 + dy, name);
  };
  marker(s.kld.value, "mean", "mk1", 0);
  marker(quantile_value(s.kld_q, 0.99), "99%", "mk2", 18);
  o += axis_titles("KLD (nats) per scored token", "tokens (log)") + "</svg>";
  if (h.below > 0)
    o += "<p class=\"note\">" + plural(h.below, "token", "tokens") +
         fmt(" with KLD below %.3g (zero or rounding-negative) not drawn.</p>", h.edges.front());
  return o;
}

std::string svg_layer_cosine(const std::vector<LayerSimilarity>& layers, const std::vector<int64_t>& flagged) {
  Series mean{"mean cosine", "s1", {}}, mn{"minimum cosine", "s2", {}};
  for (const auto& l : layers) {
    if (std::isfinite(l.mean_cosine)) mean.pts.push_back({static_cast<double>(l.layer), l.mean_cosine});
    if (std::isfinite(l.min_cosine)) mn.pts.push_back({static_cast<double>(l.layer), l.min_cosine});
  }
  const auto [y0, y1] = range_of({mean, mn}, 1.0);
  return line_plot("Per-layer hidden-state cosine: mean and minimum",
                   "Per-layer mean and minimum cosine similarity of hidden states between base and candidate",
                   {mean, mn}, "layer", "cosine", false, y0, y1, flagged);
}

std::string svg_layer_nmse(const std::vector<LayerSimilarity>& layers) {
  Series s{"NMSE", "s1", {}};
  bool log_y = true;
  for (const auto& l : layers)
    if (std::isfinite(l.nmse)) {
      s.pts.push_back({static_cast<double>(l.layer), l.nmse});
      if (!(l.nmse > 0)) log_y = false;
    }
  if (s.pts.empty()) return svg_message("Per-layer NMSE of hidden states", "no per-layer values");
  double y0, y1;
  if (log_y) {
    y0 = INFINITY, y1 = -INFINITY;
    for (const auto& p : s.pts) y0 = std::min(y0, std::log10(p.second)), y1 = std::max(y1, std::log10(p.second));
    y0 = std::floor(y0), y1 = std::ceil(y1);
    if (y1 <= y0) y1 = y0 + 1;
  } else {
    std::tie(y0, y1) = range_of({s}, -INFINITY);
  }
  return line_plot("Per-layer NMSE of hidden states", "Per-layer NMSE of hidden states between base and candidate",
                   {s}, "layer", log_y ? "NMSE (log)" : "NMSE", log_y, y0, y1);
}

std::string svg_chunk_kld(const std::vector<ChunkProgress>& chunks) {
  Series s{"mean KLD of the chunk", "s1", {}};
  for (const auto& c : chunks)
    if (std::isfinite(c.chunk_kld)) s.pts.push_back({static_cast<double>(c.chunk), c.chunk_kld});
  const auto [y0, y1] = range_of({s}, -INFINITY);
  return line_plot("Mean KLD per chunk", "Mean KL divergence of each chunk", {s}, "chunk", "KLD (nats)", false,
                   std::min(0.0, y0), y1);
}

std::string svg_routing_layers(const RoutingFidelity& f) {
  Series same{"same expert set", "s1", {}}, jac{"Jaccard overlap", "s2", {}};
  for (const auto& l : f.layers)
    if (l.mapped()) {
      same.pts.push_back({static_cast<double>(l.layer), l.same_set});
      jac.pts.push_back({static_cast<double>(l.layer), l.jaccard});
    }
  if (same.pts.empty()) return svg_message("Routing fidelity per MoE layer", "no layer could be mapped to the base");
  const auto [y0, y1] = range_of({same, jac}, 1.0);
  return line_plot("Routing fidelity per MoE layer", "Fraction of tokens routed to the same experts as the base, per layer",
                   {same, jac}, "layer", "fraction of tokens", false, std::min(y0, 0.0), y1);
}

std::string svg_expert_load(const LayerRouting& l) {
  const std::string title = fmt("Expert load, layer %lld (share of routing slots)", static_cast<long long>(l.layer));
  const std::vector<double>& cand = l.cand_load;
  const std::vector<double>& base = l.mapped() ? l.base_load_mapped : l.base_load;
  const size_t n = std::max(cand.size(), base.size());
  if (n == 0) return svg_message(title, "no experts");
  double top = 0;
  for (double v : cand) top = std::max(top, std::isfinite(v) ? v : 0.0);
  for (double v : base) top = std::max(top, std::isfinite(v) ? v : 0.0);
  top = top > 0 ? top * 1.12 : 1.0;
  auto Y = [&](double v) { return kT + kPH - v / top * kPH; };
  std::string o = svg_open(title, title + ": base and candidate");
  for (double t : nice_ticks(0, top))
    if (t <= top) o += hgrid(Y(t), fmt("%g %%", 100 * t));
  const double slot = kPW / static_cast<double>(n), bw = std::max(1.0, slot * 0.38);
  auto bar = [&](size_t i, double v, double dx, const char* cls, const char* who) {
    if (!std::isfinite(v)) return;
    const double x = kL + slot * static_cast<double>(i) + slot * 0.1 + dx;
    o += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" class=\"%s\"><title>%s expert %zu: %.2f %%"
             "</title></rect>",
             x, Y(v), bw, kT + kPH - Y(v), cls, who, i, 100 * v);
  };
  const bool side = l.mapped() || base.size() == cand.size();
  for (size_t i = 0; i < n; ++i) {
    if (i < base.size() && (side || !l.mapped())) bar(i, base[i], 0, "bar b0", l.mapped() ? "base (mapped) →" : "base");
    if (i < cand.size()) bar(i, cand[i], bw, "bar c0", "candidate");
    if (n <= 32)
      o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"xl\">%zu</text>", kL + slot * (static_cast<double>(i) + 0.5),
               kT + kPH + 20, i);
  }
  o += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"12\" class=\"bar b0\"/>", kL + 10, kT - 18);
  o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"lg\">base%s</text>", kL + 30, kT - 7,
           l.mapped() ? " (through the mapping)" : "");
  o += fmt("<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"12\" class=\"bar c0\"/>", kL + 260, kT - 18);
  o += fmt("<text x=\"%.1f\" y=\"%.1f\" class=\"lg\">candidate</text>", kL + 280, kT - 7);
  return o + axis_titles(l.mapped() ? "candidate expert" : "expert", "share of slots") + "</svg>";
}

}  // namespace moetool::report_detail
