// fuzz/fuzz_index.cc — libFuzzer target: model.safetensors.index.json parsing.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "formats/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    moetool::parse_safetensors_index(std::string(reinterpret_cast<const char*>(data), size),
                                     "model.safetensors.index.json");
  } catch (const moetool::Error&) {
  }
  return 0;
}
