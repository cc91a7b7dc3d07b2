// formats/gguf.h — the GGUF container (llama.cpp's file format, v3; v2 is read too): typed metadata
// values, a validating memory-mapped zero-copy reader that is safe on hostile input, and a
// streaming writer that writes tensor data in declared order under a temporary name and renames
// the file into place only when finished.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count key/values
// (string key, u32 value type, value); tensor_count tensor infos (string name, u32 n_dims,
// u64 ne[n_dims], u32 ggml type, u64 offset); padding to `general.alignment` (default 32); the data
// section, each tensor at its offset (relative to the data section, a multiple of the alignment).
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements.
//
// Dimension order: GGUF's ne[0] is the row length (fastest dimension), the reverse of PyTorch and
// safetensors. GGUFTensorInfo::ne keeps the file's order; shape() and the moetool::Tensor views use
// PyTorch order (ne = [cols, rows] -> shape [rows, cols]).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"
#include "formats/ggml_types.h"

namespace moetool {

// GGUF metadata value types (the u32 stored before each value).
enum class GGUFType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

inline constexpr uint32_t kGGUFMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGGUFVersion = 3;
inline constexpr uint32_t kGGUFDefaultAlignment = 32;
inline constexpr size_t kGGMLMaxDims = 4;
inline constexpr size_t kGGMLMaxName = 64;  // llama.cpp rejects tensor names of 64 bytes or more

// "u8", "i8", ..., "f64", "bool", "string", "array"; "type <n>" for unknown values.
std::string gguf_type_name(GGUFType t);
// Bytes of a fixed-size value type; 0 for STRING and ARRAY (and unknown types).
size_t gguf_type_size(GGUFType t);

// Maps a C++ element type to its GGUF type (for GGUFValue::array<T>).
template <class T>
constexpr GGUFType gguf_type_of() {
  if constexpr (std::is_same_v<T, uint8_t>) return GGUFType::U8;
  else if constexpr (std::is_same_v<T, int8_t>) return GGUFType::I8;
  else if constexpr (std::is_same_v<T, uint16_t>) return GGUFType::U16;
  else if constexpr (std::is_same_v<T, int16_t>) return GGUFType::I16;
  else if constexpr (std::is_same_v<T, uint32_t>) return GGUFType::U32;
  else if constexpr (std::is_same_v<T, int32_t>) return GGUFType::I32;
  else if constexpr (std::is_same_v<T, float>) return GGUFType::F32;
  else if constexpr (std::is_same_v<T, uint64_t>) return GGUFType::U64;
  else if constexpr (std::is_same_v<T, int64_t>) return GGUFType::I64;
  else if constexpr (std::is_same_v<T, double>) return GGUFType::F64;
  else static_assert(sizeof(T) == 0, "no GGUF type for this C++ type");
}

// One metadata value: a scalar of any type, a string, or a (non-nested) array of any element type.
// Accessors take `ctx`, the text that names the value in error messages (GGUFFile passes
// "<file>: key '<key>'"); on a type mismatch they throw moetool::Error "<ctx>: expected <wanted>,
// found <actual type>".
class GGUFValue {
 public:
  GGUFValue() = default;  // u8 0

  // Scalars.
  static GGUFValue u8(uint8_t v);
  static GGUFValue i8(int8_t v);
  static GGUFValue u16(uint16_t v);
  static GGUFValue i16(int16_t v);
  static GGUFValue u32(uint32_t v);
  static GGUFValue i32(int32_t v);
  static GGUFValue f32(float v);
  static GGUFValue boolean(bool v);
  static GGUFValue string(std::string v);
  static GGUFValue u64(uint64_t v);
  static GGUFValue i64(int64_t v);
  static GGUFValue f64(double v);

  // Arrays.
  template <class T>
  static GGUFValue array(const std::vector<T>& v) {
    return raw_array(gguf_type_of<T>(), v.data(), v.size());
  }
  static GGUFValue bool_array(const std::vector<bool>& v);
  static GGUFValue string_array(std::vector<std::string> v);
  // An array of `count` elements of the fixed-size type `elem`, packed little-endian at `data`.
  // Throws for STRING/ARRAY element types and for bool bytes other than 0 and 1.
  static GGUFValue raw_array(GGUFType elem, const void* data, uint64_t count);

  GGUFType type() const { return type_; }
  bool is_array() const { return type_ == GGUFType::ARRAY; }
  bool is_string() const { return type_ == GGUFType::STRING; }
  bool is_integer() const;  // scalar u8..i64
  bool is_float() const;    // scalar f32 or f64
  // "u32", "string", "array of string", ...
  std::string type_desc() const;

