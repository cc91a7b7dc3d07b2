// verify/verify_job.h — `moetool verify` as a library call: a candidate model scored against its
// base on text (KL divergence, top-1 agreement, perplexities, per-layer hidden-state similarity),
// or against a llama.cpp KL-divergence base-logits file, with the thresholds checked. Nothing is
// printed: progress lines go to a callback; verify/report.h renders the result's report.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/provenance.h"
#include "kernels/device.h"
#include "verify/metrics.h"
#include "verify/report.h"

namespace moetool::verify {

struct Options {
  std::string base;       // base model directory, or a llama.cpp KL-divergence base-logits file
  std::string candidate;  // candidate model directory
  std::string text;       // evaluation text (not needed with a base-logits file)
  int64_t ctx = 512, chunks = 0;        // tokens per chunk; at most this many chunks (0 = all)
  std::string scored = "all-after-first";  // or "second-half" (llama.cpp's convention)
  Thresholds thresholds;
  bool hidden = true;     // compare per-layer hidden states (when the shapes match)
  double dynamic_topk = 0;  // run the candidate with dynamic top-k at this threshold (0: off)
  std::string save_base;  // also write the base logits as a llama.cpp KL-divergence base file
  DeviceOptions device;
  Provenance provenance;  // version and command line for the report
  std::function<void(const std::string&)> progress;  // one line per chunk
};

struct Result {
  VerifyReport report;
  std::vector<std::string> missed;  // the thresholds missed (check()); empty: verification passed
};

// Runs the comparison. Throws moetool::Error for bad options or input.
Result run(const Options& o);

}  // namespace moetool::verify
