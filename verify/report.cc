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

std::string verdict_label(const VerifyReport& r) {
  const std::string v = verdict_name(r);
  return v == "fail" ? "FAIL" : v == "pass" ? "PASS" : "UNCHECKED";
}

std::string plural(int64_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string human_bytes(uint64_t b) {
  const double v = static_cast<double>(b);
  if (b < 1024) return fmt("%llu B", static_cast<unsigned long long>(b));
  if (v < 1024.0 * 1024) return fmt("%.2f KiB", v / 1024);
  if (v < 1024.0 * 1024 * 1024) return fmt("%.2f MiB", v / (1024.0 * 1024));
  return fmt("%.2f GiB", v / (1024.0 * 1024 * 1024));
}

nlohmann::ordered_json jnum(double v) {
  if (!std::isfinite(v)) return nullptr;
  return v;
}

std::string visible(const std::string& s) {
  std::string o;
  for (const U8Char& c : utf8_chars(s)) {
    if (c.cp == '\n') o += "⏎";
    else if (c.cp == '\t') o += "⇥";
    else if (c.cp < 0x20 || c.cp == 0x7F) utf8_append(o, 0xFFFD);
    else utf8_append(o, c.cp);
  }
  return o;
}

namespace {
double bpw(uint64_t bytes, int64_t params) {
  return bytes > 0 && params > 0 ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params) : kNaN;
}
std::string limit_suffix(const std::optional<double>& l, const char* op, bool percent) {
  if (!l) return "";
  return std::string(" (limit ") + op + " " + (percent ? pct(*l, "%.2f") : fmt("%.6g", *l)) + ")";
}
}  // namespace

std::vector<std::pair<std::string, std::string>> headline_cells(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  const Thresholds& t = r.thresholds;
  std::vector<std::pair<std::string, std::string>> c;
  c.push_back({"Mean KLD", pm(s.kld, "%.5f") + limit_suffix(t.max_kld, "≤", false)});
  c.push_back({"Top-1 agreement", pm_pct(s.same_top, "%.2f") + limit_suffix(t.min_top1, "≥", true)});
  c.push_back({"PPL ratio", pm(s.ppl_ratio, "%.4f") + limit_suffix(t.max_ppl_ratio, "≤", false)});
  if (!r.routing.empty() || t.max_route_mismatch)
    c.push_back({"Route mismatch", pct(s.route_mismatch, "%.2f") + limit_suffix(t.max_route_mismatch, "≤", true)});
  if (r.run.candidate_bytes > 0) {
    std::string v = human_bytes(r.run.candidate_bytes);
    if (r.run.base_bytes > 0)
      v += fmt(" (%.1f %% of the base's ", 100.0 * static_cast<double>(r.run.candidate_bytes) /
                                             static_cast<double>(r.run.base_bytes)) +
           human_bytes(r.run.base_bytes) + ")";
    c.push_back({"Size", v});
  }
  const double cb = bpw(r.run.candidate_bytes, r.run.base_params), bb = bpw(r.run.base_bytes, r.run.base_params);
  if (std::isfinite(cb)) c.push_back({"Bits per weight", fmt("%.2f", cb) + (std::isfinite(bb) ? fmt(" (base %.2f)", bb) : "")});
  return c;
}

nlohmann::ordered_json headline_json(const VerifyReport& r) {
  using J = nlohmann::ordered_json;
  const VerifyStats& s = r.stats;
  auto est = [](const Estimate& e, const std::optional<double>& l) {
    return J{{"value", jnum(e.value)}, {"unc", jnum(e.unc)}, {"limit", l ? J(*l) : J(nullptr)}};
  };
  J h;
  h["mean_kld"] = est(s.kld, r.thresholds.max_kld);
  h["same_top_p"] = est(s.same_top, r.thresholds.min_top1);
  h["ppl_ratio"] = est(s.ppl_ratio, r.thresholds.max_ppl_ratio);
  h["route_mismatch"] = {{"value", jnum(s.route_mismatch)},
                         {"limit", r.thresholds.max_route_mismatch ? J(*r.thresholds.max_route_mismatch) : J(nullptr)}};
  h["candidate_bytes"] = r.run.candidate_bytes;
  h["base_bytes"] = r.run.base_bytes;
  h["base_params"] = r.run.base_params;
  h["candidate_bpw"] = jnum(bpw(r.run.candidate_bytes, r.run.base_params));
  h["base_bpw"] = jnum(bpw(r.run.base_bytes, r.run.base_params));
  return h;
}

}  // namespace report_detail

