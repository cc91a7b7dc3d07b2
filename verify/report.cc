// verify/report.cc — text, JSON, Markdown and JUnit reports of `moetool verify`, the escapes and the
// report directory (see report.h; HTML: report_html.cc).
#include "verify/report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "core/error.h"
#include "core/fs.h"
#include "core/utf8.h"
#include "verify/report_format.h"

namespace moetool {

namespace report_detail {

std::string fmt(const char* f, ...) {
  va_list ap, ap2;
  va_start(ap, f);
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, f, ap);
  va_end(ap);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, f, ap2);
  va_end(ap2);
  return s;
}

const char* scored_description(ScoredPositions s) {
  return s == ScoredPositions::kSecondHalf ? "second half of each chunk (llama.cpp)"
                                           : "every token after the first of each chunk";
}

std::string yes_pass(bool p) { return p ? "PASS" : "FAIL"; }

std::string num(double v, const char* f) {
  if (std::isnan(v)) return "n/a";
  return fmt(f, v);
}
std::string pct(double v, const char* f) {
  if (std::isnan(v)) return "n/a";
  return fmt(f, 100.0 * v) + " %";
}
std::string pm(const Estimate& e, const char* f) {
  if (std::isnan(e.value)) return "n/a";
  return num(e.value, f) + " ± " + num(e.unc, f);
}
std::string pm_pct(const Estimate& e, const char* f) {
  if (std::isnan(e.value)) return "n/a";
  return fmt(f, 100.0 * e.value) + " ± " + fmt(f, 100.0 * e.unc) + " %";
}
std::string limit_str(const ThresholdResult& t) {
  return t.name == "min_top1" ? fmt("%.6g", t.limit) + " (" + pct(t.limit) + ")" : fmt("%.6g", t.limit);
}
std::string value_str(const ThresholdResult& t) {
  if (std::isnan(t.value)) return "n/a";
  return t.name == "min_top1" ? pct(t.value) : fmt("%.6g", t.value);
}

Verdict verdict_of(const VerifyReport& r) {
  return {evaluate(r.stats, r.thresholds), check(r.stats, r.thresholds)};
}

}  // namespace report_detail

using namespace report_detail;

