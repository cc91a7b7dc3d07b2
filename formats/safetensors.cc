// formats/safetensors.cc — safetensors reader validation and the streaming shard writer.
#include "formats/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/fs.h"
#include "formats/file_kind.h"

namespace moetool {

namespace {

constexpr uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit

uint64_t read_u64le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// Parses one tensor entry's JSON into `info`; `where` prefixes messages ("<file>: tensor 'x'").
void parse_entry(const nlohmann::json& e, TensorInfo& info, const std::string& where) {
  if (!e.is_object()) fail(where, ": expected a JSON object with dtype, shape, data_offsets");
  auto dt = e.find("dtype");
  if (dt == e.end() || !dt->is_string()) fail(where, ": missing or non-string 'dtype'");
  auto parsed = parse_dtype(dt->get<std::string>());
  if (!parsed)
    fail(where, ": unknown dtype '", dt->get<std::string>(),
         "' (expected one of BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)");
  info.dtype = *parsed;
  auto sh = e.find("shape");
  if (sh == e.end() || !sh->is_array()) fail(where, ": missing or non-array 'shape'");
  if (sh->size() > 16) fail(where, ": shape has ", sh->size(), " dimensions (expected at most 16)");
  info.shape.clear();
  for (const auto& d : *sh) {
    if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
      fail(where, ": shape entries must be non-negative integers, got ", d.dump());
    uint64_t v = d.get<uint64_t>();
    if (v > (uint64_t{1} << 62)) fail(where, ": shape dimension ", v, " is too large");
    info.shape.push_back(static_cast<int64_t>(v));
  }
  auto off = e.find("data_offsets");
  if (off == e.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
      !(*off)[1].is_number_unsigned())
    fail(where, ": 'data_offsets' must be an array of two non-negative integers");
  info.begin = (*off)[0].get<uint64_t>();
  info.end = (*off)[1].get<uint64_t>();
  if (info.end < info.begin) fail(where, ": data_offsets [", info.begin, ", ", info.end, ") end before begin");
  uint64_t n = dtype_size(info.dtype);
  for (int64_t d : info.shape)
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n))
      fail(where, ": shape ", shape_str(info.shape), " overflows the byte size");
  if (info.end - info.begin != n)
    fail(where, ": shape ", shape_str(info.shape), " of ", dtype_name(info.dtype), " needs ", n,
         " bytes but data_offsets [", info.begin, ", ", info.end, ") span ", info.end - info.begin);
}

}  // namespace

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& path) {
  if (const std::string k = file_kind_of_bytes(data, std::min<size_t>(size, 16), size);
      !k.empty() && k != "safetensors" && k != "empty")
    fail(path, ": a ", k, " file (by its first bytes), expected a safetensors file");
  if (size < 8) fail(path, ": truncated safetensors file: ", size, " bytes, expected at least 8 (header length)");
  const uint64_t n = read_u64le(data);
  if (n > kMaxHeader) fail(path, ": header length ", n, " exceeds the 100 MB limit");
  if (n > size - 8) fail(path, ": header length ", n, " runs past the end of the file (", size, " bytes)");
  if (n < 2 || data[8] != '{') fail(path, ": header must be a JSON object starting with '{'");

  // Parse, rejecting duplicate top-level names and deep nesting (hostile input).
  std::set<std::string> seen;
  std::string dup;
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if ((ev == nlohmann::json::parse_event_t::object_start || ev == nlohmann::json::parse_event_t::array_start) &&
        depth > 3)
      throw Error(str(path, ": header JSON nested deeper than a safetensors header can be"));
    if (ev == nlohmann::json::parse_event_t::key && depth == 1) {
      auto k = parsed.get<std::string>();
      if (!seen.insert(k).second && dup.empty()) dup = k;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data + 8, data + 8 + n, cb);
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": header is not valid UTF-8 JSON: ", e.what());
  }
  if (!dup.empty()) fail(path, ": tensor '", dup, "': duplicate name in header");
  if (!j.is_object()) fail(path, ": header must be a JSON object");

  SafetensorsHeader h;
  h.data_start = 8 + n;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it->is_object()) fail(path, ": __metadata__ must be an object of strings");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) fail(path, ": __metadata__ entry '", m.key(), "' must be a string");
        h.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    TensorInfo info;
    info.name = it.key();
    parse_entry(*it, info, str(path, ": tensor '", it.key(), "'"));
    h.tensors.push_back(std::move(info));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  for (const auto& t : h.tensors) {
    if (t.begin != expect)
      fail(path, ": tensor '", t.name, "': data_offsets begin at ", t.begin, ", expected ", expect,
           t.begin > expect ? " (gap between tensors)" : " (overlaps the previous tensor)");
    expect = t.end;
  }
  const uint64_t buffer = size - h.data_start;
  if (expect != buffer)
    fail(path, ": tensor data ends at byte ", expect, " of the buffer but the buffer holds ", buffer,
         " bytes (", expect > buffer ? "file truncated" : "trailing bytes after the last tensor", ")");
  return h;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::shared_ptr<SafetensorsFile>(new SafetensorsFile());
  f->map_ = MappedFile::open(path);
  f->header_ = parse_safetensors(f->map_->data(), f->map_->size(), path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->index_[f->header_.tensors[i].name] = i;
  return f;
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (!info) fail(path(), ": tensor '", name, "' not found");
  return get(*info);
}

