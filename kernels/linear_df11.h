// kernels/linear_df11.h — a weight matrix W [rows = out, cols = in] stored DF11-coded (formats/df11.h:
// Huffman-coded BF16 exponents, raw sign and mantissa), used in place: the CPU decodes it to BF16 the
// first time it is multiplied (once per matrix, all cores) and then multiplies as a BF16 matrix;
// packed() hands the coded tensors to a backend that decodes them itself (the CUDA engine decodes on
// the GPU, so only the coded bytes cross).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kernels/linear.h"

namespace moetool {

// `pw` (kind Df11) views the coded tensors, kept alive by `owner` (e.g. a memory-mapped safetensors
// file). Throws naming `name` when the block offsets do not fit rows · cols values or the code lengths
// are no prefix code; a corrupt block is an error naming `name` and the block when it is decoded.
// storage() = "DF11", stored_bytes() = the coded tensors' bytes.
std::shared_ptr<const WeightMatrix> make_df11_matrix(int64_t rows, int64_t cols, const PackedWeight& pw,
                                                     std::shared_ptr<const void> owner, const std::string& name);

}  // namespace moetool
