// formats/gguf.cc — GGUF values, the validating bounds-checked reader and the streaming writer
// (see gguf.h).
#include "formats/gguf.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iomanip>
#include <limits>
#include <sstream>

#include "core/error.h"

namespace moetool {

static_assert(std::endian::native == std::endian::little, "moetool's GGUF code assumes a little-endian host");

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

uint64_t load_bits(const uint8_t* p, size_t n) {
  uint64_t b = 0;
  std::memcpy(&b, p, n);
  return b;
}

// `s` between quote characters `q`, with q, backslash and control bytes escaped, cut at max_len.
std::string quote(std::string_view s, size_t max_len = 200, char q = '\'') {
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

// ---------------------------------------------------------------------------------------------
// GGUFValue

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

// ---------------------------------------------------------------------------------------------
// Tensor infos

Shape GGUFTensorInfo::shape() const { return Shape(ne.rbegin(), ne.rend()); }

int64_t GGUFTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

// Minimum serialized sizes, used to bound counts by the bytes left before reserving memory.
constexpr uint64_t kMinKVBytes = 8 + 4 + 1;               // empty key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, 1 dim, type, offset
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;

// Bounds-checked little-endian reader over the whole file. Errors name the file, the current
// key / tensor (`where`), what was being read, the offset, and how many bytes were needed / left.
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& name) : data_(data), size_(size), name_(name) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  void set_where(std::string w) { where_ = std::move(w); }

  [[noreturn]] void error(std::string_view msg) const {
    if (where_.empty()) fail(name_, ": ", msg);
    fail(name_, ": ", where_, ": ", msg);
  }

  void need(uint64_t n, std::string_view what) const {
    if (n > left())
      error(str("truncated file: reading ", what, " at offset ", pos_, " needs ", n, " bytes but only ", left(),
                " are left (file size ", size_, ")"));
  }

  const uint8_t* take(uint64_t n, std::string_view what) {
    need(n, what);
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return p;
  }

  uint32_t u32(std::string_view what) { return static_cast<uint32_t>(load_bits(take(4, what), 4)); }
  uint64_t u64(std::string_view what) { return load_bits(take(8, what), 8); }