Tensor SafetensorsFile::get(const TensorInfo& info) const {
  Tensor t;
  t.dtype = info.dtype;
  t.shape = info.shape;
  t.data = const_cast<uint8_t*>(map_->data()) + header_.data_start + info.begin;
  t.owner = map_;
  return t;
}

// ----------------------------------------------------------------------------------------------
// Writer

struct SafetensorsWriter::Impl {
  struct Shard {
    std::string final_name, tmp_path;
    int fd = -1;
    uint64_t data_start = 0, total = 0;
    std::vector<size_t> specs;  // indices into specs, in file order
  };
  std::string dir;
  std::vector<TensorSpec> specs;
  std::vector<size_t> shard_of;     // per spec
  std::vector<uint64_t> offset_of;  // per spec: absolute file offset of its data
  std::vector<uint64_t> written;  // bytes written per spec
  std::map<std::string, size_t> index;
  std::vector<Shard> shards;
  std::map<std::string, std::string> metadata;
  std::string basename;
  bool finished = false;

  // The index of planned tensor `name` and its byte size; throws for a name that was not planned.
  std::pair<size_t, uint64_t> planned(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) fail(dir, ": tensor '", name, "' was not planned for this checkpoint");
    const TensorSpec& sp = specs[it->second];
    return {it->second, static_cast<uint64_t>(numel(sp.shape)) * dtype_size(sp.dtype)};
  }

  void cleanup() {
    for (auto& s : shards) {
      if (s.fd >= 0) ::close(s.fd);
      s.fd = -1;
      if (!finished) ::unlink(s.tmp_path.c_str());
    }
  }
};

static void pwrite_all(int fd, const void* data, size_t n, uint64_t off, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, std::min<size_t>(n, size_t{1} << 30), static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path, ": write failed: ", std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
}

