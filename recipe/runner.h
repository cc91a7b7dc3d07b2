// recipe/runner.h — `moetool run` as a library call: a parsed recipe executed over its checkpoints.
// Every step runs as its own moetool command (the binary given), so a step's options, outputs and
// provenance are exactly the command's, and a crash or SIGKILL never leaves a step half-trusted:
//
//   OUT/<model>/<step>/model | model.gguf   the step's output (written by the command)
//   OUT/<model>/<step>/verify/              report.json, report.md, report.html, junit.xml (gates)
//   OUT/<model>/<step>/step.json            written last, atomically: the step's hash, command,
//                                           sizes and gate results — a step is complete iff present
//
// A step's hash covers the moetool version, the pass, its options, its input (the upstream step's
// hash, or the model's files: names, sizes, modification times) and its verification (texts
// fingerprinted the same way). --resume reuses a step whose step.json carries the same hash; any
// other folder is removed and the step run again. Models run one after another, or `jobs` at a
// time within a memory budget; a model that cannot be opened or a step that fails is reported, and
// the others go on.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "recipe/recipe.h"

namespace moetool::recipe {

inline constexpr double kNoValue = std::numeric_limits<double>::quiet_NaN();

struct GateResult {
  std::string name;  // max_kld | min_top1 | max_ppl_ratio | max_route_mismatch
  double limit = kNoValue, value = kNoValue;
  bool passed = false;
  std::string message;
};

struct StepResult {
  std::string name, pass;
  std::string status;  // ok | resumed | failed (its command failed) | skipped (its input failed)
  std::string output;  // the step's artifact
  std::string error;   // failed / skipped: one line
  std::vector<std::string> command;  // after the binary
  std::string hash;
  uint64_t bytes = 0;
  double seconds = 0;
  bool verified = false;
  std::string verdict;  // verify's: pass | fail | unchecked
  double kld = kNoValue, top1 = kNoValue, ppl_ratio = kNoValue, route_mismatch = kNoValue;
  std::vector<GateResult> gates;
  std::string report;  // verify/report.html, relative to the run's output folder
};

// A step's result as JSON (step.json, and each step of summary.json) and back: name, pass, status,
// output, error, command, hash, bytes, seconds, verified, verify_verdict (verify's: pass | fail |
// unchecked), kld, top1, ppl_ratio, route_mismatch (null when undefined), report, gates [{name,
// limit, value, passed, message}].
nlohmann::ordered_json to_json(const StepResult& r);
StepResult step_from_json(const nlohmann::json& j);

struct ModelResult {
  std::string model;  // checkpoint path
  std::string key;    // its folder under the output
  std::string error;  // the checkpoint could not be used (nothing ran)
  uint64_t bytes = 0; // the checkpoint's tensor bytes
  std::vector<StepResult> steps;
};

struct RunResult {
  std::string recipe, name, output;
  std::vector<ModelResult> models;
  double seconds = 0;
  bool gate_failed() const;
  bool any_error() const;  // a model that could not be used or a step that failed
  int exit_code() const;   // 2 any_error, else 1 gate_failed, else 0
};

struct RunOptions {
  Recipe recipe;
  std::vector<std::string> models;  // the checkpoints (recipe's, or --models)
  std::string output;               // absolute
  int jobs = 1;
  // With jobs > 1: models start only while the checkpoints being processed total at most this many
  // tensor bytes (one model always may run; 0: no budget). A checkpoint's size bounds what its steps
  // hold, since every pass streams layer by layer.
  uint64_t memory_budget = 0;
  bool resume = false;
  std::string binary;   // the moetool executable the steps run
  std::string version;  // moetool's version (part of every hash)
  std::function<void(const std::string&)> progress;  // whole lines
  std::function<void(const std::string&)> status;    // a transient line (a terminal's updating line); may be empty
};

// Folder names for the models: the checkpoint's name, made unique with -2, -3, ... in order.
std::vector<std::string> model_keys(const std::vector<std::string>& models);
// Checks that every pass applies to its input for each model that opens (a convert needs a dense
// checkpoint; prune and merge an MoE; nothing runs on a GGUF output but verification). Throws
// moetool::Error "RECIPE:LINE: steps[i].pass: ..." for the first that does not; returns, per model,
// why it cannot be opened ("" when it can).
std::vector<std::string> check_applicability(const Recipe& r, const std::vector<std::string>& models);
// The plan in words (--explain): models, steps with their commands and gates, folders.
std::string explain(const RunOptions& o);
// Runs everything; never throws for a model's or a step's failure (they are in the result).
RunResult run(const RunOptions& o);

}  // namespace moetool::recipe
