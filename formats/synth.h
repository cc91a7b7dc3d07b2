// formats/synth.h — deterministic random checkpoints of any supported family (config.json,
// safetensors, a small tokenizer) in tiny presets for tests and large ones for benchmarks.
// The same family, preset, seed and dtype always give byte-identical files.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "formats/family.h"

namespace moetool {

// Sizes of a named preset: "tiny" (tests), "small", "bench" (a ~1B-parameter Llama shape for dense
// families, a Mixtral-shaped MoE of a few GB for MoE families). Throws for an unknown name.
SynthSizes synth_preset(const std::string& preset, bool moe);
std::vector<std::string> synth_preset_names();

struct SynthOptions {
  std::string family = "llama";
  std::string preset = "tiny";
  uint64_t seed = 0;
  DType dtype = DType::F32;
  uint64_t max_shard_bytes = 0;  // 0: one file
  bool overwrite = false;        // replace an existing non-empty output directory
  std::map<std::string, std::string> metadata;              // provenance for __metadata__
  std::function<void(const std::string& line)> progress;   // one line per tensor, optional
};

struct SynthResult {
  ModelConfig config;
  int64_t params = 0;
  uint64_t bytes = 0;  // tensor data bytes
  std::vector<std::string> files;
};

// Writes the checkpoint to `out_dir` (staged, moved into place when complete).
SynthResult synth_model(const std::string& out_dir, const SynthOptions& opt);

// The value generator behind synth, exposed for tests: element i of a tensor called `name`,
// uniform with standard deviation `stdev` around `mean`.
float synth_value(uint64_t seed, const std::string& name, uint64_t i, float mean, float stdev);

}  // namespace moetool
