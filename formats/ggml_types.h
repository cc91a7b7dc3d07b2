// formats/ggml_types.h — the ggml tensor types that GGUF files store (ids, names, block layout as
// ggml defines them: elements per block and bytes per block) and the byte sizes of rows and
// tensors, which reject a row length that is not a multiple of the type's block size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"

namespace moetool {

// ggml's `enum ggml_type`. Ids 4, 5 (Q4_2, Q4_3), 31–33 (Q4_0_4_4 …) and 36–38 (IQ4_NL_4_4 …) were
// removed from ggml and are not valid in GGUF files.
enum class GGMLType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

// One row of ggml's type_traits table.
struct GGMLTypeTraits {
  GGMLType type;
  const char* name;    // ggml's spelling: "F32", "Q4_K", "IQ2_XXS", ...
  int64_t block_size;  // elements per block (1 for plain types)
  size_t type_size;    // bytes per block
  bool quantized;      // block-quantized (everything except F32/F16/BF16/F64/I8/I16/I32/I64)
};

// All known types, in id order.
const std::vector<GGMLTypeTraits>& ggml_type_table();
// Traits of a raw id from a file; nullptr for unknown or removed ids.
const GGMLTypeTraits* ggml_type_traits_or_null(uint32_t id);
// Traits of a known type (throws moetool::Error for an out-of-range enum value).
const GGMLTypeTraits& ggml_type_traits(GGMLType t);
bool is_valid_ggml_type(uint32_t id);

const char* ggml_type_name(GGMLType t);
// Inverse of ggml_type_name, case-insensitive ("q4_k" -> Q4_K).
std::optional<GGMLType> parse_ggml_type(std::string_view name);
int64_t ggml_block_size(GGMLType t);
size_t ggml_type_size(GGMLType t);
bool ggml_is_quantized(GGMLType t);

// Bytes of one row of `ne0` elements. Throws moetool::Error (prefixed with `what` when given) if
// ne0 is negative or not a multiple of the block size.
size_t ggml_row_size(GGMLType t, int64_t ne0, std::string_view what = {});
// Bytes of a tensor with ggml dims `ne` (ne[0] = row length, the fastest dimension). Throws
// moetool::Error (prefixed with `what`) on a negative dim, a row length that is not a multiple of
// the block size, or a size that overflows 63 bits.
size_t ggml_nbytes(GGMLType t, const std::vector<int64_t>& ne, std::string_view what = {});

// The moetool dtype with the same element layout (F32, F16, BF16, F64, I8, I16, I32, I64);
// nullopt for quantized types.
std::optional<DType> ggml_type_to_dtype(GGMLType t);
// The ggml type of a moetool dtype; nullopt where ggml has none (BOOL, U8, U16, U32, U64, F8_*).
std::optional<GGMLType> dtype_to_ggml_type(DType d);

}  // namespace moetool
