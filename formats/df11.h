// formats/df11.h — lossless entropy-coded BF16 (DFloat11's idea, moetool's own layout: the `dfloat11`
// package's GPU-thread layout is not reproduced). A BF16 value is sign | 8-bit exponent | 7-bit
// mantissa; in trained weights the exponent carries ~2.6 bits of information, so it is Huffman-coded
// (canonical codes, at most 16 bits) while sign and mantissa stay raw, one byte per value: ~11 bits a
// weight, bit-exact. The elements are coded in blocks of `block` values, each block's code starting on
// a byte boundary, so blocks decode independently (all cores, or GPU thread blocks).
//
// A tensor "<name>" [shape] of a checkpoint is stored as six tensors
//   <name>.df11_lengths  U8  [256]        code length of each exponent value (0: absent)
//   <name>.df11_offsets  I64 [nblocks+1]  byte offset of each block's code in df11_exp (last: its size)
//   <name>.df11_exp      U8  [bytes]      the blocks' codes, MSB-first within each byte
//   <name>.df11_sm       U8  [n]          sign << 7 | mantissa of every value
//   <name>.df11_shape    I64 [rank]       the tensor's shape
//   <name>.df11_hash     I64 [nblocks]    df11_block_hash of each block's BF16 values (a Huffman stream decodes
//                                         any bits; the hash is what rejects a corrupt one)
// and config.json carries "moetool_df11": {"format": "moetool.df11/1", "block": B} (docs/quantize.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/tensor.h"
#include "formats/checkpoint.h"
#include "formats/df11_block.h"

namespace moetool {

inline constexpr int kDf11MaxCodeBits = df11::kMaxCodeBits;

struct DF11Encoded {
  std::vector<uint8_t> lengths;   // [256]
  std::vector<int64_t> offsets;   // [nblocks + 1]
  std::vector<uint8_t> exp;       // coded exponents
  std::vector<uint8_t> sm;        // [n]
  std::vector<uint64_t> hash;     // [nblocks]
  int64_t n = 0, block = 0;
  uint64_t bytes() const { return lengths.size() + offsets.size() * 8 + exp.size() + sm.size() + hash.size() * 8; }
};

// Encodes n BF16 values (raw bits). Parallel over blocks.
DF11Encoded df11_encode(const uint16_t* bf16, int64_t n, int64_t block = 65536);
// The size df11_encode would give exp for these values, without coding them (a counting pass): what
// a writer plans before it streams.
int64_t df11_exp_bytes(const uint16_t* bf16, int64_t n, int64_t block);
// Decodes into out[n]; throws naming `what` on a corrupt stream (code lengths that are no prefix
// code or exceed 16 bits, offsets out of order or beyond the data, a code that is not in the table,
// a block that reads past its bytes or leaves more than padding, a block whose values do not hash
// to `hash`, when given). Parallel over blocks.
void df11_decode(const uint8_t* lengths, const int64_t* offsets, int64_t nblocks, const uint8_t* exp,
                 int64_t exp_bytes, const uint8_t* sm, int64_t n, int64_t block, uint16_t* out,
                 const std::string& what, const uint64_t* hash = nullptr);
// A 64-bit hash of n BF16 values (df11::block_hash).
inline uint64_t df11_block_hash(const uint16_t* v, int64_t n) { return df11::block_hash(v, n); }
// The decode table of df11::decode_block (2^16 entries) for the code lengths; throws naming `what`
// when they exceed 16 bits or are no prefix code.
std::vector<uint16_t> df11_decode_table(const uint8_t* lengths, const std::string& what);
// Throws naming `what` unless there are ceil(n / block) blocks whose offsets rise from 0 to exp_bytes.
void df11_check_blocks(const int64_t* offsets, int64_t nblocks, int64_t exp_bytes, int64_t n, int64_t block,
                       const std::string& what);
// The error for a block df11::decode_block or its hash rejected.
[[noreturn]] void df11_block_error(const std::string& what, int64_t block_index);

// config.json's "moetool_df11" block: its block size, or nullopt when absent. Throws naming `what`
// on another format string or a bad block size.
std::optional<int64_t> df11_block_of(const nlohmann::json& raw_config, const std::string& what);
nlohmann::ordered_json df11_config_json(int64_t block);

// The six tensor names of "<name>".
std::vector<std::string> df11_tensor_names(const std::string& name);
// Whether `ck` stores `name` DF11-coded.
bool df11_stored(const Checkpoint& ck, const std::string& name);
// The decoded BF16 tensor (owned); throws naming the checkpoint and tensor on inconsistent tensors.
Tensor df11_read(const Checkpoint& ck, const std::string& name, int64_t block);
// Checks the six tensors' dtypes and shapes against each other without decoding (what
// Model::check reports); returns the stored shape.
Shape df11_check(const Checkpoint& ck, const std::string& name, int64_t block);

}  // namespace moetool
