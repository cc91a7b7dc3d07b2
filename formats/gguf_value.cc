// formats/gguf_value.cc — GGUF metadata value types and GGUFValue: construction, typed access and
// rendering (see gguf.h).
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "formats/gguf_codec.h"

namespace moetool {

using gguf_detail::load_bits;
using gguf_detail::quote;

// ---------------------------------------------------------------------------------------------
// Types

std::string gguf_type_name(GGUFType t) {
  switch (t) {
    case GGUFType::U8: return "u8";
    case GGUFType::I8: return "i8";
    case GGUFType::U16: return "u16";
    case GGUFType::I16: return "i16";
    case GGUFType::U32: return "u32";
    case GGUFType::I32: return "i32";
    case GGUFType::F32: return "f32";
    case GGUFType::BOOL: return "bool";
    case GGUFType::STRING: return "string";
    case GGUFType::ARRAY: return "array";
    case GGUFType::U64: return "u64";
    case GGUFType::I64: return "i64";
    case GGUFType::F64: return "f64";
  }
  return str("type ", static_cast<uint32_t>(t));
}

size_t gguf_type_size(GGUFType t) {
  switch (t) {
    case GGUFType::U8:
    case GGUFType::I8:
    case GGUFType::BOOL: return 1;
    case GGUFType::U16:
    case GGUFType::I16: return 2;
    case GGUFType::U32:
    case GGUFType::I32:
    case GGUFType::F32: return 4;
    case GGUFType::U64:
    case GGUFType::I64:
    case GGUFType::F64: return 8;
    default: return 0;
  }
}

namespace {

bool is_int_type(GGUFType t) {
  switch (t) {
    case GGUFType::U8:
    case GGUFType::I8:
    case GGUFType::U16:
    case GGUFType::I16:
    case GGUFType::U32:
    case GGUFType::I32:
    case GGUFType::U64:
    case GGUFType::I64: return true;
    default: return false;
  }
}

bool is_float_type(GGUFType t) { return t == GGUFType::F32 || t == GGUFType::F64; }

// An integer of type t, decoded from its raw zero-extended bits as sign and magnitude (so every
// u64 and i64 value is representable).
struct IntVal {
  bool negative = false;
  uint64_t magnitude = 0;  // |value|
};

IntVal int_value(GGUFType t, uint64_t bits) {
  int64_t s = 0;
  switch (t) {
    case GGUFType::I8: s = static_cast<int8_t>(bits & 0xff); break;
    case GGUFType::I16: s = static_cast<int16_t>(bits & 0xffff); break;
    case GGUFType::I32: s = static_cast<int32_t>(bits & 0xffffffffu); break;
    case GGUFType::I64: s = static_cast<int64_t>(bits); break;
    default: return {false, bits};  // unsigned types
  }
  if (s < 0) return {true, static_cast<uint64_t>(0) - static_cast<uint64_t>(s)};
  return {false, static_cast<uint64_t>(s)};
}

double float_value(GGUFType t, uint64_t bits) {
  if (t == GGUFType::F32) {
    const uint32_t b = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}

std::string int_str(const IntVal& v) { return v.negative ? str("-", v.magnitude) : str(v.magnitude); }

std::string scalar_str(GGUFType t, uint64_t bits) {
  if (t == GGUFType::BOOL) return bits ? "true" : "false";
  if (is_float_type(t)) {
    std::ostringstream os;
    os << std::setprecision(t == GGUFType::F32 ? 9 : 17) << float_value(t, bits);
    return os.str();
  }
  return int_str(int_value(t, bits));
}

}  // namespace

namespace gguf_detail {

std::string quote(std::string_view s, size_t max_len, char q) {
  std::string out(1, q);
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == static_cast<unsigned char>(q) || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > max_len) out += "...";
  out += q;
  return out;
}

uint32_t checked_alignment(const std::string& path, const GGUFValue& v) {
  if (v.type() != GGUFType::U32) fail(path, ": key 'general.alignment': expected u32, found ", v.type_desc());
  const uint32_t a = v.as_u32();
  if (a == 0 || (a & (a - 1)) != 0) fail(path, ": key 'general.alignment': expected a power of two > 0, found ", a);
  return a;
}

}  // namespace gguf_detail

// ---------------------------------------------------------------------------------------------
// GGUFValue

namespace {
template <class T>
GGUFValue make_scalar(GGUFType t, T v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  return GGUFCodec::scalar(t, bits);
}
}  // namespace

GGUFValue GGUFValue::u8(uint8_t v) { return make_scalar(GGUFType::U8, v); }
GGUFValue GGUFValue::i8(int8_t v) { return make_scalar(GGUFType::I8, v); }
GGUFValue GGUFValue::u16(uint16_t v) { return make_scalar(GGUFType::U16, v); }
GGUFValue GGUFValue::i16(int16_t v) { return make_scalar(GGUFType::I16, v); }
GGUFValue GGUFValue::u32(uint32_t v) { return make_scalar(GGUFType::U32, v); }
GGUFValue GGUFValue::i32(int32_t v) { return make_scalar(GGUFType::I32, v); }
GGUFValue GGUFValue::f32(float v) { return make_scalar(GGUFType::F32, v); }
GGUFValue GGUFValue::boolean(bool v) { return make_scalar(GGUFType::BOOL, static_cast<uint8_t>(v ? 1 : 0)); }
GGUFValue GGUFValue::string(std::string v) { return GGUFCodec::string(std::move(v)); }
GGUFValue GGUFValue::u64(uint64_t v) { return make_scalar(GGUFType::U64, v); }
GGUFValue GGUFValue::i64(int64_t v) { return make_scalar(GGUFType::I64, v); }
GGUFValue GGUFValue::f64(double v) { return make_scalar(GGUFType::F64, v); }

GGUFValue GGUFValue::bool_array(const std::vector<bool>& v) {
  std::vector<uint8_t> b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = v[i] ? 1 : 0;
  return GGUFCodec::packed_array(GGUFType::BOOL, b.data(), b.size());
}

GGUFValue GGUFValue::string_array(std::vector<std::string> v) { return GGUFCodec::string_array(std::move(v)); }

GGUFValue GGUFValue::raw_array(GGUFType elem, const void* data, uint64_t count) {
  const size_t es = gguf_type_size(elem);
  if (es == 0) fail("GGUF array: element type ", gguf_type_name(elem), " is not a fixed-size type (use string_array)");
  if (count > std::numeric_limits<size_t>::max() / es) fail("GGUF array: ", count, " elements is too many");
  const auto* p = static_cast<const uint8_t*>(data);
  if (elem == GGUFType::BOOL)
    for (uint64_t i = 0; i < count; ++i)
      if (p[i] > 1) fail("GGUF bool array: element ", i, " is ", static_cast<int>(p[i]), ", expected 0 or 1");
  return GGUFCodec::packed_array(elem, p, count);
}

bool GGUFValue::is_integer() const { return is_int_type(type_); }
bool GGUFValue::is_float() const { return is_float_type(type_); }

std::string GGUFValue::type_desc() const {
  if (type_ == GGUFType::ARRAY) return str("array of ", gguf_type_name(elem_));
  return gguf_type_name(type_);
}

void GGUFValue::mismatch(std::string_view ctx, std::string_view wanted) const {
  fail(ctx, ": expected ", wanted, ", found ", type_desc());
}

uint64_t GGUFValue::as_u64(std::string_view ctx) const {
  if (!is_int_type(type_)) mismatch(ctx, "an unsigned integer");
  const IntVal v = int_value(type_, bits_);
  if (v.negative) fail(ctx, ": expected a non-negative integer, found ", int_str(v), " (", type_desc(), ")");
  return v.magnitude;
}

int64_t GGUFValue::as_i64(std::string_view ctx) const {
  if (!is_int_type(type_)) mismatch(ctx, "an integer");
  const IntVal v = int_value(type_, bits_);
  if (!v.negative && v.magnitude > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    fail(ctx, ": value ", v.magnitude, " does not fit in a signed 64-bit integer");
  return v.negative ? static_cast<int64_t>(0 - v.magnitude) : static_cast<int64_t>(v.magnitude);
}

uint32_t GGUFValue::as_u32(std::string_view ctx) const {
  const uint64_t v = as_u64(ctx);
  if (v > std::numeric_limits<uint32_t>::max()) fail(ctx, ": value ", v, " does not fit in u32");
  return static_cast<uint32_t>(v);
}

int32_t GGUFValue::as_i32(std::string_view ctx) const {
  if (!is_int_type(type_)) mismatch(ctx, "an integer");
  const IntVal v = int_value(type_, bits_);
  const uint64_t lim = v.negative ? 2147483648ull : 2147483647ull;
  if (v.magnitude > lim) fail(ctx, ": value ", int_str(v), " does not fit in i32");
  return v.negative ? static_cast<int32_t>(-static_cast<int64_t>(v.magnitude)) : static_cast<int32_t>(v.magnitude);
}

double GGUFValue::as_f64(std::string_view ctx) const {
  if (is_float_type(type_)) return float_value(type_, bits_);
  if (is_int_type(type_)) {
    const IntVal v = int_value(type_, bits_);
    const double m = static_cast<double>(v.magnitude);
    return v.negative ? -m : m;
  }
  mismatch(ctx, "a number");
}

float GGUFValue::as_f32(std::string_view ctx) const { return static_cast<float>(as_f64(ctx)); }

bool GGUFValue::as_bool(std::string_view ctx) const {
  if (type_ != GGUFType::BOOL) mismatch(ctx, "bool");
  return bits_ != 0;
}

const std::string& GGUFValue::as_string(std::string_view ctx) const {
  if (type_ != GGUFType::STRING) mismatch(ctx, "string");
  return str_;
}

GGUFType GGUFValue::array_type(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY) mismatch(ctx, "an array");
  return elem_;
}

uint64_t GGUFValue::array_size(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY) mismatch(ctx, "an array");
  return count_;
}