namespace {

nlohmann::ordered_json jnum(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}
nlohmann::ordered_json jest(const Estimate& e) {
  nlohmann::ordered_json j;
  j["value"] = jnum(e.value);
  j["unc"] = jnum(e.unc);
  return j;
}

// Rewrites s code point by code point (invalid UTF-8 bytes read as U+FFFD): & < > become HTML
// entities (which Markdown renders too), put(o, cp) appends what stands for any other cp.
template <class F>
std::string escape_chars(const std::string& s, const F& put) {
  std::string o;
  o.reserve(s.size() + 16);
  for (const U8Char& c : utf8_chars(s)) {
    switch (c.cp) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      default: put(o, c.cp);
    }
  }
  return o;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

std::string html_escape(const std::string& s) {
  return escape_chars(s, [](std::string& o, char32_t cp) {
    switch (cp) {
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default:
        if ((cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7F || cp == 0xFFFE || cp == 0xFFFF)
          utf8_append(o, 0xFFFD);
        else
          utf8_append(o, cp);
    }
  });
}

std::string markdown_escape(const std::string& s) {
  return escape_chars(s, [](std::string& o, char32_t cp) {
    switch (cp) {
      case '\n':
      case '\r':
      case '\t': o += ' '; break;
      case '\\': case '`': case '*': case '_': case '[': case ']': case '|': case '~': case '#': case '!':
      case '$':
        o += '\\';
        o += static_cast<char>(cp);
        break;
      default:
        if (cp < 0x20 || cp == 0x7F)
          utf8_append(o, 0xFFFD);
        else
          utf8_append(o, cp);
    }
  });
}

bool passed(const VerifyReport& r) { return check(r.stats, r.thresholds).empty(); }

// ---------------------------------------------------------------------------------------------
// Text.

std::string to_text(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  std::string o;
  o += "moetool verify\n";
  o += "  base       : " + r.run.base + "\n";
  o += "  candidate  : " + r.run.candidate + "\n";
  if (!r.run.text.empty()) o += "  text       : " + r.run.text + "\n";
  if (!r.run.base_logits.empty()) o += "  base file  : " + r.run.base_logits + "\n";
  o += fmt("  context    : %lld tokens per chunk, %lld chunks; scored: %s\n", static_cast<long long>(r.run.n_ctx),
           static_cast<long long>(s.n_chunks), scored_description(r.run.scored));
  o += fmt("  scored     : %lld tokens\n", static_cast<long long>(s.n_tokens));
  if (r.run.dynamic_topk > 0)
    o += fmt("  dynamic top-k: threshold %g, %lld of %lld expert computations skipped (%.2f %%)\n",
             r.run.dynamic_topk, static_cast<long long>(r.run.skipped_pairs), static_cast<long long>(r.run.routed_pairs),
             r.run.routed_pairs ? 100.0 * static_cast<double>(r.run.skipped_pairs) / static_cast<double>(r.run.routed_pairs) : 0.0);
  o += "\n";

  // llama.cpp's per-chunk table (running values).
  o += "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS"
       "            Same top p\n";
  for (const ChunkProgress& c : s.chunks) {
    o += fmt("%4lld", static_cast<long long>(c.chunk));
    o += fmt("    %9.4lf ± %9.4lf", c.ppl_q.value, c.ppl_q.unc);
    o += fmt("    %10.5lf ± %10.5lf", c.ln_ppl_ratio.value, c.ln_ppl_ratio.unc);
    o += fmt("    %10.5lf ± %10.5lf", c.kld.value, c.kld.unc);
    o += fmt("    %6.3lf ± %6.3lf %%", 100.0 * c.rms_dp.value, 100.0 * c.rms_dp.unc);
    o += fmt("    %6.3lf ± %6.3lf %%", 100.0 * c.same_top.value, 100.0 * c.same_top.unc);
    o += "\n";
  }
  o += "\n";
  if (s.n_tokens == 0) {
    o += "no tokens were scored\n";
  } else {
    if (s.n_tokens < 100)
      o += fmt("(only %lld tokens scored: llama.cpp prints the statistics below only from 100 on)\n",
               static_cast<long long>(s.n_tokens));
    o += "====== Perplexity statistics ======\n";
    o += fmt("Mean PPL(Q)                   : %10.6lf ± %10.6lf\n", s.ppl_q.value, s.ppl_q.unc);
    o += fmt("Mean PPL(base)                : %10.6lf ± %10.6lf\n", s.ppl_base.value, s.ppl_base.unc);
    o += fmt("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2lf%%\n", 100.0 * s.cor_ln_ppl);
    o += fmt("Mean ln(PPL(Q)/PPL(base))     : %10.6lf ± %10.6lf\n", s.ln_ppl_ratio.value, s.ln_ppl_ratio.unc);
    o += fmt("Mean PPL(Q)/PPL(base)         : %10.6lf ± %10.6lf\n", s.ppl_ratio.value, s.ppl_ratio.unc);
    o += fmt("Mean PPL(Q)-PPL(base)         : %10.6lf ± %10.6lf\n", s.ppl_diff.value, s.ppl_diff.unc);
    o += "\n";
    o += "====== KL divergence statistics ======\n";
    o += fmt("Mean    KLD: %10.6lf ± %10.6lf\n", s.kld.value, s.kld.unc);
    for (const Quantile& q : s.kld_q) {
      std::string label = quantile_label(q.q);
      if (q.q > 0 && q.q < 1 && q.q != 0.5) label += "  ";  // "99.9%   KLD", " 5.0%   KLD"
      o += fmt("%s KLD: %10.6f\n", label.c_str(), q.value);
    }
    o += "\n";
    o += "====== Token probability statistics ======\n";
    o += fmt("Mean    Δp: %6.3lf ± %5.3lf %%\n", 100.0 * s.delta_p.value, 100.0 * s.delta_p.unc);
    for (const Quantile& q : s.delta_p_q) {
      std::string label = quantile_label(q.q);
      if (q.q > 0 && q.q < 1 && q.q != 0.5) label += "  ";
      o += fmt("%s Δp: %6.3lf%%\n", label.c_str(), 100.0 * q.value);
    }
    o += fmt("RMS Δp    : %6.3lf ± %5.3lf %%\n", 100.0 * s.rms_delta_p.value, 100.0 * s.rms_delta_p.unc);
    o += fmt("Same top p: %6.3lf ± %5.3lf %%\n", 100.0 * s.same_top.value, 100.0 * s.same_top.unc);
  }
  if (!r.layers.empty()) {
    o += "\n====== Hidden-state similarity ======\n";
    o += "layer      rows   mean cos    min cos          NMSE\n";
    for (const LayerSimilarity& l : r.layers)
      o += fmt("%5lld  %8lld  %9.6f  %9.6f  %12.6e\n", static_cast<long long>(l.layer), static_cast<long long>(l.rows),
               l.mean_cosine, l.min_cosine, l.nmse);
  }
  o += "\n====== Thresholds ======\n";
  const auto [results, failures] = verdict_of(r);
  if (results.empty()) o += "(none set)\n";
  for (const auto& t : results) o += t.message + "\n";
  o += fmt("\nVerdict: %s", yes_pass(failures.empty()).c_str());
  if (!failures.empty()) o += fmt(" (%zu problem%s)", failures.size(), failures.size() == 1 ? "" : "s");
  o += "\n";
  return o;
}

// ---------------------------------------------------------------------------------------------
// JSON.

nlohmann::ordered_json to_json(const VerifyReport& r) {
  using J = nlohmann::ordered_json;
  const VerifyStats& s = r.stats;
  J j;
  j["schema"] = "moetool.verify.report/1";
  const auto failures = check(s, r.thresholds);
  j["verdict"] = failures.empty() ? "pass" : "fail";
  j["failures"] = failures;
  J run;
  run["base"] = r.run.base;
  run["candidate"] = r.run.candidate;
  run["text"] = r.run.text;
  run["base_logits"] = r.run.base_logits;
  run["n_ctx"] = r.run.n_ctx;
  run["scored_positions"] = scored_positions_name(r.run.scored);
  run["moetool_version"] = r.run.moetool_version;
  run["command"] = r.run.command;
  run["seconds"] = jnum(r.run.seconds);
  j["run"] = run;
  if (r.run.dynamic_topk > 0)
    j["dynamic_topk"] = {{"threshold", r.run.dynamic_topk}, {"routed", r.run.routed_pairs},
                         {"skipped", r.run.skipped_pairs},
                         {"skipped_fraction", r.run.routed_pairs ? static_cast<double>(r.run.skipped_pairs) /
                                                                       static_cast<double>(r.run.routed_pairs)
                                                                 : 0.0}};
  j["counts"] = {{"tokens", s.n_tokens}, {"chunks", s.n_chunks}};
  J ppl;
  ppl["ppl_q"] = jest(s.ppl_q);
  ppl["ppl_base"] = jest(s.ppl_base);
  ppl["cor_ln_ppl"] = jnum(s.cor_ln_ppl);
  ppl["ln_ppl_ratio"] = jest(s.ln_ppl_ratio);
  ppl["ppl_ratio"] = jest(s.ppl_ratio);
  ppl["ppl_diff"] = jest(s.ppl_diff);
  j["perplexity"] = ppl;
  J kld;
  kld["mean"] = jest(s.kld);
  for (const Quantile& q : s.kld_q) kld[quantile_key(q.q)] = jnum(q.value);
  J hist;
  hist["log_x"] = s.kld_histogram.log_x;
  hist["edges"] = s.kld_histogram.edges;
  hist["counts"] = s.kld_histogram.counts;
  hist["below"] = s.kld_histogram.below;
  kld["histogram"] = hist;
  j["kld"] = kld;
  J dp;
  dp["mean"] = jest(s.delta_p);
  dp["rms"] = jest(s.rms_delta_p);
  for (const Quantile& q : s.delta_p_q) dp[quantile_key(q.q)] = jnum(q.value);
  j["delta_p"] = dp;
  j["same_top_p"] = jest(s.same_top);
  J layers = J::array();
  for (const LayerSimilarity& l : r.layers)
    layers.push_back({{"layer", l.layer},
                      {"rows", l.rows},
                      {"mean_cosine", jnum(l.mean_cosine)},
                      {"min_cosine", jnum(l.min_cosine)},
                      {"nmse", jnum(l.nmse)}});
  j["layers"] = layers;
  J chunks = J::array();
  for (const ChunkProgress& c : s.chunks)
    chunks.push_back({{"chunk", c.chunk},
                      {"tokens", c.tokens},
                      {"ppl_q", jest(c.ppl_q)},
                      {"ln_ppl_ratio", jest(c.ln_ppl_ratio)},
                      {"kld", jest(c.kld)},
                      {"rms_delta_p", jest(c.rms_dp)},
                      {"same_top_p", jest(c.same_top)}});
  j["chunks"] = chunks;
  J th = J::array();
  for (const ThresholdResult& t : evaluate(s, r.thresholds))
    th.push_back({{"name", t.name},
                  {"metric", t.metric},
                  {"limit", jnum(t.limit)},
                  {"value", jnum(t.value)},
                  {"passed", t.passed},
                  {"message", t.message}});
  j["thresholds"] = th;
  return j;
}

// ---------------------------------------------------------------------------------------------
// Markdown.

std::string to_markdown(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  const auto [results, failures] = verdict_of(r);
  const bool ok = failures.empty();
  std::string o;
  if (ok) {
    o += "### ✅ moetool verify: PASS\n\n";
  } else {
    o += fmt("### ❌ moetool verify: FAIL (%zu problem%s)\n\n", failures.size(), failures.size() == 1 ? "" : "s");
    for (const auto& f : failures) o += "- " + markdown_escape(f) + "\n";
    o += "\n";
  }
  o += "**Base:** " + markdown_escape(r.run.base) + "  \n";
  o += "**Candidate:** " + markdown_escape(r.run.candidate) + "  \n";
  if (!r.run.text.empty()) o += "**Text:** " + markdown_escape(r.run.text) + "  \n";
  if (!r.run.base_logits.empty()) o += "**Base log-probabilities:** " + markdown_escape(r.run.base_logits) + "  \n";
  o += fmt("**Scored:** %lld tokens in %lld chunks of %lld tokens; %s\n\n", static_cast<long long>(s.n_tokens),
           static_cast<long long>(s.n_chunks), static_cast<long long>(r.run.n_ctx), scored_description(r.run.scored));

  o += "| metric | value |\n|---|---|\n";
  o += "| Mean KLD | " + pm(s.kld) + " |\n";
  o += "| 99.9% KLD | " + num(quantile_value(s.kld_q, 0.999)) + " |\n";
  o += "| 99% KLD | " + num(quantile_value(s.kld_q, 0.99)) + " |\n";
  o += "| Median KLD | " + num(quantile_value(s.kld_q, 0.5)) + " |\n";
  o += "| Maximum KLD | " + num(quantile_value(s.kld_q, 1.0)) + " |\n";
  o += "| Same top p | " + pm_pct(s.same_top) + " |\n";
  o += "| PPL(Q) | " + pm(s.ppl_q) + " |\n";
  o += "| PPL(base) | " + pm(s.ppl_base) + " |\n";
  o += "| PPL(Q)/PPL(base) | " + pm(s.ppl_ratio) + " |\n";
  o += "| Mean ln(PPL(Q)/PPL(base)) | " + pm(s.ln_ppl_ratio) + " |\n";
  o += "| Mean Δp | " + pm_pct(s.delta_p) + " |\n";
  o += "| RMS Δp | " + pm_pct(s.rms_delta_p) + " |\n";
  o += "\n";

  o += "#### Thresholds\n\n";
  if (results.empty()) {
    o += "No thresholds were set.\n\n";
  } else {
    o += "| threshold | metric | limit | value | result |\n|---|---|---|---|---|\n";
    for (const auto& t : results)
      o += "| " + markdown_escape(t.name) + " | " + markdown_escape(t.metric) + " | " + limit_str(t) + " | " +
           value_str(t) + " | " + (t.passed ? "✅ pass" : "❌ fail") + " |\n";
    o += "\n";
  }
  if (!r.layers.empty()) {
    o += "<details><summary>Per-layer hidden-state similarity</summary>\n\n";
    o += "| layer | mean cosine | min cosine | NMSE |\n|---|---|---|---|\n";
    for (const auto& l : r.layers)
      o += fmt("| %lld | ", static_cast<long long>(l.layer)) + num(l.mean_cosine) + " | " + num(l.min_cosine) + " | " +
           num(l.nmse, "%.4e") + " |\n";
    o += "\n</details>\n\n";
  }
  if (!r.run.moetool_version.empty() || !r.run.command.empty()) {
    o += "<sub>moetool " + markdown_escape(r.run.moetool_version);
    if (!r.run.command.empty()) o += " · " + markdown_escape(r.run.command);
    o += "</sub>\n";
  }
  return o;
}

// ---------------------------------------------------------------------------------------------
// JUnit.

std::string to_junit(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  struct Case {
    std::string name, message, detail;
    bool failed;
  };
  std::vector<Case> cases;
  if (s.n_tokens == 0)
    cases.push_back({"scored_tokens", "no tokens were scored", "the evaluation scored 0 tokens", true});
  for (const auto& t : evaluate(s, r.thresholds))
    cases.push_back({t.name, t.message,
                     str(t.metric, " = ", value_str(t), ", limit ", limit_str(t)), !t.passed});
  int fails = 0;
  for (const auto& c : cases) fails += c.failed ? 1 : 0;
  const std::string time = fmt("%.3f", std::isfinite(r.run.seconds) && r.run.seconds > 0 ? r.run.seconds : 0.0);
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += fmt("<testsuites name=\"moetool\" tests=\"%zu\" failures=\"%d\" errors=\"0\" time=\"%s\">\n", cases.size(),
           fails, time.c_str());
  o += fmt("  <testsuite name=\"moetool.verify\" tests=\"%zu\" failures=\"%d\" errors=\"0\" skipped=\"0\" "
           "time=\"%s\">\n",
           cases.size(), fails, time.c_str());
  auto prop = [&](const char* k, const std::string& v) {
    o += "      <property name=\"" + std::string(k) + "\" value=\"" + html_escape(v) + "\"/>\n";
  };
  o += "    <properties>\n";
  prop("base", r.run.base);
  prop("candidate", r.run.candidate);
  prop("text", r.run.text);
  if (!r.run.base_logits.empty()) prop("base_logits", r.run.base_logits);
  prop("n_ctx", std::to_string(r.run.n_ctx));
  prop("scored_positions", scored_positions_name(r.run.scored));
  prop("tokens", std::to_string(s.n_tokens));
  prop("chunks", std::to_string(s.n_chunks));
  prop("mean_kld", num(s.kld.value, "%.9g"));
  prop("same_top_p", num(s.same_top.value, "%.9g"));
  prop("ppl_ratio", num(s.ppl_ratio.value, "%.9g"));
  prop("moetool_version", r.run.moetool_version);
  prop("command", r.run.command);
  o += "    </properties>\n";
  for (const auto& c : cases) {
    o += "    <testcase classname=\"moetool.verify\" name=\"" + html_escape(c.name) + "\" time=\"0\"";
    if (!c.failed) {
      o += "/>\n";
      continue;
    }
    o += ">\n      <failure type=\"threshold\" message=\"" + html_escape(c.message) + "\">" + html_escape(c.detail) +
         "</failure>\n    </testcase>\n";
  }
  o += "    <system-out>" + html_escape(to_text(r)) + "</system-out>\n";
  o += "  </testsuite>\n</testsuites>\n";
  return o;
}

// ---------------------------------------------------------------------------------------------

void write_report_dir(const std::string& dir, const VerifyReport& r) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !is_directory(dir)) fail(dir, ": cannot create report directory", ec ? ": " + ec.message() : "");
  write_file_atomic(path_join(dir, "report.json"),
                    to_json(r).dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
  write_file_atomic(path_join(dir, "report.md"), to_markdown(r));
  write_file_atomic(path_join(dir, "report.html"), to_html(r));
}

}  // namespace moetool
