// formats/gguf.cc — the validating, bounds-checked GGUF reader (GGUFFile) and tensor infos (see
// gguf.h; values: gguf_value.cc, writer: gguf_writer.cc).
#include "formats/gguf.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "formats/file_kind.h"
#include "formats/gguf_codec.h"

namespace moetool {

using gguf_detail::align_up;
using gguf_detail::load_bits;
using gguf_detail::quote;

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
    const std::string k = file_kind_of_bytes(data, std::min<size_t>(size, 16), size);
    fail(path, ": not a GGUF file: expected magic \"GGUF\" (47 47 55 46), found ", buf,
         k.empty() ? std::string() : str(" (a ", k, " file, by its first bytes)"));
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
  if (const GGUFValue* a = f->find("general.alignment")) f->alignment_ = gguf_detail::checked_alignment(path, *a);

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

namespace {
// The value of `key` read by `get` (a GGUFValue accessor), or `def` when the key is absent.
template <class T, class R>
T value_or(const GGUFFile& f, const std::string& key, T def, R (GGUFValue::*get)(std::string_view) const) {
  const GGUFValue* v = f.find(key);
  return v ? T((v->*get)(f.key_context(key))) : def;
}
}  // namespace

uint64_t GGUFFile::get_u64_or(const std::string& key, uint64_t def) const {
  return value_or(*this, key, def, &GGUFValue::as_u64);
}
int64_t GGUFFile::get_i64_or(const std::string& key, int64_t def) const {
  return value_or(*this, key, def, &GGUFValue::as_i64);
}
double GGUFFile::get_f64_or(const std::string& key, double def) const {
  return value_or(*this, key, def, &GGUFValue::as_f64);
}
bool GGUFFile::get_bool_or(const std::string& key, bool def) const {
  return value_or(*this, key, def, &GGUFValue::as_bool);
}
std::string GGUFFile::get_string_or(const std::string& key, const std::string& def) const {
  return value_or(*this, key, def, &GGUFValue::as_string);
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

}  // namespace moetool
