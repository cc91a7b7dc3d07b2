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
// Copies the bytes of a memory-mapped tensor view of `ck` into `dst` (t.nbytes() of them) with
// pread, without touching the mapping: for a pass that reads a large checkpoint once, faulting the
// mapping in page by page costs more system time than copying from the page cache (a 4 GB F32
// checkpoint: ~1.8 s). False, copying nothing, when `t` is not a view into ck's files (an owned,
// converted or dequantized tensor). Throws naming the file on a read error.
bool read_view(const Checkpoint& ck, const Tensor& t, void* dst);
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
