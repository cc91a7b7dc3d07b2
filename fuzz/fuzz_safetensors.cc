// fuzz/fuzz_safetensors.cc — libFuzzer target: the safetensors header parser and validator.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    moetool::parse_safetensors(data, size, "fuzz.safetensors");
  } catch (const moetool::Error&) {
  }
  return 0;
}
