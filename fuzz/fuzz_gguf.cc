// fuzz/fuzz_gguf.cc — libFuzzer target: the GGUF parser and validator (GGUFFile::parse_buffer),
// then every accessor on what it accepted, so out-of-bounds tensor spans are caught by ASan.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto f = moetool::GGUFFile::parse_buffer(data, size, "fuzz.gguf");
    volatile uint64_t sink = f->alignment() + f->data_offset();
    for (const auto& kv : f->metadata()) sink = sink + kv.value.to_string().size();
    for (const auto& t : f->tensors()) {
      const auto raw = f->raw_tensor(t);
      if (!raw.bytes.empty()) sink = sink + raw.bytes.front() + raw.bytes.back();
      if (!moetool::ggml_is_quantized(t.type)) {
        const moetool::Tensor v = f->tensor(t);
        sink = sink + v.nbytes();
        if (v.nbytes() != raw.bytes.size()) __builtin_trap();
      }
    }
  } catch (const moetool::Error&) {
  }
  return 0;
}
