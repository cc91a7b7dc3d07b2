// verify/report_md.cc — report.md (a GitHub Actions job summary) and JUnit XML of `moetool verify`
// (see report.h).
#include <cmath>

#include "core/error.h"
#include "verify/report.h"
#include "verify/report_format.h"

namespace moetool {

using namespace report_detail;

// ---------------------------------------------------------------------------------------------
// Markdown.

std::string to_markdown(const VerifyReport& r) {
  const VerifyStats& s = r.stats;
  const auto [results, failures] = verdict_of(r);
  std::string o;
  if (failures.empty() && results.empty()) {
    o += "### ⚪ moetool verify: UNCHECKED\n\nNo thresholds were set (`--max-kld`, `--min-top1`, `--max-ppl-ratio`, "
         "`--max-route-mismatch`): nothing was checked.\n\n";
  } else if (failures.empty()) {
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

  o += "|";
  std::string sep = "|";
  std::string vals = "|";
  for (const auto& [k, v] : headline_cells(r)) {
    o += " " + k + " |";
    sep += "---|";
    vals += " " + markdown_escape(v) + " |";
  }
  o += "\n" + sep + "\n" + vals + "\n\n";
  o += "<details><summary>More statistics</summary>\n\n";
  o += "| metric | value |\n|---|---|\n";
  o += "| 99.9% KLD | " + num(quantile_value(s.kld_q, 0.999)) + " |\n";
  o += "| 99% KLD | " + num(quantile_value(s.kld_q, 0.99)) + " |\n";
  o += "| Median KLD | " + num(quantile_value(s.kld_q, 0.5)) + " |\n";
  o += "| Maximum KLD | " + num(quantile_value(s.kld_q, 1.0)) + " |\n";
  o += "| PPL(Q) | " + pm(s.ppl_q) + " |\n";
  o += "| PPL(base) | " + pm(s.ppl_base) + " |\n";
  o += "| Mean ln(PPL(Q)/PPL(base)) | " + pm(s.ln_ppl_ratio) + " |\n";
  o += "| Mean Δp | " + pm_pct(s.delta_p) + " |\n";
  o += "| RMS Δp | " + pm_pct(s.rms_delta_p) + " |\n";
  o += "\n</details>\n\n";

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
  if (!r.routing.empty()) o += routing_markdown(r.routing);
  if (!s.worst.empty()) o += worst_markdown(s.worst);
  if (!r.layers.empty()) {
    for (int64_t l : flagged_layers(r.layers))
      o += fmt("⚠️ Layer %lld's minimum hidden-state cosine is far below the other layers'.\n\n",
               static_cast<long long>(l));
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
  const bool unchecked = cases.empty();  // no threshold set: one skipped case says so
  if (unchecked) cases.push_back({"thresholds", "no thresholds were set: nothing was checked", "", false});
  int fails = 0;
  for (const auto& c : cases) fails += c.failed ? 1 : 0;
  const std::string time = fmt("%.3f", std::isfinite(r.run.seconds) && r.run.seconds > 0 ? r.run.seconds : 0.0);
  std::string o = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  o += fmt("<testsuites name=\"moetool\" tests=\"%zu\" failures=\"%d\" errors=\"0\" time=\"%s\">\n", cases.size(),
           fails, time.c_str());
  o += fmt("  <testsuite name=\"moetool.verify\" tests=\"%zu\" failures=\"%d\" errors=\"0\" skipped=\"%d\" "
           "time=\"%s\">\n",
           cases.size(), fails, unchecked ? 1 : 0, time.c_str());
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
  prop("verdict", verdict_name(r));
  if (!r.routing.empty()) prop("route_mismatch", num(s.route_mismatch, "%.9g"));
  prop("moetool_version", r.run.moetool_version);
  prop("command", r.run.command);
  o += "    </properties>\n";
  for (const auto& c : cases) {
    o += "    <testcase classname=\"moetool.verify\" name=\"" + html_escape(c.name) + "\" time=\"0\"";
    if (unchecked) {
      o += ">\n      <skipped message=\"" + html_escape(c.message) + "\"/>\n    </testcase>\n";
      continue;
    }
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

}  // namespace moetool