SafetensorsWriter::SafetensorsWriter(std::string dir, std::vector<TensorSpec> specs,
                                     std::map<std::string, std::string> metadata, uint64_t max_shard_bytes,
                                     std::string basename)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = std::move(dir);
  m.specs = std::move(specs);
  m.metadata = std::move(metadata);
  m.basename = std::move(basename);
  m.metadata.emplace("format", "pt");
  const size_t n = m.specs.size();
  m.shard_of.resize(n);
  m.offset_of.resize(n);
  m.written.assign(n, 0);
  for (size_t i = 0; i < n; ++i) {
    for (int64_t d : m.specs[i].shape)
      check(d >= 0, m.dir, ": tensor '", m.specs[i].name, "': negative dimension in ", shape_str(m.specs[i].shape));
    if (!m.index.emplace(m.specs[i].name, i).second) fail(m.dir, ": tensor '", m.specs[i].name, "' planned twice");
    check(m.specs[i].name != "__metadata__", m.dir, ": '__metadata__' is not a valid tensor name");
  }
  // Assign shards greedily in spec order (as transformers' save_pretrained does).
  std::vector<std::vector<size_t>> groups(1);
  uint64_t cur = 0;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t b = static_cast<uint64_t>(numel(m.specs[i].shape)) * dtype_size(m.specs[i].dtype);
    if (max_shard_bytes && cur > 0 && cur + b > max_shard_bytes) {
      groups.emplace_back();
      cur = 0;
    }
    groups.back().push_back(i);
    cur += b;
  }
  const size_t ns = groups.size();
  for (size_t s = 0; s < ns; ++s) {
    Impl::Shard sh;
    if (ns == 1) {
      sh.final_name = m.basename + ".safetensors";
    } else {
      char buf[64];
      std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", s + 1, ns);
      sh.final_name = m.basename + buf;
    }
    sh.tmp_path = path_join(m.dir, str(".", sh.final_name, ".tmp-", ::getpid()));
    sh.specs = groups[s];
    // Reference layout: descending dtype size (alignment), then name.
    std::stable_sort(sh.specs.begin(), sh.specs.end(), [&](size_t a, size_t b) {
      const size_t sa = dtype_size(m.specs[a].dtype), sb = dtype_size(m.specs[b].dtype);
      return sa != sb ? sa > sb : m.specs[a].name < m.specs[b].name;
    });
    nlohmann::ordered_json h;
    nlohmann::ordered_json md = nlohmann::ordered_json::object();
    for (const auto& [k, v] : m.metadata) md[k] = v;
    h["__metadata__"] = md;
    uint64_t off = 0;
    for (size_t i : sh.specs) {
      const auto& sp = m.specs[i];
      const uint64_t b = static_cast<uint64_t>(numel(sp.shape)) * dtype_size(sp.dtype);
      h[sp.name] = {{"dtype", dtype_name(sp.dtype)}, {"shape", sp.shape}, {"data_offsets", {off, off + b}}};
      m.shard_of[i] = s;
      m.offset_of[i] = off;
      off += b;
    }
    std::string hs = h.dump();
    while ((8 + hs.size()) % 8) hs.push_back(' ');
    sh.data_start = 8 + hs.size();
    sh.total = sh.data_start + off;
    for (size_t i : sh.specs) m.offset_of[i] += sh.data_start;
    m.shards.push_back(std::move(sh));
    auto& S = m.shards.back();
    S.fd = ::open(S.tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (S.fd < 0) {
      m.cleanup();
      fail(S.tmp_path, ": cannot create: ", std::strerror(errno));
    }
    uint8_t len[8];
    const uint64_t hl = hs.size();
    for (int k = 0; k < 8; ++k) len[k] = static_cast<uint8_t>(hl >> (8 * k));
    try {
      pwrite_all(S.fd, len, 8, 0, S.tmp_path);
      pwrite_all(S.fd, hs.data(), hs.size(), 8, S.tmp_path);
      if (::ftruncate(S.fd, static_cast<off_t>(S.total)) != 0)
        fail(S.tmp_path, ": cannot size file to ", S.total, " bytes: ", std::strerror(errno));
    } catch (...) {
      m.cleanup();
      throw;
    }
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (impl_) impl_->cleanup();
}

size_t SafetensorsWriter::num_shards() const { return impl_->shards.size(); }

void SafetensorsWriter::write(const std::string& name, const void* data, size_t nbytes) {
  Impl& m = *impl_;
  const auto [i, b] = m.planned(name);
  if (nbytes != b) fail(m.dir, ": tensor '", name, "': expected ", b, " bytes, got ", nbytes);
  if (m.written[i]) fail(m.dir, ": tensor '", name, "' written twice");
  auto& sh = m.shards[m.shard_of[i]];
  pwrite_all(sh.fd, data, nbytes, m.offset_of[i], sh.tmp_path);
  m.written[i] = b;
}

void SafetensorsWriter::write_chunk(const std::string& name, uint64_t byte_offset, const void* data, size_t nbytes) {
  Impl& m = *impl_;
  const auto [i, b] = m.planned(name);
  if (byte_offset > b || nbytes > b - byte_offset || m.written[i] + nbytes > b)
    fail(m.dir, ": tensor '", name, "': chunk [", byte_offset, ", ", byte_offset + nbytes, ") outside its ", b, " bytes");
  auto& sh = m.shards[m.shard_of[i]];
  pwrite_all(sh.fd, data, nbytes, m.offset_of[i] + byte_offset, sh.tmp_path);
  m.written[i] += nbytes;
}

void SafetensorsWriter::write(const std::string& name, const Tensor& t) {
  Impl& m = *impl_;
  auto it = m.index.find(name);
  if (it == m.index.end()) fail(m.dir, ": tensor '", name, "' was not planned for this checkpoint");
  const auto& sp = m.specs[it->second];
  if (t.shape != sp.shape)
    fail(m.dir, ": tensor '", name, "': expected shape ", shape_str(sp.shape), ", got ", shape_str(t.shape));
  if (t.dtype == sp.dtype) return write(name, t.data, t.nbytes());
  if (!is_float(t.dtype) || !is_float(sp.dtype))
    fail(m.dir, ": tensor '", name, "': cannot convert ", dtype_name(t.dtype), " to ", dtype_name(sp.dtype));
  // Convert in bounded chunks so memory stays small, writing each at its position.
  if (m.written[it->second]) fail(m.dir, ": tensor '", name, "' written twice");
  const size_t n = static_cast<size_t>(t.numel());
  const size_t chunk = size_t{1} << 20;
  std::vector<uint8_t> buf(std::min(n, chunk) * dtype_size(sp.dtype));
  auto& sh = m.shards[m.shard_of[it->second]];
  uint64_t off = m.offset_of[it->second];
  for (size_t s = 0; s < n; s += chunk) {
    const size_t c = std::min(chunk, n - s);
    convert(t.dtype, t.data + s * dtype_size(t.dtype), sp.dtype, buf.data(), c);
    pwrite_all(sh.fd, buf.data(), c * dtype_size(sp.dtype), off, sh.tmp_path);
    off += c * dtype_size(sp.dtype);
  }
  m.written[it->second] = t.numel() * dtype_size(sp.dtype);
}

std::vector<std::string> SafetensorsWriter::finish() {
  Impl& m = *impl_;
  for (size_t i = 0; i < m.specs.size(); ++i) {
    const uint64_t b = static_cast<uint64_t>(numel(m.specs[i].shape)) * dtype_size(m.specs[i].dtype);
    if (m.written[i] != b)
      fail(m.dir, ": tensor '", m.specs[i].name, "' was planned but ", m.written[i] == 0 ? "never written" : "only partly written");
  }
  std::vector<std::string> names;
  for (auto& sh : m.shards) {
    if (::close(sh.fd) != 0) {
      sh.fd = -1;
      fail(sh.tmp_path, ": close failed: ", std::strerror(errno));
    }
    sh.fd = -1;
  }
  if (m.shards.size() > 1) {
    nlohmann::ordered_json idx;
    uint64_t total = 0;
    for (size_t i = 0; i < m.specs.size(); ++i)
      total += static_cast<uint64_t>(numel(m.specs[i].shape)) * dtype_size(m.specs[i].dtype);
    nlohmann::ordered_json md;
    md["total_size"] = total;
    for (const auto& [k, v] : m.metadata)
      if (k != "format") md[k] = v;
    idx["metadata"] = md;
    nlohmann::ordered_json wm = nlohmann::ordered_json::object();
    std::vector<size_t> order(m.specs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return m.specs[a].name < m.specs[b].name; });
    for (size_t i : order) wm[m.specs[i].name] = m.shards[m.shard_of[i]].final_name;
    idx["weight_map"] = wm;
    // Shards first, index last: a reader never finds an index naming a missing shard.
    for (auto& sh : m.shards) {
      if (::rename(sh.tmp_path.c_str(), path_join(m.dir, sh.final_name).c_str()) != 0)
        fail(sh.tmp_path, ": cannot rename into place: ", std::strerror(errno));
      names.push_back(sh.final_name);
    }
    write_file_atomic(path_join(m.dir, m.basename + ".safetensors.index.json"), idx.dump(2) + "\n");
    names.push_back(m.basename + ".safetensors.index.json");
  } else {
    auto& sh = m.shards[0];
    if (::rename(sh.tmp_path.c_str(), path_join(m.dir, sh.final_name).c_str()) != 0)
      fail(sh.tmp_path, ": cannot rename into place: ", std::strerror(errno));
    names.push_back(sh.final_name);
  }
  m.finished = true;
  return names;
}

}  // namespace moetool
