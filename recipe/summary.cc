// recipe/summary.cc — summary.json, summary.md, summary.html and junit.xml of a `moetool run` (see
// summary.h).
#include "recipe/summary.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/fs.h"
#include "verify/report.h"

namespace moetool::recipe {

namespace {

using J = nlohmann::ordered_json;

std::string f(const char* fmt, double v) {
  if (!std::isfinite(v)) return "–";
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

std::string mib(uint64_t b) { return b ? f("%.2f MiB", static_cast<double>(b) / (1024.0 * 1024.0)) : "–"; }

// The verdict cell: the step's status when it did not complete, else its gates' verdict.
std::string verdict(const StepResult& s) {
  if (s.status == "failed") return "ERROR";
  if (s.status == "skipped") return "SKIPPED";
  if (!s.verified) return "not verified";
  for (const auto& g : s.gates)
    if (!g.passed) return "FAIL";
  return s.gates.empty() ? "UNCHECKED" : "PASS";
}

// A "nice" tick step (1, 2 or 5 × 10^k) for about four intervals up to `top`.
double tick_step(double top) {
  const double raw = top / 4, mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * mag >= raw) return m * mag;
  return 10 * mag;
}

std::string svg_size_kld(const RunResult& r) {
  struct P {
    double x, y;
    std::string label;
    bool input;
  };
  std::vector<P> pts;
  const bool one_model = r.models.size() == 1;
  for (const auto& m : r.models) {
    bool any = false;
    for (const auto& s : m.steps)
      if (s.verified && std::isfinite(s.kld) && s.bytes) {
        pts.push_back({static_cast<double>(s.bytes) / (1024.0 * 1024.0), s.kld, one_model ? s.name : m.key + "/" + s.name,
                       false});
        any = true;
      }
    if (any && m.bytes)  // the checkpoint itself: KLD 0 against itself
      pts.push_back({static_cast<double>(m.bytes) / (1024.0 * 1024.0), 0.0, one_model ? "input" : m.key, true});
  }
  const double W = 600, H = 340, L = 76, R = 20, T = 40, B = 58, pw = W - L - R, ph = H - T - B;
  std::string o = str("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 ", W, " ", H, "\" width=\"", W,
                      "\" height=\"", H, "\" role=\"img\" aria-label=\"Size against mean KLD of every verified step\">");
  o += "<title>Size against mean KLD of every verified step</title>";
  o += str("<text x=\"", W / 2, "\" y=\"22\" class=\"t\">Size vs mean KLD (every verified step)</text>");
  o += str("<rect x=\"", L, "\" y=\"", T, "\" width=\"", pw, "\" height=\"", ph, "\" class=\"frame\"/>");
  if (pts.empty())
    return o + str("<text x=\"", W / 2, "\" y=\"", T + ph / 2, "\" class=\"msg\">no verified step</text></svg>");
  double xm = 0, ym = 0;
  for (const auto& p : pts) xm = std::max(xm, p.x), ym = std::max(ym, p.y);
  const double xs = tick_step(xm > 0 ? xm * 1.05 : 1), ys = tick_step(ym > 0 ? ym * 1.1 : 1);
  xm = std::ceil((xm > 0 ? xm * 1.05 : 1) / xs) * xs, ym = std::ceil((ym > 0 ? ym * 1.1 : 1) / ys) * ys;
  auto X = [&](double x) { return L + x / xm * pw; };
  auto Y = [&](double y) { return T + ph - y / ym * ph; };
  for (double xv = 0; xv <= xm * (1 + 1e-9); xv += xs) {
    o += str("<line x1=\"", X(xv), "\" x2=\"", X(xv), "\" y1=\"", T, "\" y2=\"", T + ph, "\" class=\"grid\"/>");
    o += str("<text x=\"", X(xv), "\" y=\"", T + ph + 20, "\" class=\"xl\">", f("%g", xv), "</text>");
  }
  for (double yv = 0; yv <= ym * (1 + 1e-9); yv += ys) {
    o += str("<line x1=\"", L, "\" x2=\"", L + pw, "\" y1=\"", Y(yv), "\" y2=\"", Y(yv), "\" class=\"grid\"/>");
    o += str("<text x=\"", L - 6, "\" y=\"", Y(yv) + 5, "\" class=\"yl\">", f("%g", yv), "</text>");
  }
  for (const auto& p : pts) {
    const bool left = X(p.x) > L + 0.6 * pw;  // labels of points on the right go to their left
    o += str("<circle cx=\"", X(p.x), "\" cy=\"", Y(p.y), "\" r=\"7\" class=\"", p.input ? "pt in" : "pt",
             "\"><title>", html_escape(p.label), ": ", f("%.2f", p.x), " MiB, KLD ", f("%.5f", p.y), "</title></circle>");
    o += str("<text x=\"", X(p.x) + (left ? -10 : 10), "\" y=\"", Y(p.y) - 9, "\" class=\"lg\"",
             left ? " text-anchor=\"end\"" : "", ">", html_escape(p.label), "</text>");
  }
  o += str("<text x=\"", L + pw / 2, "\" y=\"", H - 10, "\" class=\"xt\">size (MiB)</text>");
  o += str("<text x=\"16\" y=\"", T + ph / 2, "\" class=\"yt\" transform=\"rotate(-90 16 ", T + ph / 2,
           ")\">mean KLD (nats)</text></svg>");
  return o;
}

const char* kCss = R"CSS(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:960px;color:#1b1f24;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:left}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}.badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.pass{background:#1a7f37}.fail{background:#cf222e}.error{background:#8250df}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
svg{display:block;margin:.75rem 0;max-width:100%;height:auto;font-family:inherit}
svg .t{font-size:16px;text-anchor:middle;font-weight:600}svg .frame{fill:none;stroke:#8c959f}svg .grid{stroke:#eaeef2}
svg .pt{fill:#0969da}svg .pt.in{fill:#8c959f}svg .xl{font-size:14px;text-anchor:middle}svg .yl{font-size:14px;text-anchor:end}svg .lg{font-size:13px}
svg .xt,svg .yt{font-size:15px;text-anchor:middle}svg .msg{font-size:15px;text-anchor:middle;fill:#57606a}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9em;overflow-wrap:anywhere}.note{color:#57606a;font-size:.9em}
)CSS";

std::string overall(const RunResult& r) {
  return r.any_error() ? "ERROR" : r.gate_failed() ? "FAIL" : "PASS";
}

}  // namespace

nlohmann::ordered_json summary_json(const RunResult& r) {
  J j;
  j["schema"] = "moetool.run.summary/1";
  j["recipe"] = r.recipe;
  j["name"] = r.name;
  j["output"] = r.output;
  j["seconds"] = r.seconds;
  j["exit_code"] = r.exit_code();
  J ms = J::array();
  for (const auto& m : r.models) {
    J steps = J::array();
    for (const auto& s : m.steps) {
      J st = to_json(s);
      st["verdict"] = verdict(s);
      steps.push_back(std::move(st));
    }
    ms.push_back({{"model", m.model}, {"key", m.key}, {"error", m.error}, {"bytes", m.bytes}, {"steps", steps}});
  }
  j["models"] = ms;
  return j;
}

std::string summary_markdown(const RunResult& r) {
  std::string o = "### moetool run: " + overall(r) + (r.name.empty() ? "" : " — " + markdown_escape(r.name)) + "\n\n";
  o += "| model | step | size | KLD | top-1 | PPL ratio | verdict |\n|---|---|---|---|---|---|---|\n";
  for (const auto& m : r.models) {
    if (!m.error.empty()) {
      o += "| " + markdown_escape(m.key) + " | – | – | – | – | – | ERROR: " + markdown_escape(m.error) + " |\n";
      continue;
    }
    o += "| " + markdown_escape(m.key) + " | (input) | " + mib(m.bytes) + " | | | | |\n";
    for (const auto& s : m.steps) {
      std::string v = verdict(s);
      if (!s.error.empty()) v += ": " + s.error;
      for (const auto& g : s.gates)
        if (!g.passed) v += "; " + g.message;
      o += "| " + markdown_escape(m.key) + " | " + markdown_escape(s.name) + " | " + mib(s.bytes) + " | " +
           f("%.5f", s.kld) + " | " + f("%.2f %%", 100 * s.top1) + " | " + f("%.4f", s.ppl_ratio) + " | " +
           markdown_escape(v) + " |\n";
    }
  }
  return o + "\n";
}

std::string summary_text(const RunResult& r) {
  std::vector<std::vector<std::string>> rows = {{"model", "step", "size", "KLD", "top-1", "PPL ratio", "verdict"}};
  std::vector<std::string> notes;
  for (const auto& m : r.models) {
    if (!m.error.empty()) {
      rows.push_back({m.key, "-", "-", "-", "-", "-", "ERROR"});
      notes.push_back(m.key + ": cannot be used: " + m.error);
      continue;
    }
    rows.push_back({m.key, "(input)", mib(m.bytes), "", "", "", ""});
    for (const auto& s : m.steps) {
      rows.push_back({m.key, s.name, mib(s.bytes), f("%.5f", s.kld), f("%.2f %%", 100 * s.top1), f("%.4f", s.ppl_ratio),
                      verdict(s)});
      if (!s.error.empty()) notes.push_back(m.key + "/" + s.name + ": " + s.error);
      for (const auto& g : s.gates)
        if (!g.passed) notes.push_back(m.key + "/" + s.name + ": " + g.message);
    }
  }
  std::vector<size_t> w(rows[0].size(), 0);
  auto width = [](const std::string& x) {  // code points, for "–"
    size_t n = 0;
    for (unsigned char c : x) n += (c & 0xC0) != 0x80;
    return n;
  };
  for (const auto& row : rows)
    for (size_t k = 0; k < row.size(); ++k) w[k] = std::max(w[k], width(row[k]));
  std::string o = "moetool run: " + overall(r) + (r.name.empty() ? "" : " — " + r.name) + "\n";
  for (const auto& row : rows) {
    for (size_t k = 0; k < row.size(); ++k) o += row[k] + std::string(w[k] - width(row[k]) + 2, ' ');
    while (!o.empty() && o.back() == ' ') o.pop_back();
    o += "\n";
  }
  for (const auto& n : notes) o += "  " + n + "\n";
  return o;
}

std::string summary_html(const RunResult& r) {
  const std::string v = overall(r);
  const std::string cls = v == "PASS" ? "pass" : v == "FAIL" ? "fail" : "error";
  std::string o = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>moetool run: " +
                  v + "</title>\n<style>" + kCss + "</style>\n</head>\n<body>\n";
  o += "<h1>moetool run <span class=\"badge " + cls + "\" id=\"verdict\">" + v + "</span></h1>\n";
  o += "<p>Recipe <code>" + html_escape(r.recipe) + "</code>" + (r.name.empty() ? "" : " (" + html_escape(r.name) + ")") +
       str(", ", r.models.size(), " model(s), ", f("%.1f", r.seconds), " s.</p>\n");
  o += "<div class=\"scroll\"><table id=\"summary\">\n<tr><th>model</th><th>step</th><th>size</th><th>KLD</th>"
       "<th>top-1</th><th>PPL ratio</th><th>verdict</th><th>report</th></tr>\n";
  for (const auto& m : r.models) {
    if (!m.error.empty()) {
      o += "<tr><td>" + html_escape(m.key) + "</td><td colspan=\"7\" class=\"bad\">cannot be used: " +
           html_escape(m.error) + "</td></tr>\n";
      continue;
    }
    o += "<tr><td>" + html_escape(m.key) + "</td><td>(input)</td><td class=\"n\">" + mib(m.bytes) +
         "</td><td></td><td></td><td></td><td></td><td></td></tr>\n";
    for (const auto& s : m.steps) {
      const std::string vd = verdict(s);
      std::string cell = html_escape(vd);
      if (!s.error.empty()) cell += ": " + html_escape(s.error);
      for (const auto& g : s.gates)
        if (!g.passed) cell += "<br>" + html_escape(g.message);
      const bool good = vd == "PASS" || vd == "UNCHECKED" || vd == "not verified";
      o += "<tr><td>" + html_escape(m.key) + "</td><td>" + html_escape(s.name) + "</td><td class=\"n\">" + mib(s.bytes) +
           "</td><td class=\"n\">" + f("%.5f", s.kld) + "</td><td class=\"n\">" + f("%.2f %%", 100 * s.top1) +
           "</td><td class=\"n\">" + f("%.4f", s.ppl_ratio) + "</td><td class=\"" + (good ? "ok" : "bad") + "\">" +
           cell + "</td><td>" +
           (s.report.empty() ? "" : "<a href=\"" + html_escape(s.report) + "\">report</a>") + "</td></tr>\n";
    }
  }
  o += "</table></div>\n";
  o += svg_size_kld(r) + "\n";
  o += "<p class=\"note\">KLD, top-1 and PPL ratio: each step's output against the model its verification names "
       "(by default the original checkpoint), from <code>moetool verify</code>; sizes are tensor bytes.</p>\n";
  return o + "</body>\n</html>\n";
}

std::string summary_junit(const RunResult& r) {
  struct Case {
    std::string cls, name, failure, detail;
  };
  std::vector<Case> cases;
  for (const auto& m : r.models) {
    if (!m.error.empty()) {
      cases.push_back({"moetool.run." + m.key, "model", "cannot be used: " + m.error, m.model});
      continue;
    }
    for (const auto& s : m.steps) {
      const std::string cls = "moetool.run." + m.key + "." + s.name;
      if (s.status == "failed" || s.status == "skipped") cases.push_back({cls, "step", s.status + ": " + s.error, ""});
      for (const auto& g : s.gates) cases.push_back({cls, g.name, g.passed ? "" : g.message, g.message});
    }
  }
  int fails = 0;
  for (const auto& c : cases) fails += c.failure.empty() ? 0 : 1;
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += str("<testsuites name=\"moetool\" tests=\"", cases.size(), "\" failures=\"", fails, "\" errors=\"0\" time=\"",
           f("%.3f", r.seconds), "\">\n");
  o += str("  <testsuite name=\"moetool.run\" tests=\"", cases.size(), "\" failures=\"", fails,
           "\" errors=\"0\" skipped=\"0\" time=\"", f("%.3f", r.seconds), "\">\n");
  for (const auto& c : cases) {
    o += "    <testcase classname=\"" + html_escape(c.cls) + "\" name=\"" + html_escape(c.name) + "\" time=\"0\"";
    if (c.failure.empty()) {
      o += "/>\n";
      continue;
    }
    o += ">\n      <failure type=\"gate\" message=\"" + html_escape(c.failure) + "\">" + html_escape(c.detail) +
         "</failure>\n    </testcase>\n";
  }
  return o + "  </testsuite>\n</testsuites>\n";
}

void write_summary(const RunResult& r) {
  write_file_atomic(path_join(r.output, "summary.json"), summary_json(r).dump(2) + "\n");
  write_file_atomic(path_join(r.output, "summary.md"), summary_markdown(r));
  write_file_atomic(path_join(r.output, "summary.html"), summary_html(r));
  write_file_atomic(path_join(r.output, "junit.xml"), summary_junit(r));
}

}  // namespace moetool::recipe
