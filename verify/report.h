// verify/report.h — the reports of `moetool verify`: a console summary in llama.cpp's layout, report.json,
// report.md (a GitHub Actions job summary), a self-contained report.html with inline SVG plots, and
// JUnit XML for CI test dashboards. Pure functions of the statistics; nothing here prints.
//
// report.json (to_json), key names stable; NaN/undefined values are null:
// {
//   "schema": "moetool.verify.report/1",
//   "verdict": "pass" | "fail" | "unchecked",  // fail: a threshold missed or no token scored;
//                                          // unchecked: nothing failed and no threshold was set
//   "headline": {"mean_kld", "same_top_p", "ppl_ratio" ({"value", "unc", "limit"}; limit null when
//                unset), "route_mismatch" ({"value", "limit"}), "candidate_bytes", "base_bytes",
//                "base_params", "candidate_bpw", "base_bpw"},  // bpw: 8·bytes / the base's parameters
//   "failures": [string],                  // check() lines
//   "run": {"base", "candidate", "text", "base_logits", "n_ctx", "scored_positions"
//           ("all-after-first" | "second-half"), "moetool_version", "command", "seconds"},
//   "counts": {"tokens", "chunks"},
//   "perplexity": {"ppl_q": {"value", "unc"}, "ppl_base": {…}, "cor_ln_ppl" (fraction),
//                  "ln_ppl_ratio": {…}, "ppl_ratio": {…}, "ppl_diff": {…}},
//   "kld": {"mean": {"value", "unc"}, "max", "p99_9", "p99", "p95", "p90", "median", "p10", "p5", "p1",
//           "p0_1", "min", "histogram": {"log_x", "edges", "counts", "below"}},
//   "delta_p": {"mean": {…}, "rms": {…}, "max", "p99_9", "p99", "p95", "p90", "p75", "median", "p25", "p10",
//               "p5", "p1", "p0_1", "min"},                               // fractions, not %
//   "same_top_p": {"value", "unc"},                                       // fraction, not %
//   "layers": [{"layer", "rows", "mean_cosine", "min_cosine", "nmse"}],
//   "layers_flagged": [layer],             // min cosine far below the other layers' (flagged_layers)
//   "chunks": [{"chunk", "tokens", "ppl_q": {…}, "ln_ppl_ratio": {…}, "kld": {…}, "rms_delta_p": {…},
//               "same_top_p": {…},                                         // running values, as llama.cpp
//               "chunk_tokens", "chunk_kld", "chunk_same_top_p"}],         // this chunk alone
//   "worst": [{"chunk", "position", "kld", "context", "next", "top_base": {"id", "text", "p"},
//              "top_candidate": {…}}],                                    // the largest KLDs
//   "routing": {"mapping_source", "route_mismatch", "layers": [{"layer", "tokens", "base_experts",
//               "candidate_experts", "base_top_k", "candidate_top_k", "mapping" (null: none), "note",
//               "same_set", "jaccard", "router_kl", "dropped_share", "base_load", "candidate_load",
//               "base_load_mapped"}]},                                    // verify/routing.h
//   "thresholds": [{"name", "metric", "limit", "value", "passed", "message"}]
// }
// Strings are copied as given: dump with nlohmann::json::error_handler_t::replace when paths may not be
// valid UTF-8 (write_report_dir does).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "verify/metrics.h"
#include "verify/routing.h"

namespace moetool {

struct RunInfo {
  std::string base;         // base model path
  std::string candidate;    // candidate model path
  std::string text;         // evaluation text file
  std::string base_logits;  // llama.cpp KL-divergence base file, when the base came from one
  int64_t n_ctx = 0;        // tokens per chunk
  ScoredPositions scored = ScoredPositions::kAllAfterFirst;
  std::string moetool_version;
  std::string command;  // the command line, shell-quoted
  double seconds = 0;   // wall time of the run (JUnit "time")
  // The candidate ran with dynamic top-k (Engine::set_dynamic_topk) at this threshold (0: off):
  // its (token, expert) computations routed and skipped.
  double dynamic_topk = 0;
  int64_t routed_pairs = 0, skipped_pairs = 0;
  // Sizes for the headline (0: unknown): bytes of tensor files on disk, and the base's parameters.
  uint64_t base_bytes = 0, candidate_bytes = 0;
  int64_t base_params = 0;
};

struct VerifyReport {
  VerifyStats stats;
  std::vector<LayerSimilarity> layers;  // empty when hidden states were not compared
  RoutingFidelity routing;  // empty when neither model routes (or the base is a logits file)
  RunInfo run;
  Thresholds thresholds;
};

// True when no threshold was missed and at least one token was scored (check() is empty); also
// true when unchecked.
bool passed(const VerifyReport& r);
// "fail" when check() lists a problem, else "unchecked" when no threshold was set, else "pass".
std::string verdict_name(const VerifyReport& r);
// Layers whose minimum hidden-state cosine is far below the other layers': more than
// max(0.05, 3·MAD) below the median of the layers' minima (MAD: median absolute deviation).
std::vector<int64_t> flagged_layers(const std::vector<LayerSimilarity>& layers);

// Console summary: run info, llama.cpp's per-chunk table and its "Perplexity statistics",
// "KL divergence statistics" and "Token probability statistics" blocks with the same labels and
// number formats, then per-layer similarity, thresholds and the verdict.
std::string to_text(const VerifyReport& r);
// report.json (layout above).
nlohmann::ordered_json to_json(const VerifyReport& r);
// report.md: verdict line, headline table, thresholds, routing fidelity, worst positions,
// per-layer table (collapsed).
std::string to_markdown(const VerifyReport& r);
// report.html: one self-contained page (inline CSS, inline SVG; no scripts, no external resources).
std::string to_html(const VerifyReport& r);
// JUnit XML: <testsuites><testsuite name="moetool.verify"> with one <testcase> per threshold
// (<failure> when missed) and a failing "scored_tokens" testcase when nothing was scored.
std::string to_junit(const VerifyReport& r);
// Creates `dir` (and parents) and writes report.json, report.md and report.html into it, each
// atomically. Throws moetool::Error naming the path.
void write_report_dir(const std::string& dir, const VerifyReport& r);

// Escaping used by the writers (exposed for tests): HTML/XML text and attributes (& < > " ', control
// characters other than tab/newline/CR replaced by U+FFFD), and Markdown inline text.
std::string html_escape(const std::string& s);
std::string markdown_escape(const std::string& s);

}  // namespace moetool