uint64_t GGUFValue::elem_bits(uint64_t i) const {
  const size_t es = gguf_type_size(elem_);
  return load_bits(raw_.data() + i * es, es);
}

GGUFValue GGUFValue::at(uint64_t i, std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY) mismatch(ctx, "an array");
  if (i >= count_) fail(ctx, ": array index ", i, " out of range (", count_, " elements)");
  if (elem_ == GGUFType::STRING) return GGUFCodec::string(strs_[i]);
  return GGUFCodec::scalar(elem_, elem_bits(i));
}

const std::vector<std::string>& GGUFValue::as_string_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || elem_ != GGUFType::STRING) mismatch(ctx, "array of string");
  return strs_;
}

std::vector<uint64_t> GGUFValue::as_u64_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || !is_int_type(elem_)) mismatch(ctx, "array of integers");
  std::vector<uint64_t> out(count_);
  for (uint64_t i = 0; i < count_; ++i) {
    const IntVal v = int_value(elem_, elem_bits(i));
    if (v.negative) fail(ctx, ": element ", i, " is ", int_str(v), ", expected a non-negative integer");
    out[i] = v.magnitude;
  }
  return out;
}

std::vector<int64_t> GGUFValue::as_i64_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || !is_int_type(elem_)) mismatch(ctx, "array of integers");
  std::vector<int64_t> out(count_);
  for (uint64_t i = 0; i < count_; ++i) out[i] = GGUFCodec::scalar(elem_, elem_bits(i)).as_i64(ctx);
  return out;
}

