// convert/upcycle.h — `moetool convert upcycle`: a dense checkpoint becomes an MoE checkpoint whose
// experts are copies of each layer's FFN (optionally perturbed with seeded noise), optionally cut into
// G neuron slices per copy (fine-grained "virtual group" upcycling), optionally beside an always-on
// shared expert holding the original FFN. With identical experts the MoE computes the dense model.
#pragma once

#include <cstdint>
#include <string>

#include "convert/common.h"
#include "convert/report.h"
#include "convert/router_init.h"

namespace moetool {

struct UpcycleOptions : ConvertOptions {  // experts: copies × granularity; top_k: a multiple of granularity
  int64_t granularity = 1;   // G: neuron slices per copy
  double noise = 0.0;        // σ of N(0, σ²) noise relative to each matrix's RMS (0: identical experts)
  bool shared_expert = false;
  RouterInit router = RouterInit::Random;
  std::string prompts;       // recipe file for RouterInit::Prompts
  double router_cond_warn = 100.0;  // warn when a prompts router's condition number exceeds this
};

// Converts `dense_path` into an MoE checkpoint at `out_dir`. Throws moetool::Error (before writing
// anything) for impossible pairs and inconsistent options.
ConvertReport upcycle(const std::string& dense_path, const std::string& out_dir, const UpcycleOptions& opt);

}  // namespace moetool
