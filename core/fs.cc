// core/fs.cc — file helpers (see fs.h).
#include "core/fs.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "core/error.h"

namespace moetool {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open for reading");
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, ": read error");
  return s;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  const std::string tmp = str(path, ".tmp-", ::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(tmp, ": cannot open for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      fail(tmp, ": write failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail(path, ": cannot rename from temporary file: ", ec.message());
  }
}

void read_file_range(const std::string& path, uint64_t offset, size_t n, void* dst) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, ": cannot open: ", std::strerror(errno));
  for (size_t done = 0; done < n;) {
    const ssize_t r = ::pread(fd, static_cast<uint8_t*>(dst) + done, n - done, static_cast<off_t>(offset + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = errno;
      ::close(fd);
      fail(path, ": cannot read ", n, " bytes at offset ", offset, ": ", r < 0 ? std::strerror(e) : "unexpected end of file");
    }
    done += static_cast<size_t>(r);
  }
  ::close(fd);
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

bool is_directory(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

uint64_t file_size(const std::string& path) {
  std::error_code ec;
  auto n = fs::file_size(path, ec);
  if (ec) fail(path, ": cannot get size: ", ec.message());
  return n;
}

std::string path_join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  return (fs::path(a) / b).string();
}

void check_output_free(const std::string& path, bool overwrite) {
  std::error_code ec;
  if (overwrite || !fs::exists(path, ec)) return;
  const bool empty_dir = fs::is_directory(path, ec) && fs::is_empty(path, ec);
  if (!empty_dir) fail(path, ": output exists and is not an empty directory (use --force to replace it)");
}

OutputDir::OutputDir(std::string final_path, bool overwrite) : final_(std::move(final_path)), overwrite_(overwrite) {
  while (final_.size() > 1 && final_.back() == '/') final_.pop_back();
  std::error_code ec;
  check_output_free(final_, overwrite_);
  staging_ = str(final_, ".tmp-", ::getpid());
  fs::remove_all(staging_, ec);
  fs::create_directories(staging_, ec);
  if (ec) fail(staging_, ": cannot create output directory: ", ec.message());
}

OutputDir::~OutputDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

void OutputDir::commit() {
  std::error_code ec;
  if (fs::exists(final_, ec)) {
    // Move the old output aside first, so a failure in between never loses both.
    const std::string old = str(final_, ".old-", ::getpid());
    fs::rename(final_, old, ec);
    if (ec) fail(final_, ": cannot replace existing output: ", ec.message());
    fs::rename(staging_, final_, ec);
    if (ec) {
      fs::rename(old, final_, ec);
      fail(final_, ": cannot move output into place: ", ec.message());
    }
    fs::remove_all(old, ec);
  } else {
    fs::rename(staging_, final_, ec);
    if (ec) fail(final_, ": cannot move output into place: ", ec.message());
  }
  committed_ = true;
}

}  // namespace moetool

namespace moetool {
uint64_t parse_byte_size(const std::string& s, const std::string& what) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) fail(what, ": expected a size like 5GB, 500MB or 1048576, got '", s, "'");
  double v = 0;
  try {
    v = std::stod(s.substr(0, i));
  } catch (...) {
    fail(what, ": expected a size like 5GB, 500MB or 1048576, got '", s, "'");
  }
  std::string unit = s.substr(i);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mul = 0;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "KB" || unit == "K") mul = 1e3;
  else if (unit == "MB" || unit == "M") mul = 1e6;
  else if (unit == "GB" || unit == "G") mul = 1e9;
  else if (unit == "TB" || unit == "T") mul = 1e12;
  else if (unit == "KIB") mul = 1024.0;
  else if (unit == "MIB") mul = 1024.0 * 1024;
  else if (unit == "GIB") mul = 1024.0 * 1024 * 1024;
  else if (unit == "TIB") mul = 1024.0 * 1024 * 1024 * 1024;
  else fail(what, ": unknown size unit '", s.substr(i), "' in '", s, "' (expected B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
  return static_cast<uint64_t>(v * mul);
}
}  // namespace moetool