  // A GGUF string (u64 length + bytes). `what` describes it for errors.
  std::string_view string(std::string_view what) {
    const uint64_t at = pos_;
    const uint64_t n = u64(what);
    if (n > left())
      error(str(what, ": string length ", n, " (at offset ", at, ") runs past the end of the file: only ", left(),
                " bytes are left (file size ", size_, ")"));
    const uint8_t* p = data_ + pos_;
    pos_ += n;
    return std::string_view(reinterpret_cast<const char*>(p), n);
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& name_;
  std::string where_;
};

GGUFType checked_value_type(Cursor& c, uint32_t t, std::string_view what) {
  if (t > static_cast<uint32_t>(GGUFType::F64))
    c.error(str(what, ": unknown value type ", t, " (expected 0..12)"));
  return static_cast<GGUFType>(t);
}

GGUFValue read_value(Cursor& c, GGUFType t) {
  switch (t) {
    case GGUFType::STRING: return GGUFCodec::string(std::string(c.string("string value")));
    case GGUFType::BOOL: {
      const uint8_t b = *c.take(1, "bool value");
      if (b > 1) c.error(str("bool value must be 0 or 1, found ", static_cast<int>(b)));
      return GGUFCodec::scalar(t, b);
    }
    case GGUFType::ARRAY: {
      const GGUFType elem = checked_value_type(c, c.u32("array element type"), "array element type");
      const uint64_t at = c.pos();
      const uint64_t count = c.u64("array length");
      if (elem == GGUFType::ARRAY) c.error("nested arrays are not supported (array element type is array)");
      if (elem == GGUFType::STRING) {
        if (count > c.left() / 8)
          c.error(str("array of ", count, " strings (count at offset ", at, ") cannot fit in the ", c.left(),
                      " bytes left in the file (each string takes at least 8)"));
        std::vector<std::string> v;
        v.reserve(count);
        for (uint64_t i = 0; i < count; ++i) v.emplace_back(c.string(str("string array element ", i)));
        return GGUFCodec::string_array(std::move(v));
      }
      const size_t es = gguf_type_size(elem);
      if (count > c.left() / es)
        c.error(str("array of ", count, " ", gguf_type_name(elem), " (count at offset ", at, ") needs ", es,
                    " bytes each but only ", c.left(), " bytes are left in the file"));
      const uint8_t* p = c.take(count * es, "array elements");
      if (elem == GGUFType::BOOL)
        for (uint64_t i = 0; i < count; ++i)
          if (p[i] > 1) c.error(str("bool array element ", i, " must be 0 or 1, found ", static_cast<int>(p[i])));
      return GGUFCodec::packed_array(elem, p, count);
    }
    default: {
      const size_t n = gguf_type_size(t);
      return GGUFCodec::scalar(t, load_bits(c.take(n, str(gguf_type_name(t), " value")), n));
    }
  }
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

}  // namespace

std::shared_ptr<GGUFFile> GGUFFile::open(const std::string& path) { return parse(MappedFile::open(path)); }

std::shared_ptr<GGUFFile> GGUFFile::parse(std::shared_ptr<MappedFile> file) {
  check(file != nullptr, "GGUFFile::parse: null file");
  const uint8_t* d = file->data();
  const size_t n = file->size();
  std::string name = file->path();
  return parse_impl(d, n, std::move(name), std::move(file));
}

std::shared_ptr<GGUFFile> GGUFFile::parse_buffer(const uint8_t* data, size_t size, const std::string& name_for_errors) {
  if (data == nullptr && size != 0) fail(name_for_errors, ": null buffer of ", size, " bytes");
  return parse_impl(data, size, name_for_errors, nullptr);
}

std::shared_ptr<GGUFFile> GGUFFile::parse_impl(const uint8_t* data, size_t size, std::string name,
                                               std::shared_ptr<const void> owner) {
  std::shared_ptr<GGUFFile> f(new GGUFFile());
  f->path_ = std::move(name);
  f->owner_ = std::move(owner);
  f->data_ = data;
  f->size_ = size;
  const std::string& path = f->path_;
  Cursor c(data, size, path);

  // Header.
  if (size < 4) fail(path, ": not a GGUF file: ", size, " bytes, too small to hold the 24-byte header");
  const uint8_t* m = c.take(4, "magic");
  if (std::memcmp(m, "GGUF", 4) != 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%02x %02x %02x %02x", m[0], m[1], m[2], m[3]);
    fail(path, ": not a GGUF file: expected magic \"GGUF\" (47 47 55 46), found ", buf);
  }
  const uint32_t version = c.u32("version");
  if (version == 1) fail(path, ": GGUF version 1 is not supported (expected version 3 or 2)");
  if (version != 2 && version != 3) {
    if (version == 0x02000000u || version == 0x03000000u)
      fail(path, ": big-endian GGUF files are not supported (version field reads ", version, ")");
    fail(path, ": unsupported GGUF version ", version, " (expected 3 or 2)");
  }
  f->version_ = version;
  const uint64_t n_tensors = c.u64("tensor count");
  const uint64_t n_kv = c.u64("key/value count");
  if (n_kv > c.left() / kMinKVBytes)
    fail(path, ": key/value count ", n_kv, " is larger than the file could hold (", c.left(),
         " bytes after the header; each key/value takes at least ", kMinKVBytes, ")");
  if (n_tensors > c.left() / kMinTensorInfoBytes)
    fail(path, ": tensor count ", n_tensors, " is larger than the file could hold (", c.left(),
         " bytes after the header; each tensor info takes at least ", kMinTensorInfoBytes, ")");
  if (n_kv * kMinKVBytes + n_tensors * kMinTensorInfoBytes > c.left())
    fail(path, ": ", n_kv, " key/values and ", n_tensors, " tensor infos cannot fit in the ", c.left(),
         " bytes after the header");

  // Key/values.
  f->kvs_.reserve(n_kv);
  f->kv_index_.reserve(n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    c.set_where(str("key/value #", i));
    std::string key(c.string("key"));
    c.set_where(str("key ", quote(key)));
    if (f->kv_index_.count(key)) c.error("duplicate key");
    const GGUFType t = checked_value_type(c, c.u32("value type"), "value type");
    GGUFValue v = read_value(c, t);
    f->kv_index_.emplace(key, f->kvs_.size());
    f->kvs_.push_back({std::move(key), std::move(v)});
  }
  c.set_where("");

  // Alignment.
  if (const GGUFValue* a = f->find("general.alignment")) {
    if (a->type() != GGUFType::U32)
      fail(path, ": key 'general.alignment': expected u32, found ", a->type_desc());
    const uint32_t al = a->as_u32();
    if (al == 0 || (al & (al - 1)) != 0)
      fail(path, ": key 'general.alignment': expected a power of two > 0, found ", al);
    f->alignment_ = al;
  }

  // Tensor infos.
  f->tensors_.reserve(n_tensors);
  f->tensor_index_.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    c.set_where(str("tensor info #", i));
    GGUFTensorInfo ti;
    ti.name = std::string(c.string("tensor name"));
    c.set_where(str("tensor ", quote(ti.name)));
    if (f->tensor_index_.count(ti.name)) c.error("duplicate tensor name");
    const uint32_t n_dims = c.u32("n_dims");
    if (n_dims < 1 || n_dims > kGGMLMaxDims) c.error(str("n_dims must be 1..4, found ", n_dims));
    ti.ne.resize(n_dims);
    for (uint32_t j = 0; j < n_dims; ++j) {
      const uint64_t d = c.u64("dimension");
      if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.error(str("dimension ne[", j, "] = ", d, " exceeds the largest signed 64-bit value"));
      ti.ne[j] = static_cast<int64_t>(d);
    }
    const uint32_t type = c.u32("ggml type");
    const GGMLTypeTraits* tr = ggml_type_traits_or_null(type);
    if (!tr) c.error(str("unknown ggml type id ", type));
    ti.type = tr->type;
    ti.offset = c.u64("data offset");
    ti.nbytes = ggml_nbytes(ti.type, ti.ne, str(path, ": tensor ", quote(ti.name), " (", tr->name, ")"));
    f->tensor_index_.emplace(ti.name, f->tensors_.size());
    f->tensors_.push_back(std::move(ti));
  }
  c.set_where("");
  f->header_size_ = c.pos();
  f->data_offset_ = align_up(c.pos(), f->alignment_);

