// core/dtype.h — the element types of safetensors (and GGUF's float types), their sizes and names,
// and conversions between the float types: f32 <-> f16 <-> bf16 with round-to-nearest-even,
// f64 <-> f32, f8 (E4M3FN, E5M2) read, f32 -> E4M3FN (saturating, for FP8 weight quantization).
// NaN and Inf are preserved by every conversion into a type that has them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace moetool {

enum class DType : uint8_t {
  BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64,
};

inline constexpr int kNumDTypes = 15;

size_t dtype_size(DType t);               // bytes per element
const char* dtype_name(DType t);          // safetensors spelling: "F32", "BF16", ...
std::optional<DType> parse_dtype(std::string_view s);  // inverse of dtype_name
bool is_float(DType t);                   // F8_*, F16, BF16, F32, F64
// Parses a user-facing spelling ("f32", "float16", "bf16", "F16", ...) of a writable float type;
// throws moetool::Error naming `what` otherwise.
DType parse_float_dtype_option(std::string_view s, std::string_view what);

// Scalar conversions.
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);  // round to nearest even; overflow -> Inf; NaN stays NaN
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);  // round to nearest even; NaN stays NaN (quiet)
float f8e4m3_to_f32(uint8_t v);  // E4M3FN: no Inf, S.1111.111 is NaN
float f8e5m2_to_f32(uint8_t v);  // E5M2: IEEE-like, has Inf and NaN
// Round to nearest even (subnormals included); |f| beyond the largest finite value 448 (Inf too)
// saturates to ±448, as FP8 weight quantizers clamp before casting; NaN -> S.1111.111.
uint8_t f32_to_f8e4m3(float f);

// Converts n elements between float dtypes (F8 only as a source). Throws for non-float types,
// except identical src/dst types, which copy.
void convert(DType from, const void* src, DType to, void* dst, size_t n);
// Shorthand: any float dtype -> f32.
void to_f32(DType from, const void* src, float* dst, size_t n);

}  // namespace moetool
