// formats/checkpoint_files.h — what travels with a checkpoint besides its tensors (tokenizer and
// generation files), and page advice for memory-mapped tensor views, so a pass that reads a
// checkpoint once keeps its resident memory at about one layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "formats/checkpoint.h"

namespace moetool {

// Drops the process's resident pages of a memory-mapped tensor view (they stay in the page cache),
// so reading a checkpoint once keeps resident memory at about one layer. Only views into `ck`'s files
// are touched; anything else (an owned tensor) is left alone.
void release_pages(const Checkpoint& ck, const Tensor& t);
// Asks the kernel to start reading a memory-mapped tensor view ahead of its use (MADV_WILLNEED),
// so the next layer's weights load while this one is written. Same rules as release_pages.
void prefetch_pages(const Checkpoint& ck, const Tensor& t);

// The files beside a checkpoint that describe its tokenizer and generation defaults (copied to
// converted outputs): tokenizer.json, tokenizer_config.json, special_tokens_map.json, ...
std::vector<std::string> tokenizer_files(const std::string& dir);

// Bytes of a model's tensor files on disk: a file's size (.gguf, .safetensors), or the sum of the
// .safetensors and .gguf files directly in a directory; 0 when the path does not exist.
uint64_t tensor_file_bytes(const std::string& path);

}  // namespace moetool