  // Scalar accessors.
  uint64_t as_u64(std::string_view ctx = "value") const;  // any integer type holding a value >= 0
  int64_t as_i64(std::string_view ctx = "value") const;   // any integer type holding a value < 2^63
  uint32_t as_u32(std::string_view ctx = "value") const;  // any integer type, range-checked
  int32_t as_i32(std::string_view ctx = "value") const;   // any integer type, range-checked
  double as_f64(std::string_view ctx = "value") const;    // f32, f64 or any integer type
  float as_f32(std::string_view ctx = "value") const;     // as_f64 narrowed
  bool as_bool(std::string_view ctx = "value") const;     // bool only
  const std::string& as_string(std::string_view ctx = "value") const;  // string only

  // Array accessors (throw unless the value is an array with a suitable element type).
  GGUFType array_type(std::string_view ctx = "value") const;
  uint64_t array_size(std::string_view ctx = "value") const;
  GGUFValue at(uint64_t i, std::string_view ctx = "value") const;  // element i as a scalar value
  const std::vector<std::string>& as_string_array(std::string_view ctx = "value") const;
  std::vector<uint64_t> as_u64_array(std::string_view ctx = "value") const;  // integer elements
  std::vector<int64_t> as_i64_array(std::string_view ctx = "value") const;   // integer elements
  std::vector<int32_t> as_i32_array(std::string_view ctx = "value") const;   // integer elements
  std::vector<double> as_f64_array(std::string_view ctx = "value") const;    // float or integer
  std::vector<float> as_f32_array(std::string_view ctx = "value") const;     // float or integer
  std::vector<bool> as_bool_array(std::string_view ctx = "value") const;     // bool elements
  // The packed little-endian elements of a fixed-size-element array.
  const std::vector<uint8_t>& array_bytes(std::string_view ctx = "value") const;

  // Human-readable rendering; arrays show at most `max_elems` elements.
  std::string to_string(size_t max_elems = 8) const;

  // Same type and same bits (floats compare bitwise, so NaN == NaN).
  bool operator==(const GGUFValue& o) const;

 private:
  friend struct GGUFCodec;  // (de)serialization, formats/gguf_codec.h
  [[noreturn]] void mismatch(std::string_view ctx, std::string_view wanted) const;
  uint64_t elem_bits(uint64_t i) const;  // raw bits of element i of a fixed-size array

  GGUFType type_ = GGUFType::U8;
  GGUFType elem_ = GGUFType::U8;  // arrays: element type
  uint64_t bits_ = 0;             // fixed-size scalars: the value's bytes, zero-extended
  uint64_t count_ = 0;            // arrays: element count
  std::string str_;               // STRING
  std::vector<uint8_t> raw_;      // fixed-size-element arrays: packed elements
  std::vector<std::string> strs_;  // string arrays
};

struct GGUFKV {
  std::string key;
  GGUFValue value;
};

struct GGUFTensorInfo {
  std::string name;
  GGMLType type = GGMLType::F32;
  std::vector<int64_t> ne;  // ggml order, ne[0] = row length; 1..4 dims
  uint64_t offset = 0;      // relative to the data section; a multiple of the alignment
  uint64_t nbytes = 0;      // bytes of data (without padding)

  size_t n_dims() const { return ne.size(); }
  Shape shape() const;  // PyTorch order: ne reversed
  int64_t numel() const;
};

// A tensor's bytes in any ggml type (quantized ones included), zero-copy.
struct GGUFRawTensor {
  const GGUFTensorInfo* info = nullptr;
  GGMLType type = GGMLType::F32;
  std::span<const uint8_t> bytes;
  std::shared_ptr<const void> owner;  // keeps the mapping alive (null for parse_buffer)
};

class GGUFFile {
 public:
  // Maps `path` and parses it.
  static std::shared_ptr<GGUFFile> open(const std::string& path);
  // Parses a mapped file (kept alive by the result and by the tensor views it returns).
  static std::shared_ptr<GGUFFile> parse(std::shared_ptr<MappedFile> file);
  // Parses `size` bytes at `data` (the whole file), naming `name_for_errors` in messages. The
  // buffer is not copied and must outlive the result and its tensor views. Safe on any input:
  // throws moetool::Error, never crashes, never allocates more than a small multiple of `size`.
  static std::shared_ptr<GGUFFile> parse_buffer(const uint8_t* data, size_t size,
                                                const std::string& name_for_errors);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute offset of the data section
  uint64_t header_size() const { return header_size_; }  // bytes before the alignment padding
  uint64_t file_size() const { return size_; }

