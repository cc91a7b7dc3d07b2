// verify/report_format.h — the number and label formatting and the verdict shared by the report
// writers (report.cc: text, JSON, Markdown, JUnit; report_html.cc: HTML with inline SVG). Not part
// of the API.
#pragma once

#include <string>
#include <vector>

#include "verify/report.h"

namespace moetool::report_detail {

// printf into a std::string.
std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
// Which positions of a chunk were scored, in words.
const char* scored_description(ScoredPositions s);
std::string yes_pass(bool p);  // "PASS" / "FAIL"

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

}  // namespace moetool::report_detail
