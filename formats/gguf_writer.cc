// formats/gguf_writer.cc — the streaming GGUF writer (GGUFWriter): metadata and tensor infos first,
// tensor data in declared order under a temporary name, renamed into place by finish() (see gguf.h).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "formats/gguf_codec.h"

namespace moetool {

using gguf_detail::align_up;
using gguf_detail::quote;

// ---------------------------------------------------------------------------------------------
// Writer

struct GGUFWriter::Impl {
  std::string path, tmp;
  int fd = -1;
  bool header_written = false, finished = false;
  uint32_t alignment = kGGUFDefaultAlignment;
  std::vector<GGUFKV> kvs;
  std::unordered_map<std::string, size_t> kv_index;
  std::vector<GGUFTensorInfo> tensors;
  std::unordered_map<std::string, size_t> tensor_index;
  uint64_t data_size = 0;   // planned data-section bytes (padded)
  size_t current = 0;       // index of the tensor being written
  uint64_t current_done = 0;  // its bytes written so far

  static constexpr size_t kBufSize = 8u << 20;
  std::vector<uint8_t> buf;
  size_t buffered = 0;

  ~Impl() {
    if (fd >= 0) ::close(fd);
    if (!finished && !tmp.empty()) ::unlink(tmp.c_str());
  }

  [[noreturn]] void io_fail(std::string_view what, int err) {
    fail(path, ": ", what, " (temporary file ", tmp, "): ", std::strerror(err));
  }

  void raw_write(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
      if (w < 0) {
        if (errno == EINTR) continue;
        io_fail("write failed", errno);
      }
      if (w == 0) io_fail("write wrote nothing", EIO);
      p += w;
      n -= static_cast<size_t>(w);
    }
  }

  void flush() {
    if (buffered) raw_write(buf.data(), buffered);
    buffered = 0;
  }

  void put(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    if (n >= kBufSize / 2) {  // large: bypass the buffer (no copy)
      flush();
      raw_write(p, n);
      return;
    }
    if (buffered + n > buf.size()) flush();
    std::memcpy(buf.data() + buffered, p, n);
    buffered += n;
  }

  void pad_zeros(uint64_t n) {
    static constexpr uint8_t zeros[256] = {};
    while (n > 0) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof zeros));
      put(zeros, k);
      n -= k;
    }
  }

  void check_open(std::string_view op) const {
    if (finished) fail(path, ": ", op, " after finish()");
  }

  void write_header() {
    std::string h;
    h.append("GGUF", 4);
    GGUFCodec::put_u32(h, kGGUFVersion);
    GGUFCodec::put_u64(h, tensors.size());
    GGUFCodec::put_u64(h, kvs.size());
    for (const auto& kv : kvs) {
      GGUFCodec::put_string(h, kv.key);
      GGUFCodec::put_u32(h, static_cast<uint32_t>(kv.value.type()));
      GGUFCodec::put_value(h, kv.value);
    }
    for (const auto& t : tensors) {
      GGUFCodec::put_string(h, t.name);
      GGUFCodec::put_u32(h, static_cast<uint32_t>(t.ne.size()));
      for (int64_t d : t.ne) GGUFCodec::put_u64(h, static_cast<uint64_t>(d));
      GGUFCodec::put_u32(h, static_cast<uint32_t>(t.type));
      GGUFCodec::put_u64(h, t.offset);
    }
    tmp = str(path, ".tmp-", ::getpid());
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int e = errno;
      tmp.clear();  // nothing to remove
      fail(path, ": cannot create temporary file ", str(path, ".tmp-", ::getpid()), ": ", std::strerror(e));
    }
    buf.resize(kBufSize);
    header_written = true;
    put(h.data(), h.size());
    pad_zeros(align_up(h.size(), alignment) - h.size());
    skip_empty_tensors();
  }

  // Zero-byte tensors are complete as soon as they are reached.
  void skip_empty_tensors() {
    while (current < tensors.size() && current_done == tensors[current].nbytes) {
      pad_zeros(align_up(tensors[current].nbytes, alignment) - tensors[current].nbytes);
      ++current;
      current_done = 0;
    }
  }
};

GGUFWriter::GGUFWriter(std::string path) : impl_(std::make_unique<Impl>()) { impl_->path = std::move(path); }

GGUFWriter::~GGUFWriter() = default;

const std::string& GGUFWriter::path() const { return impl_->path; }
uint32_t GGUFWriter::alignment() const { return impl_->alignment; }
const std::vector<GGUFTensorInfo>& GGUFWriter::tensor_infos() const { return impl_->tensors; }

void GGUFWriter::add(const std::string& key, GGUFValue value) {
  Impl& w = *impl_;
  w.check_open("add");
  if (w.header_written) fail(w.path, ": key ", quote(key), ": cannot add metadata after tensor data was written");
  if (w.kv_index.count(key)) fail(w.path, ": duplicate key ", quote(key));
  if (GGUFCodec::nested(value)) fail(w.path, ": key ", quote(key), ": nested arrays are not supported");
  if (key == "general.alignment") {
    const uint32_t a = gguf_detail::checked_alignment(w.path, value);
    if (!w.tensors.empty())
      fail(w.path, ": key 'general.alignment' must be added before the tensor infos");
    w.alignment = a;
  }
  w.kv_index.emplace(key, w.kvs.size());
  w.kvs.push_back({key, std::move(value)});
}