  // Tensor placement: aligned, inside the file, no overlap.
  const uint64_t data_avail = f->data_offset_ <= size ? size - f->data_offset_ : 0;
  for (const auto& ti : f->tensors_) {
    const std::string where = str(path, ": tensor ", quote(ti.name));
    if (ti.offset % f->alignment_ != 0)
      fail(where, ": data offset ", ti.offset, " is not a multiple of the alignment ", f->alignment_);
    if (f->data_offset_ > size || ti.offset > data_avail || ti.nbytes > data_avail - ti.offset)
      fail(where, ": data [", ti.offset, ", +", ti.nbytes, " bytes) of the data section at ", f->data_offset_,
           " extends past the end of the file (size ", size, ", ", data_avail, " data bytes)");
  }
  std::vector<size_t> order;
  order.reserve(f->tensors_.size());
  for (size_t i = 0; i < f->tensors_.size(); ++i)
    if (f->tensors_[i].nbytes > 0) order.push_back(i);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return f->tensors_[a].offset < f->tensors_[b].offset; });
  for (size_t k = 1; k < order.size(); ++k) {
    const auto& prev = f->tensors_[order[k - 1]];
    const auto& cur = f->tensors_[order[k]];
    if (prev.offset + prev.nbytes > cur.offset)
      fail(path, ": tensor ", quote(cur.name), " (data offset ", cur.offset, ") overlaps tensor ", quote(prev.name),
           " (data offset ", prev.offset, ", ", prev.nbytes, " bytes)");
  }
  return f;
}

const GGUFValue* GGUFFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kvs_[it->second].value;
}

const GGUFValue& GGUFFile::get(const std::string& key) const {
  const GGUFValue* v = find(key);
  if (!v) fail(path_, ": missing key ", quote(key));
  return *v;
}

std::string GGUFFile::key_context(std::string_view key) const { return str(path_, ": key ", quote(key)); }

uint64_t GGUFFile::get_u64(const std::string& key) const { return get(key).as_u64(key_context(key)); }
int64_t GGUFFile::get_i64(const std::string& key) const { return get(key).as_i64(key_context(key)); }
uint32_t GGUFFile::get_u32(const std::string& key) const { return get(key).as_u32(key_context(key)); }
int32_t GGUFFile::get_i32(const std::string& key) const { return get(key).as_i32(key_context(key)); }
double GGUFFile::get_f64(const std::string& key) const { return get(key).as_f64(key_context(key)); }
float GGUFFile::get_f32(const std::string& key) const { return get(key).as_f32(key_context(key)); }
bool GGUFFile::get_bool(const std::string& key) const { return get(key).as_bool(key_context(key)); }
const std::string& GGUFFile::get_string(const std::string& key) const {
  return get(key).as_string(key_context(key));
}
const std::vector<std::string>& GGUFFile::get_string_array(const std::string& key) const {
  return get(key).as_string_array(key_context(key));
}