  // Metadata, in file order.
  const std::vector<GGUFKV>& metadata() const { return kvs_; }
  bool has(const std::string& key) const { return find(key) != nullptr; }
  const GGUFValue* find(const std::string& key) const;  // nullptr if absent
  const GGUFValue& get(const std::string& key) const;   // throws "<file>: missing key '<key>'"
  // "<file>: key '<key>'", the context the typed getters pass to GGUFValue.
  std::string key_context(std::string_view key) const;
  // Typed getters: throw if the key is absent or has an incompatible type (see GGUFValue).
  uint64_t get_u64(const std::string& key) const;
  int64_t get_i64(const std::string& key) const;
  uint32_t get_u32(const std::string& key) const;
  int32_t get_i32(const std::string& key) const;
  double get_f64(const std::string& key) const;
  float get_f32(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_string_array(const std::string& key) const;
  // Same, with a default when the key is absent (a present key of the wrong type still throws).
  uint64_t get_u64_or(const std::string& key, uint64_t def) const;
  int64_t get_i64_or(const std::string& key, int64_t def) const;
  double get_f64_or(const std::string& key, double def) const;
  bool get_bool_or(const std::string& key, bool def) const;
  std::string get_string_or(const std::string& key, const std::string& def) const;

  // Tensor infos, in file order.
  const std::vector<GGUFTensorInfo>& tensors() const { return tensors_; }
  bool has_tensor(const std::string& name) const { return find_tensor(name) != nullptr; }
  const GGUFTensorInfo* find_tensor(const std::string& name) const;  // nullptr if absent
  const GGUFTensorInfo& tensor_info(const std::string& name) const;   // throws if absent

  // Zero-copy view (PyTorch-order shape) of an F32/F16/BF16/F64/I8/I16/I32/I64 tensor; throws for a
  // quantized type (use raw_tensor) or an absent name. The view is read-only memory.
  Tensor tensor(const std::string& name) const;
  Tensor tensor(const GGUFTensorInfo& info) const;
  // Bytes of any tensor, with its ggml type.
  GGUFRawTensor raw_tensor(const std::string& name) const;
  GGUFRawTensor raw_tensor(const GGUFTensorInfo& info) const;

 private:
  GGUFFile() = default;
  static std::shared_ptr<GGUFFile> parse_impl(const uint8_t* data, size_t size, std::string name,
                                              std::shared_ptr<const void> owner);

  std::string path_;
  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGGUFDefaultAlignment;
  uint64_t header_size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<GGUFKV> kvs_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GGUFTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// Writes a GGUF v3 file in three steps: add() metadata and add_tensor_info() tensors (in the
// order they will appear); write_tensor_data() each tensor's bytes in that order (the header is
// written before the first data; a tensor's bytes may come in several consecutive calls, so a
// whole model never needs to be in memory); finish(). The file is written under
// "<path>.tmp-<pid>" and renamed to `path` only by finish(); destroying an unfinished writer removes
// the temporary. The layout is llama.cpp's: tensors contiguous in declared order, each padded with
// zero bytes to the alignment (the last one too). Alignment is 32 unless "general.alignment" (u32,
// a power of two) is added.
class GGUFWriter {
 public:
  explicit GGUFWriter(std::string path);
  ~GGUFWriter();
  GGUFWriter(const GGUFWriter&) = delete;
  GGUFWriter& operator=(const GGUFWriter&) = delete;

  // Adds a key/value (insertion order is file order). Throws on a duplicate key, a nested array,
  // an invalid "general.alignment", or once tensor data has been written.
  void add(const std::string& key, GGUFValue value);
  void add_string(const std::string& key, std::string v) { add(key, GGUFValue::string(std::move(v))); }
  void add_u32(const std::string& key, uint32_t v) { add(key, GGUFValue::u32(v)); }
  void add_i32(const std::string& key, int32_t v) { add(key, GGUFValue::i32(v)); }
  void add_u64(const std::string& key, uint64_t v) { add(key, GGUFValue::u64(v)); }
  void add_f32(const std::string& key, float v) { add(key, GGUFValue::f32(v)); }
  void add_bool(const std::string& key, bool v) { add(key, GGUFValue::boolean(v)); }
  void add_string_array(const std::string& key, std::vector<std::string> v) {
    add(key, GGUFValue::string_array(std::move(v)));
  }

  // Declares a tensor: ggml type and ggml-order dims (ne[0] = row length, 1..4 dims). Throws on a
  // duplicate or too long (>= 64 bytes) name, a row length not a multiple of the block size, or
  // once tensor data has been written. Returns its byte size.
  uint64_t add_tensor_info(const std::string& name, GGMLType type, std::vector<int64_t> ne);
  // Same, from a PyTorch-order shape (reversed into ne) and a plain dtype.
  uint64_t add_tensor_info(const std::string& name, DType dtype, const Shape& shape);

  // Appends `size` bytes of tensor `name`, which must be the tensor currently being written (the
  // next in declared order); when its bytes are complete the padding follows. Throws naming the
  // file and tensor on an out-of-order name or too many bytes.
  void write_tensor_data(const std::string& name, const void* data, size_t size);
  // Writes a whole tensor whose dtype and shape match its declaration.
  void write_tensor(const std::string& name, const Tensor& t);

  // Writes the header if not yet written, checks every tensor is complete, flushes, closes and
  // renames the file into place.
  void finish();

  const std::string& path() const;
  uint32_t alignment() const;
  // Declared tensors, with their offsets in the data section.
  const std::vector<GGUFTensorInfo>& tensor_infos() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetool
