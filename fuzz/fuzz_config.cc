// fuzz/fuzz_config.cc — libFuzzer target: config.json parsing for every family, and the tensor
// table the parsed config implies (bounded so hostile sizes cannot exhaust memory).
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  try {
    const moetool::ModelConfig cfg = moetool::parse_model_config(j, "config.json");
    const moetool::Family* fam = &moetool::family_by_name(cfg.family);
    if (cfg.num_layers <= 64 && (!cfg.moe || cfg.moe->num_experts <= 64)) {
      auto slots = fam->tensors(cfg);
      (void)slots;
    }
  } catch (const moetool::Error&) {
  }
  return 0;
}
