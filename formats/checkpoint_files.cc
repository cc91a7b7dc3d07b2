// formats/checkpoint_files.cc — tokenizer file list and page advice (see checkpoint_files.h).
#include "formats/checkpoint_files.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "core/fs.h"

namespace moetool {

std::vector<std::string> tokenizer_files(const std::string& dir) {
  std::vector<std::string> out;
  if (!is_directory(dir)) return out;
  static const std::set<std::string> known = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                              "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                                              "generation_config.json", "chat_template.json", "chat_template.jinja"};
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string n = e.path().filename().string();
    if (known.count(n)) out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {
// The file of `ck` whose mapped data buffer holds all of view `t`, and t's offset in that buffer;
// null when none does. The data buffer runs from data_start() to the end of the file (validated).
const SafetensorsFile* file_of_view(const Checkpoint& ck, const Tensor& t, uint64_t* offset) {
  if (!t.data || t.nbytes() == 0) return nullptr;
  for (const auto& f : ck.files()) {
    if (f->tensors().empty()) continue;
    const TensorInfo& first = f->tensors().front();
    const uint8_t* base = f->get(first).data - first.begin;
    if (t.data < base || t.data + t.nbytes() > base + (f->file_size() - f->data_start())) continue;
    *offset = static_cast<uint64_t>(t.data - base);
    return f.get();
  }
  return nullptr;
}

// madvise(advice) on the pages of `t` when it is a view into one of `ck`'s mapped files.
void advise(const Checkpoint& ck, const Tensor& t, int advice) {
  uint64_t off;
  if (!file_of_view(ck, t, &off)) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = reinterpret_cast<uintptr_t>(t.data) / page * page;
  const uintptr_t e = reinterpret_cast<uintptr_t>(t.data + t.nbytes());
  ::madvise(reinterpret_cast<void*>(b), e - b, advice);  // advisory: failure only costs time or memory
}
}  // namespace

bool read_view(const Checkpoint& ck, const Tensor& t, void* dst) {
  uint64_t off;
  const SafetensorsFile* f = file_of_view(ck, t, &off);
  if (!f) return false;
  read_file_range(f->path(), f->data_start() + off, t.nbytes(), dst);
  return true;
}

void release_pages(const Checkpoint& ck, const Tensor& t) { advise(ck, t, MADV_DONTNEED); }
void prefetch_pages(const Checkpoint& ck, const Tensor& t) { advise(ck, t, MADV_WILLNEED); }

uint64_t tensor_file_bytes(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return std::filesystem::exists(path, ec) ? std::filesystem::file_size(path, ec) : 0;
  uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(path, ec))
    if (e.is_regular_file() && (e.path().extension() == ".safetensors" || e.path().extension() == ".gguf"))
      n += e.file_size(ec);
  return n;
}

}  // namespace moetool
