// formats/file_kind.cc — file kinds by their first bytes (see file_kind.h).
#include "formats/file_kind.h"

#include <cstring>
#include <fstream>

#include "core/fs.h"

namespace moetool {

std::string file_kind_of_bytes(const uint8_t* d, size_t n, uint64_t size) {
  if (size == 0) return "empty";
  if (n >= 4 && std::memcmp(d, "GGUF", 4) == 0) return "GGUF";
  if (n >= 6 && std::memcmp(d, "\x93NUMPY", 6) == 0) return "NumPy .npy";
  if (n >= 4 && std::memcmp(d, "PK\x03\x04", 4) == 0) return "ZIP (PyTorch .pt/.bin)";
  if (n >= 9) {  // before the byte patterns below, which a safetensors header length can also start with
    uint64_t h = 0;
    for (int i = 7; i >= 0; --i) h = (h << 8) | d[i];
    if (h >= 2 && h <= size - 8 && d[8] == '{') return "safetensors";
  }
  // Pickle protocols 2..5: PROTO n, then a frame or a first opcode (dict, global, list, mark, long).
  if (n >= 3 && d[0] == 0x80 && d[1] >= 2 && d[1] <= 5 &&
      (d[2] == 0x95 || d[2] == 0x7d || d[2] == 0x63 || d[2] == 0x5d || d[2] == 0x28 || d[2] == 0x8a || d[2] == 0x8c))
    return "pickle (PyTorch .bin)";
  // JSON text: '{' or '[' then (after blanks) a quote, bracket or brace.
  const auto blank = [](uint8_t c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  size_t i = 0;
  while (i < n && blank(d[i])) ++i;
  if (i < n && (d[i] == '{' || d[i] == '[')) {
    size_t j = i + 1;
    while (j < n && blank(d[j])) ++j;
    if (j < n && (d[j] == '"' || d[j] == '{' || d[j] == '[' || d[j] == '}' || d[j] == ']')) return "JSON";
  }
  return "";
}

std::string file_kind_of(const std::string& path) {
  if (is_directory(path)) return "directory";
  std::ifstream f(path, std::ios::binary);
  if (!f) return "";
  uint8_t buf[16] = {};
  f.read(reinterpret_cast<char*>(buf), sizeof buf);
  const size_t n = static_cast<size_t>(f.gcount());
  return file_kind_of_bytes(buf, n, file_size(path));
}

}  // namespace moetool
