// formats/npy.cc — .npy reading and writing (see npy.h).
#include "formats/npy.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <regex>

#include "core/error.h"
#include "core/fs.h"

namespace moetool {

namespace {
// The .npy header of a float32 array of `shape`; n gets its element count.
std::string npy_header(const std::vector<int64_t>& shape, size_t& n) {
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dict += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    n *= static_cast<size_t>(shape[i]);
  }
  dict += "), }";
  // Header (magic 6 + version 2 + len 2 + dict + padding + '\n') is a multiple of 64 bytes.
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  const uint16_t hl = static_cast<uint16_t>(dict.size());
  out += static_cast<char>(hl & 0xff);
  out += static_cast<char>(hl >> 8);
  out += dict;
  return out;
}
}  // namespace

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  size_t n = 0;
  std::string out = npy_header(shape, n);
  out.append(reinterpret_cast<const char*>(data), n * sizeof(float));
  write_file_atomic(path, out);
}

NpyF32Writer::NpyF32Writer(std::string path, std::vector<int64_t> shape)
    : path_(std::move(path)), tmp_(str(path_, ".tmp-", ::getpid())) {
  size_t n = 0;
  const std::string h = npy_header(shape, n);
  want_ = n;
  f_ = std::fopen(tmp_.c_str(), "wb");
  if (!f_) fail(tmp_, ": cannot open for writing");
  if (std::fwrite(h.data(), 1, h.size(), f_) != h.size()) fail(tmp_, ": write failed (disk full?)");
}

NpyF32Writer::~NpyF32Writer() {
  if (!f_) return;
  std::fclose(f_);
  std::remove(tmp_.c_str());
}

void NpyF32Writer::append(const float* data, size_t n) {
  if (!f_) fail(path_, ": .npy already finished");
  if (std::fwrite(data, sizeof(float), n, f_) != n) fail(tmp_, ": write failed (disk full?)");
  have_ += n;
}

void NpyF32Writer::finish() {
  if (have_ != want_) fail(path_, ": wrote ", have_, " values, the shape holds ", want_);
  const bool ok = std::fclose(f_) == 0;
  f_ = nullptr;
  if (!ok || std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    std::remove(tmp_.c_str());
    fail(path_, ": cannot write or rename from ", tmp_);
  }
}

std::vector<float> read_npy_f32(const std::string& path, std::vector<int64_t>& shape) {
  const std::string s = read_file(path);
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0) fail(path, ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(s[6]);
  size_t hl, off;
  if (major == 1) {
    hl = static_cast<unsigned char>(s[8]) | (static_cast<size_t>(static_cast<unsigned char>(s[9])) << 8);
    off = 10;
  } else if (major == 2 || major == 3) {
    if (s.size() < 12) fail(path, ": truncated .npy header");
    hl = 0;
    for (int i = 0; i < 4; ++i) hl |= static_cast<size_t>(static_cast<unsigned char>(s[8 + i])) << (8 * i);
    off = 12;
  } else {
    fail(path, ": unsupported .npy version ", major);
  }
  if (off + hl > s.size()) fail(path, ": truncated .npy header");
  const std::string h = s.substr(off, hl);
  std::smatch m;
  if (!std::regex_search(h, m, std::regex("'descr':\\s*'([<|=]?)(f4|f8)'")))
    fail(path, ": expected a little-endian float32 or float64 array, header says ", h);
  const bool f64 = m[2] == "f8";
  if (h.find("'fortran_order': True") != std::string::npos) fail(path, ": Fortran-order arrays are not supported");
  if (!std::regex_search(h, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) fail(path, ": no shape in .npy header");
  shape.clear();
  const std::string dims = m[1];
  std::regex num("\\d+");
  size_t n = 1;
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), num); it != std::sregex_iterator(); ++it) {
    shape.push_back(std::stoll(it->str()));
    n *= static_cast<size_t>(shape.back());
  }
  const size_t es = f64 ? 8 : 4;
  if (s.size() - off - hl != n * es)
    fail(path, ": expected ", n * es, " data bytes for shape, found ", s.size() - off - hl);
  std::vector<float> out(n);
  const char* p = s.data() + off + hl;
  if (f64) {
    for (size_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, p + 8 * i, 8);
      out[i] = static_cast<float>(d);
    }
  } else {
    std::memcpy(out.data(), p, n * 4);
  }
  return out;
}

}  // namespace moetool