uint64_t GGUFFile::get_u64_or(const std::string& key, uint64_t def) const {
  const GGUFValue* v = find(key);
  return v ? v->as_u64(key_context(key)) : def;
}
int64_t GGUFFile::get_i64_or(const std::string& key, int64_t def) const {
  const GGUFValue* v = find(key);
  return v ? v->as_i64(key_context(key)) : def;
}
double GGUFFile::get_f64_or(const std::string& key, double def) const {
  const GGUFValue* v = find(key);
  return v ? v->as_f64(key_context(key)) : def;
}
bool GGUFFile::get_bool_or(const std::string& key, bool def) const {
  const GGUFValue* v = find(key);
  return v ? v->as_bool(key_context(key)) : def;
}
std::string GGUFFile::get_string_or(const std::string& key, const std::string& def) const {
  const GGUFValue* v = find(key);
  return v ? v->as_string(key_context(key)) : def;
}

const GGUFTensorInfo* GGUFFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GGUFTensorInfo& GGUFFile::tensor_info(const std::string& name) const {
  const GGUFTensorInfo* t = find_tensor(name);
  if (!t) fail(path_, ": no tensor named ", quote(name), " (the file has ", tensors_.size(), " tensors)");
  return *t;
}

GGUFRawTensor GGUFFile::raw_tensor(const std::string& name) const { return raw_tensor(tensor_info(name)); }

GGUFRawTensor GGUFFile::raw_tensor(const GGUFTensorInfo& info) const {
  GGUFRawTensor r;
  r.info = &info;
  r.type = info.type;
  // Validated at parse time: data_offset_ + offset + nbytes <= size_.
  r.bytes = std::span<const uint8_t>(data_ + data_offset_ + info.offset, info.nbytes);
  r.owner = owner_;
  return r;
}

Tensor GGUFFile::tensor(const std::string& name) const { return tensor(tensor_info(name)); }

Tensor GGUFFile::tensor(const GGUFTensorInfo& info) const {
  const auto dt = ggml_type_to_dtype(info.type);
  if (!dt)
    fail(path_, ": tensor ", quote(info.name), ": ggml type ", ggml_type_name(info.type),
         " is block-quantized, expected a plain type (F32/F16/BF16/F64/I8/I16/I32/I64); use raw_tensor()");
  Tensor t;
  t.dtype = *dt;
  t.shape = info.shape();  // PyTorch order: [..., rows, cols]
  t.data = const_cast<uint8_t*>(data_ + data_offset_ + info.offset);
  t.owner = owner_;
  return t;
}

// ---------------------------------------------------------------------------------------------
// Writer

struct GGUFWriter::Impl {
  std::string path, tmp;
  int fd = -1;
  bool header_written = false, finished = false;
  uint32_t alignment = kGGUFDefaultAlignment;
  std::vector<GGUFKV> kvs;
  std::unordered_map<std::string, size_t> kv_index;
  std::vector<GGUFTensorInfo> tensors;
  std::unordered_map<std::string, size_t> tensor_index;
  uint64_t data_size = 0;   // planned data-section bytes (padded)
  size_t current = 0;       // index of the tensor being written
  uint64_t current_done = 0;  // its bytes written so far

  static constexpr size_t kBufSize = 8u << 20;
  std::vector<uint8_t> buf;
  size_t buffered = 0;

  ~Impl() {
    if (fd >= 0) ::close(fd);
    if (!finished && !tmp.empty()) ::unlink(tmp.c_str());
  }

  [[noreturn]] void io_fail(std::string_view what, int err) {
    fail(path, ": ", what, " (temporary file ", tmp, "): ", std::strerror(err));
  }

  void raw_write(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        io_fail("write failed", errno);
      }
      if (w == 0) io_fail("write wrote nothing", EIO);
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  void flush() {
    if (buffered) raw_write(buf.data(), buffered);
    buffered = 0;
  }

  void put(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    if (n >= kBufSize / 2) {  // large: bypass the buffer (no copy)
      flush();
      raw_write(p, n);
      return;
    }
    if (buffered + n > buf.size()) flush();
    std::memcpy(buf.data() + buffered, p, n);
    buffered += n;
  }

