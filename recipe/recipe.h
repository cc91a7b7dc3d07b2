// recipe/recipe.h — the recipe of `moetool run`: a YAML file naming the checkpoints, the texts, and a
// chain of passes (convert upcycle/factorize, prune, merge, svd, quantize) with the same option names
// as the commands, each optionally followed by verification gates. Parsing checks the structure and
// every key, naming the file, the line and the key of the first problem; the options themselves are
// checked against the commands by the caller (cli/cmd_run.cc) before any work starts.
//
// name: tinystories-moe                 # optional, for the summary
// models: [models/tinystories-656k]     # one path or a list; relative to the recipe's folder
// output: runs/tinystories-moe          # optional; -o overrides
// texts: {eval: data/eval.txt, calib: data/calib.txt}
// steps:
//   - name: moe8                        # [A-Za-z0-9_.-]+, unique; the step's folder
//     pass: convert factorize           # convert upcycle | convert factorize | prune | merge | svd | quantize
//     from: STEP                        # optional: the input is that step's output (default: the previous step's, or the model)
//     options: {to: mixtral, experts: 8, top-k: 2, calib-text: "${calib}"}   # --to=mixtral --experts=8 ...
//     verify:                           # optional
//       text: eval                      # a name in texts, or a path
//       against: input                  # input (the original model, default) | previous | a step name
//       ctx: 128                        # optional --ctx / --chunks of verify
//       chunks: 8
//       max_kld: 0.5                    # gates: max_kld, min_top1, max_ppl_ratio, max_route_mismatch
//
// Option values: a scalar becomes --key=value, a list one --key=value per item, true a bare --key
// (false: left out). "${name}" in a value is replaced by the path of text `name`. Relative paths in
// options resolve against the recipe's folder (the commands run there). Options `run` sets itself
// (output, force, json, quiet, dry-run) are refused.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace moetool::recipe {

struct OptionValue {
  std::string key;                  // without the leading dashes
  std::vector<std::string> values;  // one per --key=value
  bool flag = false;                // true: a bare --key
  int line = 0;
};

struct Gate {
  std::string name;  // max_kld | min_top1 | max_ppl_ratio | max_route_mismatch
  double limit = 0;
  int line = 0;
};

struct VerifySpec {
  bool present = false;
  std::string text;                // resolved path
  std::string against = "input";  // input | previous | a step name
  int64_t ctx = 0, chunks = 0;    // 0: verify's defaults
  std::vector<Gate> gates;
  int line = 0;
};

struct Step {
  std::string name, pass, from;  // pass: "convert upcycle", "prune", ...
  std::vector<OptionValue> options;
  VerifySpec verify;
  int line = 0, pass_line = 0;
};

struct Recipe {
  std::string path, dir;  // the file, and its folder (absolute)
  std::string name;
  std::vector<std::string> models;  // absolute paths
  int models_line = 0;
  std::string output;               // absolute; empty when not given
  std::map<std::string, std::string> texts;  // name → absolute path
  std::vector<Step> steps;
};

// The passes a step may name.
const std::vector<std::string>& pass_names();

// Parses `path`. Throws moetool::Error "PATH:LINE: KEY: problem" (one line) on malformed YAML, an
// unknown or missing key, a wrong type, a duplicate or unknown step name, an unknown pass or gate,
// a text that does not exist, or a reserved option.
Recipe parse_recipe(const std::string& path);
// The same from text (`path` names it in errors and anchors relative paths).
Recipe parse_recipe_text(const std::string& text, const std::string& path);

// The index of the step whose output is step i's input (−1: the model).
int input_step(const Recipe& r, size_t i);
// The index of the step whose output step i is verified against (−1: the model).
int against_step(const Recipe& r, size_t i);

// "model.gguf" for a quantize step writing GGUF (the default format), else "model" (a directory).
std::string artifact_name(const Step& s);
// The step's command line after the binary: the pass words, INPUT, -o OUTPUT, then its options.
std::vector<std::string> step_args(const Step& s, const std::string& input, const std::string& output);

}  // namespace moetool::recipe
