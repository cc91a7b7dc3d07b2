// formats/file_kind.h — what a file is, by its first bytes, so that a command given a file of the
// wrong kind says what it found ("model.gguf: a GGUF file, expected a safetensors file") instead of
// failing deep in the wrong parser (a GGUF read as safetensors reported a 14 GB "header length").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace moetool {

// The kind of a file from its first bytes (n of them, at least 16 where the file has them; `size`
// is the whole file's): "GGUF" (magic "GGUF"), "safetensors" (u64 header length that fits the file,
// then '{'), "NumPy .npy" ("\x93NUMPY"), "ZIP (PyTorch .pt/.bin)" ("PK\3\4"), "pickle (PyTorch
// .bin)" (0x80, protocol 2..5, a first opcode), "JSON" ('{' or '[' then a quote, brace or bracket),
// "empty"; "" when none of these (a damaged file of the expected kind usually lands here).
std::string file_kind_of_bytes(const uint8_t* data, size_t n, uint64_t size);
// The same for the file at `path` ("directory" for a directory; "" when unreadable or unknown).
std::string file_kind_of(const std::string& path);

}  // namespace moetool