  void pad_zeros(uint64_t n) {
    static constexpr uint8_t zeros[256] = {};
    while (n > 0) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof zeros));
      put(zeros, k);
      n -= k;
    }
  }

  void check_open(std::string_view op) const {
    if (finished) fail(path, ": ", op, " after finish()");
  }

  void write_header() {
    std::string h;
    h.append("GGUF", 4);
    GGUFCodec::put_u32(h, kGGUFVersion);
    GGUFCodec::put_u64(h, tensors.size());
    GGUFCodec::put_u64(h, kvs.size());
    for (const auto& kv : kvs) {
      GGUFCodec::put_string(h, kv.key);
      GGUFCodec::put_u32(h, static_cast<uint32_t>(kv.value.type()));
      GGUFCodec::put_value(h, kv.value);
    }
    for (const auto& t : tensors) {
      GGUFCodec::put_string(h, t.name);
      GGUFCodec::put_u32(h, static_cast<uint32_t>(t.ne.size()));
      for (int64_t d : t.ne) GGUFCodec::put_u64(h, static_cast<uint64_t>(d));
      GGUFCodec::put_u32(h, static_cast<uint32_t>(t.type));
      GGUFCodec::put_u64(h, t.offset);
    }
    tmp = str(path, ".tmp-", ::getpid());
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int e = errno;
      tmp.clear();  // nothing to remove
      fail(path, ": cannot create temporary file ", str(path, ".tmp-", ::getpid()), ": ", std::strerror(e));
    }
    buf.resize(kBufSize);
    header_written = true;
    put(h.data(), h.size());
    pad_zeros(align_up(h.size(), alignment) - h.size());
    skip_empty_tensors();
  }

  // Zero-byte tensors are complete as soon as they are reached.
  void skip_empty_tensors() {
    while (current < tensors.size() && current_done == tensors[current].nbytes) {
      pad_zeros(align_up(tensors[current].nbytes, alignment) - tensors[current].nbytes);
      ++current;
      current_done = 0;
    }
  }
};

GGUFWriter::GGUFWriter(std::string path) : impl_(std::make_unique<Impl>()) { impl_->path = std::move(path); }

GGUFWriter::~GGUFWriter() = default;

const std::string& GGUFWriter::path() const { return impl_->path; }
uint32_t GGUFWriter::alignment() const { return impl_->alignment; }
const std::vector<GGUFTensorInfo>& GGUFWriter::tensor_infos() const { return impl_->tensors; }

void GGUFWriter::add(const std::string& key, GGUFValue value) {
  Impl& w = *impl_;
  w.check_open("add");
  if (w.header_written) fail(w.path, ": key ", quote(key), ": cannot add metadata after tensor data was written");
  if (w.kv_index.count(key)) fail(w.path, ": duplicate key ", quote(key));
  if (GGUFCodec::nested(value)) fail(w.path, ": key ", quote(key), ": nested arrays are not supported");
  if (key == "general.alignment") {
    if (value.type() != GGUFType::U32)
      fail(w.path, ": key 'general.alignment': expected u32, found ", value.type_desc());
    const uint32_t a = value.as_u32();
    if (a == 0 || (a & (a - 1)) != 0)
      fail(w.path, ": key 'general.alignment': expected a power of two > 0, found ", a);
    if (!w.tensors.empty())
      fail(w.path, ": key 'general.alignment' must be added before the tensor infos");
    w.alignment = a;
  }
  w.kv_index.emplace(key, w.kvs.size());
  w.kvs.push_back({key, std::move(value)});
}

uint64_t GGUFWriter::add_tensor_info(const std::string& name, GGMLType type, std::vector<int64_t> ne) {
  Impl& w = *impl_;
  w.check_open("add_tensor_info");
  const std::string where = str(w.path, ": tensor ", quote(name));
  if (w.header_written) fail(where, ": cannot declare tensors after tensor data was written");
  if (name.empty()) fail(w.path, ": empty tensor name");
  if (name.size() >= kGGMLMaxName)
    fail(where, ": name is ", name.size(), " bytes, llama.cpp requires fewer than ", kGGMLMaxName);
  if (w.tensor_index.count(name)) fail(where, ": duplicate tensor name");
  if (ne.empty() || ne.size() > kGGMLMaxDims) fail(where, ": expected 1..4 dims, found ", ne.size());
  if (!is_valid_ggml_type(static_cast<uint32_t>(type)))
    fail(where, ": unknown ggml type id ", static_cast<uint32_t>(type));
  GGUFTensorInfo ti;
  ti.name = name;
  ti.type = type;
  ti.ne = std::move(ne);
  ti.nbytes = ggml_nbytes(type, ti.ne, str(where, " (", ggml_type_name(type), ")"));
  ti.offset = w.data_size;
  const uint64_t padded = align_up(ti.nbytes, w.alignment);
  if (padded > std::numeric_limits<uint64_t>::max() / 2 - w.data_size) fail(where, ": data section too large");
  w.data_size += padded;
  w.tensor_index.emplace(name, w.tensors.size());
  w.tensors.push_back(std::move(ti));
  return w.tensors.back().nbytes;
}

