// verify/report_format.h — the number and label formatting and the verdict shared by the report
// writers (report.cc: text, JSON, Markdown, JUnit; report_html.cc: HTML with inline SVG). Not part
// of the API.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "verify/report.h"

namespace moetool::report_detail {

// printf into a std::string.
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
// Which positions of a chunk were scored, in words.
const char* scored_description(ScoredPositions s);
std::string yes_pass(bool p);  // "PASS" / "FAIL"
// The verdict in capitals for titles and badges: "PASS", "FAIL", "UNCHECKED".
std::string verdict_label(const VerifyReport& r);
// "1 token" / "2 tokens".
std::string plural(int64_t n, const char* one, const char* many);
// Bytes for humans: "512 B", "2.50 KiB", "1.20 MiB", "3.00 GiB".
std::string human_bytes(uint64_t b);

// Numbers for humans: NaN as "n/a".
std::string num(double v, const char* f = "%.6f");
std::string pct(double v, const char* f = "%.3f");              // 100·v followed by " %"
std::string pm(const Estimate& e, const char* f = "%.6f");      // "value ± unc"
std::string pm_pct(const Estimate& e, const char* f = "%.3f");  // "value ± unc %" in percent
std::string limit_str(const ThresholdResult& t);  // a threshold's limit (min_top1 also in percent)
std::string value_str(const ThresholdResult& t);  // a threshold's measured value

// A report's threshold results (evaluate()) and failures (check(); none: the report passes).
struct Verdict {
  std::vector<ThresholdResult> results;
  std::vector<std::string> failures;
};
Verdict verdict_of(const VerifyReport& r);

// The headline: the numbers a ship/no-ship decision rests on, as (label, value) cells with the
// limit when one is set: mean KLD, top-1 agreement, PPL ratio, route mismatch (when routing was
// compared), size and bits per weight against the base (when known).
std::vector<std::pair<std::string, std::string>> headline_cells(const VerifyReport& r);
nlohmann::ordered_json headline_json(const VerifyReport& r);

// Routing fidelity in the text, JSON and Markdown reports (report_routing.cc).
std::string routing_text(const RoutingFidelity& f);
nlohmann::ordered_json routing_json(const RoutingFidelity& f);
std::string routing_markdown(const RoutingFidelity& f);
// The worst positions in text and Markdown.
std::string worst_text(const std::vector<WorstToken>& w);
std::string worst_markdown(const std::vector<WorstToken>& w);
// A decoded token or context for one line: newlines and tabs as ⏎ and ⇥, other controls as U+FFFD.
std::string visible(const std::string& s);
nlohmann::ordered_json jnum(double v);

// SVG plots for report.html (report_svg.cc): self-contained <svg> elements (or a message panel).
std::string svg_kld_histogram(const VerifyStats& s);
std::string svg_layer_cosine(const std::vector<LayerSimilarity>& layers, const std::vector<int64_t>& flagged);
std::string svg_layer_nmse(const std::vector<LayerSimilarity>& layers);
std::string svg_chunk_kld(const std::vector<ChunkProgress>& chunks);
std::string svg_routing_layers(const RoutingFidelity& f);
std::string svg_expert_load(const LayerRouting& l);

}  // namespace moetool::report_detail
