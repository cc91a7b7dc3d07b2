// recipe/summary.h — the one summary of a `moetool run`: summary.json, summary.md (a CI job summary
// table: model × step × size × KLD × top-1 × PPL ratio × verdict), summary.html (self-contained: the
// same table with the per-step verify reports linked, and a size-vs-KLD plot across models and steps
// as inline SVG) and junit.xml (one test case per gate, plus one per step or model that failed).
//
// summary.json: {"schema": "moetool.run.summary/1", "recipe", "name", "output", "seconds",
//   "exit_code", "models": [{"model", "key", "error", "bytes", "steps": [STEP + "verdict"]}]}, where
//   STEP is a step's to_json (recipe/runner.h) and "verdict" the summary's: PASS | FAIL | UNCHECKED |
//   not verified | ERROR | SKIPPED.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "recipe/runner.h"

namespace moetool::recipe {

nlohmann::ordered_json summary_json(const RunResult& r);
std::string summary_markdown(const RunResult& r);
// The same table for a terminal: aligned plain columns, then one line per failed gate or error.
std::string summary_text(const RunResult& r);
std::string summary_html(const RunResult& r);
std::string summary_junit(const RunResult& r);
// Writes the four files into r.output (each atomically). Throws moetool::Error naming the path.
void write_summary(const RunResult& r);

}  // namespace moetool::recipe
