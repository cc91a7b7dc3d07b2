// kernels/linear_quant.h — a weight matrix stored as ggml blocks (Q8_0, Q4_0, Q4_K, ..., and the
// F16/BF16 plain types): rows × (cols / block size) blocks, row-major, exactly the bytes of a GGUF
// tensor. Multiplication in QuantDot::Int8 mode (kernels/quant_dot.h) multiplies int8 activations by the
// levels with integer dot products; in Float mode it dequantizes tiles of rows to float32 and hands them to
// ops::gemm_nt (or, for a few tokens, dots each dequantized row directly). Memory stays a tile, never the
// matrix.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "formats/ggml_types.h"
#include "kernels/linear.h"

namespace moetool {

// W [rows, cols] as `rows` rows of ggml type `type` at `bytes` (rows · ggml_row_size(type, cols)
// bytes; a view, kept alive by `owner`, e.g. a memory-mapped GGUF file, or owned by it). Throws
// moetool::Error naming `name` on a size mismatch, a row length that is not a multiple of the block
// size or a type that cannot be dequantized. storage() is the ggml type name ("Q4_K"),
// stored_bytes() the block bytes.
std::shared_ptr<const WeightMatrix> make_quant_matrix(GGMLType type, int64_t rows, int64_t cols,
                                                      std::span<const uint8_t> bytes,
                                                      std::shared_ptr<const void> owner, const std::string& name);

// Quantizes a dense float32 matrix W [rows, cols] (row-major) into an owned quantized matrix.
std::shared_ptr<const WeightMatrix> quantize_matrix(GGMLType type, const float* W, int64_t rows, int64_t cols,
                                                    const std::string& name);

}  // namespace moetool
