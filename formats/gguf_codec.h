// formats/gguf_codec.h — internals shared by the GGUF source files (gguf_value.cc, gguf.cc,
// gguf_writer.cc): access to GGUFValue's representation for (de)serialization, little-endian loads,
// alignment arithmetic and the quoting of keys and names in messages. Not part of the API.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "formats/gguf.h"

namespace moetool {

static_assert(std::endian::native == std::endian::little, "moetool's GGUF code assumes a little-endian host");

// Internal access to GGUFValue's representation (parser and writer).
struct GGUFCodec {
  static GGUFValue scalar(GGUFType t, uint64_t bits) {
    GGUFValue v;
    v.type_ = t;
    v.bits_ = bits;
    return v;
  }
  static GGUFValue string(std::string s) {
    GGUFValue v;
    v.type_ = GGUFType::STRING;
    v.str_ = std::move(s);
    return v;
  }
  static GGUFValue string_array(std::vector<std::string> a) {
    GGUFValue v;
    v.type_ = GGUFType::ARRAY;
    v.elem_ = GGUFType::STRING;
    v.count_ = a.size();
    v.strs_ = std::move(a);
    return v;
  }
  // Caller has validated `elem` and the bool bytes.
  static GGUFValue packed_array(GGUFType elem, const uint8_t* data, uint64_t count) {
    GGUFValue v;
    v.type_ = GGUFType::ARRAY;
    v.elem_ = elem;
    v.count_ = count;
    v.raw_.assign(data, data + count * gguf_type_size(elem));
    return v;
  }

  // Appends the serialized value (without its type tag) to out.
  static void put_string(std::string& out, std::string_view s) {
    const uint64_t n = s.size();
    out.append(reinterpret_cast<const char*>(&n), 8);
    out.append(s.data(), s.size());
  }
  static void put_u32(std::string& out, uint32_t x) { out.append(reinterpret_cast<const char*>(&x), 4); }
  static void put_u64(std::string& out, uint64_t x) { out.append(reinterpret_cast<const char*>(&x), 8); }
  static void put_value(std::string& out, const GGUFValue& v) {
    switch (v.type_) {
      case GGUFType::STRING: put_string(out, v.str_); return;
      case GGUFType::ARRAY:
        put_u32(out, static_cast<uint32_t>(v.elem_));
        put_u64(out, v.count_);
        if (v.elem_ == GGUFType::STRING) {
          for (const auto& s : v.strs_) put_string(out, s);
        } else {
          out.append(reinterpret_cast<const char*>(v.raw_.data()), v.raw_.size());
        }
        return;
      default: out.append(reinterpret_cast<const char*>(&v.bits_), gguf_type_size(v.type_)); return;
    }
  }
  static bool nested(const GGUFValue& v) { return v.type_ == GGUFType::ARRAY && v.elem_ == GGUFType::ARRAY; }
};

namespace gguf_detail {

inline uint64_t load_bits(const uint8_t* p, size_t n) {
  uint64_t b = 0;
  std::memcpy(&b, p, n);
  return b;
}

inline uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// `s` between quote characters `q`, with q, backslash and control bytes escaped, cut at max_len.
std::string quote(std::string_view s, size_t max_len = 200, char q = '\'');

// The value of "general.alignment": a u32 power of two; throws naming `path` otherwise.
uint32_t checked_alignment(const std::string& path, const GGUFValue& v);

}  // namespace gguf_detail
}  // namespace moetool