std::vector<int32_t> GGUFValue::as_i32_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || !is_int_type(elem_)) mismatch(ctx, "array of integers");
  std::vector<int32_t> out(count_);
  for (uint64_t i = 0; i < count_; ++i) out[i] = GGUFCodec::scalar(elem_, elem_bits(i)).as_i32(ctx);
  return out;
}

std::vector<double> GGUFValue::as_f64_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || !(is_int_type(elem_) || is_float_type(elem_))) mismatch(ctx, "array of numbers");
  std::vector<double> out(count_);
  for (uint64_t i = 0; i < count_; ++i) out[i] = GGUFCodec::scalar(elem_, elem_bits(i)).as_f64(ctx);
  return out;
}

std::vector<float> GGUFValue::as_f32_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || !(is_int_type(elem_) || is_float_type(elem_))) mismatch(ctx, "array of numbers");
  std::vector<float> out(count_);
  if (elem_ == GGUFType::F32) {
    if (!raw_.empty()) std::memcpy(out.data(), raw_.data(), raw_.size());
    return out;
  }
  for (uint64_t i = 0; i < count_; ++i) out[i] = GGUFCodec::scalar(elem_, elem_bits(i)).as_f32(ctx);
  return out;
}

std::vector<bool> GGUFValue::as_bool_array(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || elem_ != GGUFType::BOOL) mismatch(ctx, "array of bool");
  std::vector<bool> out(count_);
  for (uint64_t i = 0; i < count_; ++i) out[i] = raw_[i] != 0;
  return out;
}

const std::vector<uint8_t>& GGUFValue::array_bytes(std::string_view ctx) const {
  if (type_ != GGUFType::ARRAY || elem_ == GGUFType::STRING) mismatch(ctx, "an array of fixed-size elements");
  return raw_;
}

std::string GGUFValue::to_string(size_t max_elems) const {
  if (type_ == GGUFType::STRING) return quote(str_, 200, '"');
  if (type_ != GGUFType::ARRAY) return scalar_str(type_, bits_);
  std::string out = "[";
  const uint64_t n = std::min<uint64_t>(count_, max_elems);
  for (uint64_t i = 0; i < n; ++i) {
    if (i) out += ", ";
    out += elem_ == GGUFType::STRING ? quote(strs_[i], 60, '"') : scalar_str(elem_, elem_bits(i));
  }
  if (count_ > n) out += str(n ? ", " : "", "... (", count_, " ", gguf_type_name(elem_), " elements)");
  out += "]";
  return out;
}

bool GGUFValue::operator==(const GGUFValue& o) const {
  if (type_ != o.type_) return false;
  switch (type_) {
    case GGUFType::STRING: return str_ == o.str_;
    case GGUFType::ARRAY:
      return elem_ == o.elem_ && count_ == o.count_ && raw_ == o.raw_ && strs_ == o.strs_;
    default: return bits_ == o.bits_;
  }
}

}  // namespace moetool