uint64_t GGUFWriter::add_tensor_info(const std::string& name, DType dtype, const Shape& shape) {
  const auto gt = dtype_to_ggml_type(dtype);
  if (!gt) fail(impl_->path, ": tensor ", quote(name), ": dtype ", dtype_name(dtype), " has no ggml type");
  return add_tensor_info(name, *gt, std::vector<int64_t>(shape.rbegin(), shape.rend()));
}

void GGUFWriter::write_tensor_data(const std::string& name, const void* data, size_t size) {
  Impl& w = *impl_;
  w.check_open("write_tensor_data");
  if (!w.header_written) w.write_header();
  if (size == 0 && w.tensor_index.count(name)) return;  // nothing to append (empty tensors complete themselves)
  if (w.current >= w.tensors.size()) {
    if (w.tensor_index.count(name))
      fail(w.path, ": tensor ", quote(name), ": data written twice (all tensors are already complete)");
    fail(w.path, ": tensor ", quote(name), ": not declared with add_tensor_info");
  }
  const GGUFTensorInfo& t = w.tensors[w.current];
  if (name != t.name) {
    if (!w.tensor_index.count(name)) fail(w.path, ": tensor ", quote(name), ": not declared with add_tensor_info");
    if (w.current_done > 0)
      fail(w.path, ": tensor ", quote(name), ": data written while tensor ", quote(t.name), " is incomplete (",
           w.current_done, " of ", t.nbytes, " bytes written)");
    fail(w.path, ": tensor ", quote(name), ": data written out of order, expected tensor ", quote(t.name),
         " next (tensors are written in declared order)");
  }
  if (size > t.nbytes - w.current_done)
    fail(w.path, ": tensor ", quote(name), ": ", size, " bytes written with ", w.current_done, " of ", t.nbytes,
         " already written: expected at most ", t.nbytes - w.current_done);
  if (size > 0 && data == nullptr) fail(w.path, ": tensor ", quote(name), ": null data pointer");
  w.put(data, size);
  w.current_done += size;
  w.skip_empty_tensors();
}

void GGUFWriter::write_tensor(const std::string& name, const Tensor& t) {
  Impl& w = *impl_;
  auto it = w.tensor_index.find(name);
  if (it == w.tensor_index.end()) fail(w.path, ": tensor ", quote(name), ": not declared with add_tensor_info");
  const GGUFTensorInfo& ti = w.tensors[it->second];
  const auto dt = ggml_type_to_dtype(ti.type);
  if (!dt || *dt != t.dtype)
    fail(w.path, ": tensor ", quote(name), ": declared as ", ggml_type_name(ti.type), ", given a ",
         dtype_name(t.dtype), " tensor");
  if (t.shape != ti.shape())
    fail(w.path, ": tensor ", quote(name), ": declared shape ", shape_str(ti.shape()), ", given ", shape_str(t.shape));
  write_tensor_data(name, t.data, t.nbytes());
}

void GGUFWriter::finish() {
  Impl& w = *impl_;
  w.check_open("finish");
  if (!w.header_written) w.write_header();
  if (w.current < w.tensors.size()) {
    const GGUFTensorInfo& t = w.tensors[w.current];
    fail(w.path, ": finish() with tensor ", quote(t.name), " incomplete (", w.current_done, " of ", t.nbytes,
         " bytes written; ", w.tensors.size() - w.current, " of ", w.tensors.size(), " tensors not complete)");
  }
  w.flush();
  const int fd = w.fd;
  w.fd = -1;
  if (::close(fd) != 0) w.io_fail("close failed", errno);
  if (std::rename(w.tmp.c_str(), w.path.c_str()) != 0) {
    const int e = errno;
    fail(w.path, ": cannot rename from temporary file ", w.tmp, ": ", std::strerror(e));
  }
  w.finished = true;
  w.buf = std::vector<uint8_t>();
}

}  // namespace moetool
