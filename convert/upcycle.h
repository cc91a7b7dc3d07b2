// convert/upcycle.h — `moetool convert upcycle`: a dense checkpoint becomes an MoE checkpoint whose
// experts are copies of each layer's FFN (optionally perturbed with seeded noise), optionally cut into
// G neuron slices per copy (fine-grained "virtual group" upcycling), optionally beside an always-on
// shared expert holding the original FFN. With identical experts the MoE computes the dense model.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "convert/report.h"
#include "convert/router_init.h"

namespace moetool {

struct UpcycleOptions {
  std::string to;            // target family (model_type)
  int64_t experts = 8;       // routed experts per layer in the output (copies × granularity)
  int64_t top_k = 2;         // experts per token in the output (a multiple of granularity)
  int64_t granularity = 1;   // G: neuron slices per copy
  double noise = 0.0;        // σ of N(0, σ²) noise relative to each matrix's RMS (0: identical experts)
  bool shared_expert = false;
  RouterInit router = RouterInit::Random;
  std::string prompts;       // recipe file for RouterInit::Prompts
  double router_cond_warn = 100.0;  // warn when a prompts router's condition number exceeds this
  uint64_t seed = 0;
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;           // provenance for __metadata__
  std::function<void(const std::string&)> progress;     // one line per layer
  std::function<void(const std::string&)> warn;         // warnings (also kept in the report)
};

// Converts `dense_path` into an MoE checkpoint at `out_dir`. Throws moetool::Error (before writing
// anything) for impossible pairs and inconsistent options.
ConvertReport upcycle(const std::string& dense_path, const std::string& out_dir, const UpcycleOptions& opt);

}  // namespace moetool
