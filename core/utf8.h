// core/utf8.h — UTF-8 decoding and encoding: strict decoding into characters (U+FFFD for each
// invalid byte), Rust's from_utf8_lossy, validation, and appending a code point.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace moetool {

// One decoded character: code point (U+FFFD for an invalid byte), byte offset and length.
struct U8Char {
  char32_t cp;
  uint32_t off;
  uint32_t len;
};

// Strict decoding (no overlong forms, surrogates or values above U+10FFFF); each byte of an invalid
// sequence becomes one U+FFFD character of length 1.
std::vector<U8Char> utf8_chars(std::string_view s);
// Appends `cp` encoded as UTF-8.
void utf8_append(std::string& out, char32_t cp);
// Rust's String::from_utf8_lossy: maximal invalid subparts become U+FFFD.
std::string utf8_lossy(std::string_view bytes);
bool utf8_valid(std::string_view s);

}  // namespace moetool