using namespace report_detail;

std::string verdict_name(const VerifyReport& r) {
  if (!check(r.stats, r.thresholds).empty()) return "fail";
  return r.thresholds.any() ? "pass" : "unchecked";
}

std::vector<int64_t> flagged_layers(const std::vector<LayerSimilarity>& layers) {
  std::vector<double> mins;
  for (const auto& l : layers)
    if (std::isfinite(l.min_cosine)) mins.push_back(l.min_cosine);
  if (mins.size() < 3) return {};
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  };
  const double med = median(mins);
  std::vector<double> dev;
  for (double m : mins) dev.push_back(std::abs(m - med));
  const double margin = std::max(0.05, 3.0 * median(dev));
  std::vector<int64_t> out;
  for (const auto& l : layers)
    if (std::isfinite(l.min_cosine) && l.min_cosine < med - margin) out.push_back(l.layer);
  return out;
}

namespace {

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
  o += "  scored     : " + plural(s.n_tokens, "token", "tokens") + "\n";
  if (r.run.dynamic_topk > 0)
    o += fmt("  dynamic top-k: threshold %g, %lld of %lld expert computations skipped (%.2f %%)\n",
             r.run.dynamic_topk, static_cast<long long>(r.run.skipped_pairs), static_cast<long long>(r.run.routed_pairs),
             r.run.routed_pairs ? 100.0 * static_cast<double>(r.run.skipped_pairs) / static_cast<double>(r.run.routed_pairs) : 0.0);
  o += "\n";
  o += fmt("Verdict: %s\n", verdict_label(r).c_str());
  for (const auto& [k, v] : headline_cells(r)) o += fmt("  %-16s: ", k.c_str()) + v + "\n";
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
    for (int64_t l : flagged_layers(r.layers))
      o += fmt("warning: layer %lld's minimum cosine is far below the other layers'\n", static_cast<long long>(l));
  }
  if (!r.routing.empty()) o += "\n" + routing_text(r.routing);
  if (!s.worst.empty()) o += "\n" + worst_text(s.worst);
  o += "\n====== Thresholds ======\n";
  const auto [results, failures] = verdict_of(r);
  if (results.empty()) o += "(none set)\n";
  for (const auto& t : results) o += t.message + "\n";
  o += fmt("\nVerdict: %s", verdict_label(r).c_str());
  if (results.empty() && failures.empty()) o += " (no thresholds set: nothing was checked)";
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
  j["verdict"] = verdict_name(r);
  j["failures"] = check(s, r.thresholds);
  j["headline"] = headline_json(r);
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
  j["layers_flagged"] = flagged_layers(r.layers);
  J chunks = J::array();
  for (const ChunkProgress& c : s.chunks)
    chunks.push_back({{"chunk", c.chunk},
                      {"tokens", c.tokens},
                      {"ppl_q", jest(c.ppl_q)},
                      {"ln_ppl_ratio", jest(c.ln_ppl_ratio)},
                      {"kld", jest(c.kld)},
                      {"rms_delta_p", jest(c.rms_dp)},
                      {"same_top_p", jest(c.same_top)},
                      {"chunk_tokens", c.chunk_tokens},
                      {"chunk_kld", jnum(c.chunk_kld)},
                      {"chunk_same_top_p", jnum(c.chunk_same_top)}});
  j["chunks"] = chunks;
  J worst = J::array();
  for (const WorstToken& w : s.worst)
    worst.push_back({{"chunk", w.chunk},
                     {"position", w.position},
                     {"kld", jnum(w.kld)},
                     {"context", w.context},
                     {"next", w.next},
                     {"top_base", {{"id", w.top_base}, {"text", w.top_base_text}, {"p", jnum(w.p_top_base)}}},
                     {"top_candidate", {{"id", w.top_cand}, {"text", w.top_cand_text}, {"p", jnum(w.p_top_cand)}}}});
  j["worst"] = worst;
  if (!r.routing.empty()) j["routing"] = routing_json(r.routing);
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
