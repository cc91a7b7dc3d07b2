// formats/ggml_types.cc — ggml's tensor type table (block sizes and bytes per block as in ggml.c
// type_traits / gguf-py GGML_QUANT_SIZES) and row / tensor byte sizes.
#include "formats/ggml_types.h"

#include <array>
#include <cctype>
#include <limits>

#include "core/error.h"

namespace moetool {

namespace {

constexpr int64_t QK_K = 256;

// Highest id + 1.
constexpr uint32_t kTypeIdLimit = 40;

const std::vector<GGMLTypeTraits>& table() {
  static const std::vector<GGMLTypeTraits> t = {
      {GGMLType::F32, "F32", 1, 4, false},
      {GGMLType::F16, "F16", 1, 2, false},
      {GGMLType::Q4_0, "Q4_0", 32, 2 + 16, true},
      {GGMLType::Q4_1, "Q4_1", 32, 2 + 2 + 16, true},
      {GGMLType::Q5_0, "Q5_0", 32, 2 + 4 + 16, true},
      {GGMLType::Q5_1, "Q5_1", 32, 2 + 2 + 4 + 16, true},
      {GGMLType::Q8_0, "Q8_0", 32, 2 + 32, true},
      {GGMLType::Q8_1, "Q8_1", 32, 2 + 2 + 32, true},
      {GGMLType::Q2_K, "Q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, true},
      {GGMLType::Q3_K, "Q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, true},
      {GGMLType::Q4_K, "Q4_K", QK_K, 2 + 2 + QK_K / 2 + 12, true},
      {GGMLType::Q5_K, "Q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12, true},
      {GGMLType::Q6_K, "Q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16, true},
      {GGMLType::Q8_K, "Q8_K", QK_K, 4 + QK_K + QK_K / 8, true},
      {GGMLType::IQ2_XXS, "IQ2_XXS", QK_K, 2 + QK_K / 4, true},
      {GGMLType::IQ2_XS, "IQ2_XS", QK_K, 2 + QK_K / 4 + QK_K / 32, true},
      {GGMLType::IQ3_XXS, "IQ3_XXS", QK_K, 2 + QK_K / 4 + QK_K / 8, true},
      {GGMLType::IQ1_S, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16, true},
      {GGMLType::IQ4_NL, "IQ4_NL", 32, 2 + 16, true},
      {GGMLType::IQ3_S, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, true},
      {GGMLType::IQ2_S, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 16, true},
      {GGMLType::IQ4_XS, "IQ4_XS", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, true},
      {GGMLType::I8, "I8", 1, 1, false},
      {GGMLType::I16, "I16", 1, 2, false},
      {GGMLType::I32, "I32", 1, 4, false},
      {GGMLType::I64, "I64", 1, 8, false},
      {GGMLType::F64, "F64", 1, 8, false},
      {GGMLType::IQ1_M, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, true},
      {GGMLType::BF16, "BF16", 1, 2, false},
      {GGMLType::TQ1_0, "TQ1_0", QK_K, 2 + 4 * 13, true},
      {GGMLType::TQ2_0, "TQ2_0", QK_K, 2 + 64, true},
      {GGMLType::MXFP4, "MXFP4", 32, 1 + 16, true},
  };
  return t;
}

// id -> index into table(), or -1.
const std::array<int, kTypeIdLimit>& index_by_id() {
  static const std::array<int, kTypeIdLimit> idx = [] {
    std::array<int, kTypeIdLimit> a{};
    a.fill(-1);
    const auto& t = table();
    for (size_t i = 0; i < t.size(); ++i) a[static_cast<uint32_t>(t[i].type)] = static_cast<int>(i);
    return a;
  }();
  return idx;
}

std::string dims_str(const std::vector<int64_t>& ne) {
  std::string s = "ne=[";
  for (size_t i = 0; i < ne.size(); ++i) s += str(i ? ", " : "", ne[i]);
  return s + "]";
}

std::string prefix(std::string_view what) { return what.empty() ? std::string() : str(what, ": "); }

}  // namespace

const std::vector<GGMLTypeTraits>& ggml_type_table() { return table(); }

const GGMLTypeTraits* ggml_type_traits_or_null(uint32_t id) {
  if (id >= kTypeIdLimit) return nullptr;
  const int i = index_by_id()[id];
  return i < 0 ? nullptr : &table()[static_cast<size_t>(i)];
}

const GGMLTypeTraits& ggml_type_traits(GGMLType t) {
  const GGMLTypeTraits* tr = ggml_type_traits_or_null(static_cast<uint32_t>(t));
  if (!tr) fail("unknown ggml type id ", static_cast<uint32_t>(t));
  return *tr;
}

bool is_valid_ggml_type(uint32_t id) { return ggml_type_traits_or_null(id) != nullptr; }

const char* ggml_type_name(GGMLType t) { return ggml_type_traits(t).name; }

std::optional<GGMLType> parse_ggml_type(std::string_view name) {
  for (const auto& tr : table()) {
    std::string_view n = tr.name;
    if (n.size() != name.size()) continue;
    bool eq = true;
    for (size_t i = 0; i < n.size() && eq; ++i)
      eq = std::toupper(static_cast<unsigned char>(name[i])) == static_cast<unsigned char>(n[i]);
    if (eq) return tr.type;
  }
  return std::nullopt;
}

int64_t ggml_block_size(GGMLType t) { return ggml_type_traits(t).block_size; }
size_t ggml_type_size(GGMLType t) { return ggml_type_traits(t).type_size; }
bool ggml_is_quantized(GGMLType t) { return ggml_type_traits(t).quantized; }

size_t ggml_row_size(GGMLType t, int64_t ne0, std::string_view what) {
  const GGMLTypeTraits& tr = ggml_type_traits(t);
  if (ne0 < 0) fail(prefix(what), "row length must be non-negative, found ", ne0);
  if (ne0 % tr.block_size != 0)
    fail(prefix(what), "row length ", ne0, " is not a multiple of the ", tr.name, " block size ", tr.block_size);
  const uint64_t blocks = static_cast<uint64_t>(ne0 / tr.block_size);
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  if (blocks > kMax / tr.type_size) fail(prefix(what), "row of ", ne0, " ", tr.name, " elements overflows 63 bits");
  return static_cast<size_t>(blocks * tr.type_size);
}

size_t ggml_nbytes(GGMLType t, const std::vector<int64_t>& ne, std::string_view what) {
  if (ne.empty()) return ggml_row_size(t, 1, what);  // a scalar: one element
  for (int64_t d : ne)
    if (d < 0) fail(prefix(what), "dimension must be non-negative, found ", d);
  uint64_t bytes = ggml_row_size(t, ne[0], what);
  constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  // The product of the non-zero dims must fit too, so absurd dims are rejected even when another
  // dim is 0 (an empty tensor).
  uint64_t nonzero = 1;
  for (int64_t d : ne) {
    const uint64_t u = static_cast<uint64_t>(d);
    if (u == 0) continue;
    if (nonzero > kMax / u) fail(prefix(what), "element count of dims ", dims_str(ne), " overflows 63 bits");
    nonzero *= u;
  }
  for (size_t i = 1; i < ne.size(); ++i) {
    const uint64_t d = static_cast<uint64_t>(ne[i]);
    if (d != 0 && bytes > kMax / d) fail(prefix(what), "byte size of dims ", dims_str(ne), " overflows 63 bits");
    bytes *= d;
  }
  return static_cast<size_t>(bytes);
}

std::optional<DType> ggml_type_to_dtype(GGMLType t) {
  switch (t) {
    case GGMLType::F32: return DType::F32;
    case GGMLType::F16: return DType::F16;
    case GGMLType::BF16: return DType::BF16;
    case GGMLType::F64: return DType::F64;
    case GGMLType::I8: return DType::I8;
    case GGMLType::I16: return DType::I16;
    case GGMLType::I32: return DType::I32;
    case GGMLType::I64: return DType::I64;
    default: return std::nullopt;
  }
}

std::optional<GGMLType> dtype_to_ggml_type(DType d) {
  switch (d) {
    case DType::F32: return GGMLType::F32;
    case DType::F16: return GGMLType::F16;
    case DType::BF16: return GGMLType::BF16;
    case DType::F64: return GGMLType::F64;
    case DType::I8: return GGMLType::I8;
    case DType::I16: return GGMLType::I16;
    case DType::I32: return GGMLType::I32;
    case DType::I64: return GGMLType::I64;
    default: return std::nullopt;
  }
}

}  // namespace moetool
