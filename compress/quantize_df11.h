// compress/quantize_df11.h — a checkpoint written as its BF16 model, every tensor of two or more
// dimensions DF11-coded (formats/df11.h: Huffman-coded exponents, raw sign and mantissa; bit-exact,
// ~70 % of the BF16 bytes), or (coded = false) as the plain BF16 checkpoint, the reference DF11 is
// lossless against. A float32 source is rounded to BF16 first (round to nearest even), so "lossless"
// is relative to that BF16 model. Two streaming passes over the source: one counts the exponents to
// plan every coded tensor's size, one codes and writes; peak memory is one tensor and its code.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "formats/model.h"

namespace moetool {

struct DF11Options {
  bool coded = true;          // false: plain BF16
  int64_t block = 65536;      // values per independently decodable block
  bool overwrite = false;
  uint64_t max_shard_bytes = 0;
  std::map<std::string, std::string> metadata;
  std::function<void(const std::string&)> progress;  // one line per layer
};

struct DF11TensorRecord {
  std::string name;
  int64_t n = 0;
  uint64_t bf16_bytes = 0, stored_bytes = 0;  // 2n; the five coded tensors
  double exponent_bits = 0;                   // coded exponent bits per value
  double ratio() const { return bf16_bytes ? static_cast<double>(stored_bytes) / static_cast<double>(bf16_bytes) : 0; }
};

struct DF11Report {
  std::string output;
  bool coded = true;
  int64_t block = 0;
  std::vector<DF11TensorRecord> tensors;  // the coded ones
  uint64_t bf16_bytes = 0, bytes = 0;     // the BF16 model's tensor bytes; the output's
  int64_t rounded_from_f32 = 0;           // source tensors that were not BF16
  double seconds = 0;
  double ratio() const { return bf16_bytes ? static_cast<double>(bytes) / static_cast<double>(bf16_bytes) : 0; }
};

// Plans (dry_run: sizes exact, nothing written) or writes `out_dir`. Refuses quantized sources
// (GPTQ, low-rank, FP8, compressed-tensors: DF11 is lossless only for a BF16 model).
DF11Report write_df11(const Model& m, const std::string& out_dir, const DF11Options& o, bool dry_run = false);

}  // namespace moetool
