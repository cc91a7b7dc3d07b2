// kernels/linear_gptq.h — a weight matrix W [rows = out, cols = in] stored as the tensors of a GPTQ
// v1 checkpoint linear (formats/gptq_pack.h: qweight, qzeros, f16 scales, g_idx; 2..8 bits, any
// group size, act-order g_idx), used in place. Multiplication dequantizes tiles of output rows to
// float32 — transposed, W_tileᵀ [cols, m], because qweight is packed along the input dim with the
// output dim contiguous — and multiplies each tile with a GEMM (threads take whole tiles: dequantize
// and Eigen's single-threaded GEMM, so no OpenMP region alternates with multi-threaded BLAS); for a
// few tokens it dequantizes blocks of outputs and accumulates the dot products directly in double
// (the pattern of kernels/linear_quant.cc). In QuantDot::Int8 mode, int2..6 matrices whose groups hold
// whole 32-input blocks take the integer dot path instead (kernels/quant_dot.h).
// Dequantized values are bit-identical to int_dequantize(gptq_unpack(...)).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "formats/int_codec.h"
#include "kernels/linear.h"

namespace moetool {

// A WeightMatrix over GPTQ tensors (views kept alive by `owner`, e.g. a memory-mapped safetensors
// file): qweight int32 [cols·bits/32, rows], qzeros int32 [ngroups, rows·bits/32], scales f16 bits
// [ngroups, rows], g_idx int32 [cols]. storage() = "GPTQ int4 g128" (group size cols / ngroups; with
// " act-order" appended when g_idx is not j / group size), stored_bytes() = the tensors' bytes.
// Throws naming `name` on inconsistent shapes, out-of-range g_idx or a non-finite scale.
std::shared_ptr<const WeightMatrix> make_gptq_matrix(int bits, int64_t rows, int64_t cols, int64_t ngroups,
                                                     const int32_t* qweight, const int32_t* qzeros,
                                                     const uint16_t* scales, const int32_t* g_idx,
                                                     std::shared_ptr<const void> owner, const std::string& name);
// An owned copy (packed with gptq_pack).
std::shared_ptr<const WeightMatrix> make_gptq_matrix(const IntQuantized& q, const std::string& name);

}  // namespace moetool
