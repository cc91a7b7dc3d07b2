// formats/safetensors.h — the safetensors format: a validating, memory-mapped, zero-copy reader
// (opening a file reads only its header) and a streaming, sharding writer that never holds the
// model in memory and never leaves a file that looks complete when a run is interrupted.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/tensor.h"

namespace moetool {

// One tensor entry of a safetensors header.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data buffer
};

// A parsed, validated header.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;               // in data-offset order
  std::map<std::string, std::string> metadata;  // "__metadata__"
  uint64_t data_start = 0;                       // 8 + header length
};

// Parses and validates the header of a safetensors file held in memory (`size` bytes, the whole
// file), with the reference implementation's rules: header length within the file and at most
// 100 MB; valid UTF-8 JSON object; known dtypes; offsets contiguous from 0, no gap or overlap;
// end − begin = element count × element size; buffer ends at the end of the file; no duplicate
// names. Throws moetool::Error naming `path` (and the tensor) on violation.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& path);

class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return map_->path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(const std::string& name) const;  // nullptr if absent
  // Zero-copy view of a tensor's bytes; throws naming the file and tensor if absent.
  Tensor get(const std::string& name) const;
  Tensor get(const TensorInfo& info) const;
  uint64_t file_size() const { return map_->size(); }
  uint64_t data_start() const { return header_.data_start; }  // file offset of the data buffer

 private:
  std::shared_ptr<MappedFile> map_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

// A planned tensor of an output checkpoint.
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};

// Writes a checkpoint's safetensors files into directory `dir`: "model.safetensors", or when the
// data exceeds `max_shard_bytes` (0 = unlimited), "model-0000i-of-0000n.safetensors" plus
// "model.safetensors.index.json". Tensors are assigned to shards in spec order; inside a file they
// are laid out like the reference writer (descending dtype size, then name), so any write order is
// accepted (positional writes). Every shard is written under a temporary name and renamed only by
// finish(), after all tensors were written; destroying an unfinished writer removes the temporaries.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string dir, std::vector<TensorSpec> specs, std::map<std::string, std::string> metadata,
                    uint64_t max_shard_bytes = 0, std::string basename = "model");
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Writes the bytes of tensor `name` (exactly its planned size, in its planned dtype).
  void write(const std::string& name, const void* data, size_t nbytes);
  // Writes a tensor, converting float dtypes to the planned dtype when they differ. Shape must match.
  void write(const std::string& name, const Tensor& t);
  // Writes bytes [byte_offset, byte_offset + nbytes) of tensor `name`, for producers that stream a
  // tensor in pieces. Every byte of every tensor must be written exactly once before finish().
  void write_chunk(const std::string& name, uint64_t byte_offset, const void* data, size_t nbytes);
  // Checks every tensor was written, renames temporaries into place, writes the index when sharded.
  // Returns the file names written (relative to dir).
  std::vector<std::string> finish();
  size_t num_shards() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moetool
