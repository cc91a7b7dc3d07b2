// formats/checkpoint.h — a Hugging Face checkpoint on disk: a directory with config.json and
// model.safetensors, or sharded files listed by model.safetensors.index.json, or a single
// .safetensors file. Tensors are memory-mapped views; aliases stored in __metadata__ (tied
// embeddings saved once, as the shared TinyStories checkpoint does) resolve to their target.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/safetensors.h"

namespace moetool {

// Parses the text of a model.safetensors.index.json into its weight_map (tensor -> file name),
// rejecting non-objects, non-string entries and file names outside the directory. `order`
// receives the distinct file names, sorted.
std::map<std::string, std::string> parse_safetensors_index(const std::string& text, const std::string& path,
                                                           std::vector<std::string>* order = nullptr);

class Checkpoint {
 public:
  // Opens `path` (a directory or a .safetensors file). Validates every shard's header and the
  // index (a weight_map entry naming a missing file or a tensor absent from its file is an error;
  // so is one tensor in two files). Throws moetool::Error naming the file and tensor.
  static Checkpoint open(const std::string& path);

  const std::string& dir() const;              // directory holding the checkpoint
  bool has_config() const;
  const nlohmann::json& config_json() const;   // throws if there is no config.json
  std::string config_path() const;

  // Tensor names stored in the files, in file order (shard by shard, by offset).
  const std::vector<std::string>& names() const;
  bool has(const std::string& name) const;     // stored or an alias
  bool is_alias(const std::string& name) const;
  const std::map<std::string, std::string>& aliases() const;  // alias -> stored name
  const TensorInfo& info(const std::string& name) const;       // resolves aliases; throws if absent
  Tensor get(const std::string& name) const;                  // zero-copy view; resolves aliases
  std::string file_of(const std::string& name) const;          // path of the file holding it
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const;
  uint64_t total_bytes() const;                                // sum of tensor data bytes

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace moetool
