// core/utf8.cc — UTF-8 decoding and encoding (see utf8.h).
#include "core/utf8.h"

namespace moetool {

namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 plus `bad` = the length of the maximal invalid
// subpart (Unicode's "substitution of maximal subparts", as Rust's from_utf8_lossy does).
size_t utf8_seq(std::string_view s, size_t i, size_t& bad, char32_t& cp) {
  const auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) {
    cp = b;
    return 1;
  }
  size_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b >= 0xC2 && b <= 0xDF) {
    need = 1;
  } else if (b == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
    need = 2;
  } else if (b == 0xED) {
    need = 2, hi = 0x9F;
  } else if (b == 0xF0) {
    need = 3, lo = 0x90;
  } else if (b >= 0xF1 && b <= 0xF3) {
    need = 3;
  } else if (b == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    bad = 1;
    return 0;
  }
  char32_t v = b & (need == 1 ? 0x1F : need == 2 ? 0x0F : 0x07);
  size_t k = 0;
  for (; k < need; ++k) {
    const size_t j = i + 1 + k;
    if (j >= s.size()) break;
    const auto c = static_cast<uint8_t>(s[j]);
    const uint8_t l = k == 0 ? lo : 0x80, h = k == 0 ? hi : 0xBF;
    if (c < l || c > h) break;
    v = (v << 6) | (c & 0x3F);
  }
  if (k < need) {
    bad = 1 + k;
    return 0;
  }
  cp = v;
  return need + 1;
}

// Calls f(off, len, cp, valid) for each character of s in order: a valid sequence, or an invalid
// part (cp = U+FFFD) of one byte or, with `maximal_subparts`, the maximal invalid subpart. Stops
// early when f returns false.
template <class F>
void for_each_char(std::string_view s, bool maximal_subparts, F&& f) {
  for (size_t i = 0; i < s.size();) {
    size_t bad = 0;
    char32_t cp = 0;
    size_t n = utf8_seq(s, i, bad, cp);
    const bool valid = n != 0;
    if (!valid) {
      cp = 0xFFFD;
      n = maximal_subparts ? bad : 1;
    }
    if (!f(i, n, cp, valid)) return;
    i += n;
  }
}

}  // namespace

std::vector<U8Char> utf8_chars(std::string_view s) {
  std::vector<U8Char> out;
  out.reserve(s.size());
  for_each_char(s, false, [&](size_t off, size_t n, char32_t cp, bool) {
    out.push_back({cp, static_cast<uint32_t>(off), static_cast<uint32_t>(n)});
    return true;
  });
  return out;
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for_each_char(bytes, true, [&](size_t off, size_t n, char32_t, bool valid) {
    if (valid)
      out.append(bytes.substr(off, n));
    else
      out += "\xEF\xBF\xBD";
    return true;
  });
  return out;
}

bool utf8_valid(std::string_view s) {
  bool valid = true;
  for_each_char(s, false, [&](size_t, size_t, char32_t, bool ok) { return valid = ok; });
  return valid;
}

}  // namespace moetool