uint64_t GGUFWriter::add_tensor_info(const std::string& name, GGMLType type, std::vector<int64_t> ne) {
  Impl& w = *impl_;
  w.check_open("add_tensor_info");
  const std::string where = str(w.path, ": tensor ", quote(name));
  if (w.header_written) fail(where, ": cannot declare tensors after tensor data was written");
  if (name.empty()) fail(w.path, ": empty tensor name");
  if (name.size() >= kGGMLMaxName)
    fail(where, ": name is ", name.size(), " bytes, llama.cpp requires fewer than ", kGGMLMaxName);
  if (w.tensor_index.count(name)) fail(where, ": duplicate tensor name");
  if (ne.empty() || ne.size() > kGGMLMaxDims) fail(where, ": expected 1..4 dims, found ", ne.size());
  if (!is_valid_ggml_type(static_cast<uint32_t>(type)))
    fail(where, ": unknown ggml type id ", static_cast<uint32_t>(type));
  GGUFTensorInfo ti;
  ti.name = name;
  ti.type = type;
  ti.ne = std::move(ne);
  ti.nbytes = ggml_nbytes(type, ti.ne, str(where, " (", ggml_type_name(type), ")"));
  ti.offset = w.data_size;
  const uint64_t padded = align_up(ti.nbytes, w.alignment);
  if (padded > std::numeric_limits<uint64_t>::max() / 2 - w.data_size) fail(where, ": data section too large");
  w.data_size += padded;
  w.tensor_index.emplace(name, w.tensors.size());
  w.tensors.push_back(std::move(ti));
  return w.tensors.back().nbytes;
}

uint64_t GGUFWriter::add_tensor_info(const std::string& name, DType dtype, const Shape& shape) {
  const auto gt = dtype_to_ggml_type(dtype);
  if (!gt) fail(impl_->path, ": tensor ", quote(name), ": dtype ", dtype_name(dtype), " has no ggml type");
  return add_tensor_info(name, *gt, std::vector<int64_t>(shape.rbegin(), shape.rend()));
}

void GGUFWriter::write_tensor_data(const std::string& name, const void* data, size_t size) {
  Impl& w = *impl_;
  w.check_open("write_tensor_data");
  if (!w.header_written) w.write_header();
  if (size == 0 && w.tensor_index.count(name)) return;  // nothing to append (empty tensors complete themselves)
  if (w.current >= w.tensors.size()) {
    if (w.tensor_index.count(name))
      fail(w.path, ": tensor ", quote(name), ": data written twice (all tensors are already complete)");
    fail(w.path, ": tensor ", quote(name), ": not declared with add_tensor_info");
  }
  const GGUFTensorInfo& t = w.tensors[w.current];
  if (name != t.name) {
    if (!w.tensor_index.count(name)) fail(w.path, ": tensor ", quote(name), ": not declared with add_tensor_info");
    if (w.current_done > 0)
      fail(w.path, ": tensor ", quote(name), ": data written while tensor ", quote(t.name), " is incomplete (",
           w.current_done, " of ", t.nbytes, " bytes written)");
    fail(w.path, ": tensor ", quote(name), ": data written out of order, expected tensor ", quote(t.name),
         " next (tensors are written in declared order)");
  }
  if (size > t.nbytes - w.current_done)
    fail(w.path, ": tensor ", quote(name), ": ", size, " bytes written with ", w.current_done, " of ", t.nbytes,
         " already written: expected at most ", t.nbytes - w.current_done);
  if (size > 0 && data == nullptr) fail(w.path, ": tensor ", quote(name), ": null data pointer");
  w.put(data, size);
  w.current_done += size;
  w.skip_empty_tensors();
}

void GGUFWriter::write_tensor(const std::string& name, const Tensor& t) {
  Impl& w = *impl_;
  auto it = w.tensor_index.find(name);
  if (it == w.tensor_index.end()) fail(w.path, ": tensor ", quote(name), ": not declared with add_tensor_info");
  const GGUFTensorInfo& ti = w.tensors[it->second];
  const auto dt = ggml_type_to_dtype(ti.type);
  if (!dt || *dt != t.dtype)
    fail(w.path, ": tensor ", quote(name), ": declared as ", ggml_type_name(ti.type), ", given a ",
         dtype_name(t.dtype), " tensor");
  if (t.shape != ti.shape())
    fail(w.path, ": tensor ", quote(name), ": declared shape ", shape_str(ti.shape()), ", given ", shape_str(t.shape));
  write_tensor_data(name, t.data, t.nbytes());
}

void GGUFWriter::finish() {
  Impl& w = *impl_;
  w.check_open("finish");
  if (!w.header_written) w.write_header();
  if (w.current < w.tensors.size()) {
    const GGUFTensorInfo& t = w.tensors[w.current];
    fail(w.path, ": finish() with tensor ", quote(t.name), " incomplete (", w.current_done, " of ", t.nbytes,
         " bytes written; ", w.tensors.size() - w.current, " of ", w.tensors.size(), " tensors not complete)");
  }
  w.flush();
  const int fd = w.fd;
  w.fd = -1;
  if (::close(fd) != 0) w.io_fail("close failed", errno);
  if (std::rename(w.tmp.c_str(), w.path.c_str()) != 0) {
    const int e = errno;
    fail(w.path, ": cannot rename from temporary file ", w.tmp, ": ", std::strerror(e));
  }
  w.finished = true;
  w.buf = std::vector<uint8_t>();
}

}  // namespace moetool
