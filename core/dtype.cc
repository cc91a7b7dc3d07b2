// core/dtype.cc — dtype table and float conversions (see dtype.h).
#include "core/dtype.h"

#include <cmath>
#include <cctype>
#include <cstring>
#include <limits>

#include "core/error.h"

namespace moetool {
namespace {

struct DTypeInfo {
  const char* name;
  size_t size;
  bool is_float;
};

constexpr DTypeInfo kInfo[kNumDTypes] = {
    {"BOOL", 1, false}, {"U8", 1, false},  {"I8", 1, false},   {"F8_E5M2", 1, true}, {"F8_E4M3", 1, true},
    {"I16", 2, false},  {"U16", 2, false}, {"F16", 2, true},   {"BF16", 2, true},    {"I32", 4, false},
    {"U32", 4, false},  {"F32", 4, true},  {"F64", 8, true},   {"I64", 8, false},    {"U64", 8, false},
};

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

size_t dtype_size(DType t) { return kInfo[static_cast<int>(t)].size; }
const char* dtype_name(DType t) { return kInfo[static_cast<int>(t)].name; }
bool is_float(DType t) { return kInfo[static_cast<int>(t)].is_float; }

std::optional<DType> parse_dtype(std::string_view s) {
  for (int i = 0; i < kNumDTypes; ++i)
    if (s == kInfo[i].name) return static_cast<DType>(i);
  return std::nullopt;
}

DType parse_float_dtype_option(std::string_view s, std::string_view what) {
  std::string l(s);
  for (auto& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (l == "f32" || l == "float32" || l == "fp32") return DType::F32;
  if (l == "f16" || l == "float16" || l == "fp16" || l == "half") return DType::F16;
  if (l == "bf16" || l == "bfloat16") return DType::BF16;
  if (l == "f64" || l == "float64") return DType::F64;
  fail(what, ": unsupported dtype '", s, "' (expected f32, f16, bf16 or f64)");
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return float_of(sign | 0x7f800000u | (mant << 13));  // Inf / NaN (payload kept)
  if (exp == 0) {
    if (mant == 0) return float_of(sign);
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return float_of(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = bits_of(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t absx = x & 0x7fffffffu;
  if (absx > 0x7f800000u) {  // NaN: keep top payload bits, force quiet
    return static_cast<uint16_t>(sign | 0x7e00u | ((absx >> 13) & 0x3ffu));
  }
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520 -> Inf
  if (absx < 0x38800000u) {  // below smallest normal f16 (2^-14): subnormal or zero
    if (absx < 0x33000000u) return sign;  // < 2^-25 rounds to 0 (2^-25 exactly ties to even 0)
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // result = m >> (shift) in units of 2^-24 ... derived below
    // value = m * 2^(e-150); in f16 subnormal units (2^-24): m * 2^(e-126) -> shift right by (126-e)
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<uint16_t>(sign | q);
  }
  // normal: rebias exponent, round mantissa from 23 to 10 bits (carry may bump the exponent, correctly)
  uint32_t v = absx - 0x38000000u;  // exponent -112
  const uint32_t rem = v & 0x1fffu;
  v >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
  return static_cast<uint16_t>(sign | v);
}

float bf16_to_f32(uint16_t b) { return float_of(static_cast<uint32_t>(b) << 16); }

uint16_t f32_to_bf16(float f) {
  uint32_t x = bits_of(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t lsb = (x >> 16) & 1u;
  x += 0x7fffu + lsb;
  return static_cast<uint16_t>(x >> 16);
}

float f8e4m3_to_f32(uint8_t v) {
  const bool neg = v & 0x80;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 0x7;
  float r;
  if (exp == 0xf && mant == 0x7) {
    r = std::numeric_limits<float>::quiet_NaN();
  } else if (exp == 0) {
    r = std::ldexp(static_cast<float>(mant), -9);  // mant/8 * 2^-6
  } else {
    r = std::ldexp(1.0f + mant / 8.0f, exp - 7);
  }
  return neg ? -r : r;
}

uint8_t f32_to_f8e4m3(float f) {
  const uint32_t x = bits_of(f);
  const uint8_t sign = static_cast<uint8_t>((x >> 24) & 0x80u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7f;       // NaN
  if (a >= 0x43e00000u) return sign | 0x7e;      // >= 448 (and Inf): saturate
  if (a < 0x3c800000u) {                         // below 2^-6, the smallest normal: multiples of 2^-9
    // |f|·2^9 is exact (a power-of-two scaling of a value far from f32's range ends); nearbyint
    // rounds half to even in the default rounding mode. 8 is the code of 2^-6 itself.
    return sign | static_cast<uint8_t>(std::nearbyint(float_of(a) * 512.0f));
  }
  // Normal: rebias the exponent (127 -> 7) and round the 23-bit mantissa to 3 bits, half to even;
  // a carry out of the mantissa increments the exponent, as it should. Below the 448 cut above,
  // the largest result is 0x7e (448 itself, reached by rounding up); the clamp only guards it.
  const uint32_t r = a - (120u << 23);
  const uint32_t lsb = (r >> 20) & 1u;
  const uint32_t q = (r + 0x7ffffu + lsb) >> 20;
  return sign | static_cast<uint8_t>(q > 0x7e ? 0x7e : q);
}

float f8e5m2_to_f32(uint8_t v) {
  // E5M2 is the top byte of an f16.
  return f16_to_f32(static_cast<uint16_t>(v) << 8);
}

namespace {

template <class Load>
void store_from(DType to, void* dst, size_t n, Load load) {
  switch (to) {
    case DType::F32: {
      auto* d = static_cast<float*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = load(i);
      return;
    }
    case DType::F64: {
      auto* d = static_cast<double*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = load(i);
      return;
    }
    case DType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(load(i));
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(load(i));
      return;
    }
    default:
      fail("dtype conversion: cannot convert to ", dtype_name(to), " (expected F32, F64, F16 or BF16)");
  }
}

}  // namespace

void convert(DType from, const void* src, DType to, void* dst, size_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * dtype_size(from));
    return;
  }
  // F64 -> F16/BF16 goes through f32 (double rounding is acceptable and documented).
  switch (from) {
    case DType::F32: {
      auto* s = static_cast<const float*>(src);
      return store_from(to, dst, n, [s](size_t i) { return s[i]; });
    }
    case DType::F64: {
      auto* s = static_cast<const double*>(src);
      if (to == DType::F32) {
        auto* d = static_cast<float*>(dst);
        for (size_t i = 0; i < n; ++i) d[i] = static_cast<float>(s[i]);
        return;
      }
      return store_from(to, dst, n, [s](size_t i) { return static_cast<float>(s[i]); });
    }
    case DType::F16: {
      auto* s = static_cast<const uint16_t*>(src);
      return store_from(to, dst, n, [s](size_t i) { return f16_to_f32(s[i]); });
    }
    case DType::BF16: {
      auto* s = static_cast<const uint16_t*>(src);
      return store_from(to, dst, n, [s](size_t i) { return bf16_to_f32(s[i]); });
    }
    case DType::F8_E4M3: {
      auto* s = static_cast<const uint8_t*>(src);
      return store_from(to, dst, n, [s](size_t i) { return f8e4m3_to_f32(s[i]); });
    }
    case DType::F8_E5M2: {
      auto* s = static_cast<const uint8_t*>(src);
      return store_from(to, dst, n, [s](size_t i) { return f8e5m2_to_f32(s[i]); });
    }
    default:
      fail("dtype conversion: cannot convert from ", dtype_name(from), " (expected a float dtype)");
  }
}

void to_f32(DType from, const void* src, float* dst, size_t n) { convert(from, src, DType::F32, dst, n); }

}  // namespace moetool
